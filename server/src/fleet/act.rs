//! Carrying out actions on running migrations — an operator's lever or abort, or what the
//! deadline policy decided — with an audit row written before each is attempted.

use std::sync::Arc;

use converge_api::{ActionRecord, LeverChange};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Fleet, Refusal};
use crate::clock::unix_ms_now;
use crate::hypervisor::{HostError, Hypervisors};
use crate::store::{self, NewEntry, Store};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    /// Move a lever.
    Lever(LeverChange),
    /// Abort the migration.
    Abort,
    /// Pause the guest (forces the last pass to complete).
    Pause,
    /// Resume the guest.
    Resume,
}

impl ActKind {
    /// The audit log's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ActKind::Lever(LeverChange::DowntimeLimit { .. }) => "downtime_limit",
            ActKind::Lever(LeverChange::Bandwidth { .. }) => "bandwidth",
            ActKind::Lever(LeverChange::XbzrleCache { .. }) => "xbzrle_cache",
            ActKind::Lever(LeverChange::PostCopy) => "post_copy",
            ActKind::Abort => "abort",
            ActKind::Pause => "pause",
            ActKind::Resume => "resume",
        }
    }

    /// In words.
    pub fn describe(self) -> String {
        match self {
            ActKind::Lever(LeverChange::DowntimeLimit { ms }) => {
                format!("set the downtime limit to {ms} ms")
            }
            ActKind::Lever(LeverChange::Bandwidth { mib_s }) => {
                format!("set the bandwidth limit to {mib_s} MiB/s")
            }
            ActKind::Lever(LeverChange::XbzrleCache { bytes }) => {
                format!("resize the xbzrle cache to {} MiB", bytes >> 20)
            }
            ActKind::Lever(LeverChange::PostCopy) => "switch to post-copy".into(),
            ActKind::Abort => "abort the migration".into(),
            ActKind::Pause => "pause the guest to force switchover".into(),
            ActKind::Resume => "resume the guest".into(),
        }
    }
}

/// An action on one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// The migration.
    pub migration_id: String,
    /// Its VM's UUID.
    pub vm_uuid: String,
    /// Its VM's name (for the log).
    pub vm_name: String,
    /// The host to act on (the source, or the destination for a resume).
    pub host: String,
    /// What.
    pub kind: ActKind,
    /// The user, or `policy`.
    pub actor: String,
    /// The user's address.
    pub client_addr: Option<String>,
    /// Why, in words.
    pub reason: String,
}

impl Act {
    /// What the policy decided to do to migration `m` (on its source), and why.
    pub fn by_policy(m: &converge_api::Migration, kind: ActKind, reason: String) -> Self {
        Self {
            migration_id: m.id.clone(),
            vm_uuid: m.vm_uuid.clone(),
            vm_name: m.vm_name.clone(),
            host: m.source.clone(),
            kind,
            actor: super::POLICY_ACTOR.into(),
            client_addr: None,
            reason,
        }
    }
}

/// Carries out starts and actions; cheap to clone.
///
/// Each runs on a task of its own, tracked here: once begun it runs to its end whatever
/// happens to the caller (a client that drops its connection mid-request leaves no record
/// in `starting` and no audit row pending), and shutdown waits for the ones under way.
#[derive(Debug, Clone)]
pub struct Executor {
    pub(super) fleet: Fleet,
    pub(super) hypervisors: Arc<Hypervisors>,
    pub(super) store: Store,
    tasks: TaskTracker,
}

/// Why an action was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Its audit row could not be written, so it was not attempted.
    #[error("could not record the action, so it was not done: {0}")]
    NotRecorded(store::Error),
    /// The fleet refused it (e.g. the migration is already over).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The host did not do it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Converge failed while doing it (logged).
    #[error("an internal error while carrying out the action")]
    Internal,
}

impl Executor {
    /// The executor over these parts.
    pub fn new(fleet: Fleet, hypervisors: Arc<Hypervisors>, store: Store) -> Self {
        Self {
            fleet,
            hypervisors,
            store,
            tasks: TaskTracker::new(),
        }
    }

    /// The hosts.
    pub fn hypervisors(&self) -> &Arc<Hypervisors> {
        &self.hypervisors
    }

    /// Carries out actions the fleet queued (the policy's), each on its own task, until
    /// `stop` is cancelled. Actions still queued at the stop are not begun (the hosts are
    /// going away); they are logged. [`Self::finish`] waits for the ones under way.
    pub async fn run(self, mut queue: mpsc::UnboundedReceiver<Act>, stop: CancellationToken) {
        loop {
            tokio::select! {
                act = queue.recv() => {
                    let Some(act) = act else { break };
                    let executor = self.clone();
                    self.tasks.spawn(async move {
                        let _ = executor.execute_here(act).await;
                    });
                }
                () = stop.cancelled() => break,
            }
        }
        queue.close();
        while let Ok(act) = queue.try_recv() {
            tracing::warn!(migration = %act.migration_id, action = act.kind.name(), "not begun: the server is stopping");
        }
    }

    /// Takes no more work and waits for the starts and actions under way (at shutdown).
    pub async fn finish(&self) {
        self.tasks.close();
        if !self.tasks.is_empty() {
            tracing::info!(
                under_way = self.tasks.len(),
                "waiting for actions under way"
            );
        }
        self.tasks.wait().await;
    }

    /// Runs `work` to its end on a tracked task of its own, whatever becomes of the
    /// caller; `None` if it panicked (logged).
    pub(super) async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        match self.tasks.spawn(work).await {
            Ok(done) => Some(done),
            Err(err) => {
                tracing::error!(error = %err, "a start or action task failed");
                None
            }
        }
    }

    /// Writes the audit row, carries the action out, completes the row and records the
    /// outcome on the migration. Returns libvirt's read-back value for a lever. If the
    /// audit row cannot be written, nothing is done. Runs to its end even if the caller
    /// goes away.
    pub async fn execute(&self, act: Act) -> Result<Option<u64>, ActError> {
        let executor = self.clone();
        self.detached(async move { executor.execute_here(act).await })
            .await
            .unwrap_or(Err(ActError::Internal))
    }

    async fn execute_here(&self, act: Act) -> Result<Option<u64>, ActError> {
        let entry = NewEntry {
            actor: act.actor.clone(),
            client_addr: act.client_addr.clone(),
            action: act.kind.name().into(),
            vm: Some(act.vm_name.clone()),
            migration_id: Some(act.migration_id.clone()),
            details: format!("{} — {}", act.kind.describe(), act.reason),
        };
        let now = unix_ms_now(&*self.fleet.clock);
        let audit_id = self
            .store
            .audit_begin(now, &entry)
            .await
            .map_err(ActError::NotRecorded)?;
        let result = self.carry_out(&act).await;
        let text = match &result {
            Ok(Some(value)) => format!("ok (libvirt now reports {value})"),
            Ok(None) => "ok".to_owned(),
            Err(err) => format!("failed: {err}"),
        };
        if let Err(err) = self.store.audit_finish(audit_id, &text).await {
            tracing::error!(audit_id, error = %err, "cannot complete an audit entry");
        }
        tracing::info!(
            migration = %act.migration_id, vm = %act.vm_name, actor = %act.actor,
            action = act.kind.name(), result = %text, "migration action"
        );
        let record = ActionRecord {
            at_ms: unix_ms_now(&*self.fleet.clock),
            actor: act.actor.clone(),
            what: act.kind.describe(),
            reason: act.reason.clone(),
            result: text,
        };
        let succeeded = result.as_ref().ok().copied();
        self.fleet
            .update(|fleet, _| fleet.record_action(&act.migration_id, record, act.kind, succeeded));
        result
    }

    async fn carry_out(&self, act: &Act) -> Result<Option<u64>, ActError> {
        let host = self
            .hypervisors
            .get(&act.host)
            .ok_or_else(|| HostError::Unknown {
                host: act.host.clone(),
            })?;
        let uuid = act.vm_uuid.clone();
        self.fleet
            .modify(|fleet| fleet.note_request(&act.migration_id, act.kind));
        let done = match act.kind {
            ActKind::Lever(change) => host.lever(uuid, change).await,
            ActKind::Abort => {
                self.fleet
                    .modify(|fleet| fleet.request_abort(&act.migration_id))?;
                host.abort(uuid).await.map(|()| None)
            }
            ActKind::Pause => host.pause(uuid, true).await.map(|()| None),
            ActKind::Resume => host.pause(uuid, false).await.map(|()| None),
        };
        Ok(done?)
    }
}
