//! The fleet: hosts, VMs and migrations in memory, fed by the host workers, read by the
//! handlers, published to the hub and written to the database.

mod act;
mod measure;
mod record;
mod start;
mod state;
pub(crate) mod tenant;

use std::sync::{Arc, RwLock, RwLockReadGuard};

use converge_api::{LiveEvent, Migration};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use act::{Act, ActError, ActKind, Executor};
pub use measure::measure_dirty_rates;
pub use start::{StartError, StartRequest};
pub use state::{
    Ceiling, Change, FRESH_DIRTY_RATE_MS, FleetState, HistoryWrite, HostMemory, LeverTarget,
    Refusal, StartPlan, new_id,
};

use crate::clock::Clock;
use crate::hub::{Audience, Hub};
use crate::hypervisor::Report;
use crate::store::{self, Store};

/// Who the audit log and a migration's actions name for what the policy does.
pub const POLICY_ACTOR: &str = "policy";

/// Shared access to the fleet, plus where its changes go.
#[derive(Debug, Clone)]
pub struct Fleet {
    state: Arc<RwLock<FleetState>>,
    hub: Arc<Hub>,
    persist: mpsc::UnboundedSender<Persist>,
    acts: mpsc::UnboundedSender<Act>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// A write for the persistence task.
// Short-lived and moved once; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Persist {
    /// A write; `done` is answered once it is on disk.
    Write {
        write: HistoryWrite,
        done: Option<oneshot::Sender<Result<(), store::Error>>>,
    },
    /// Answered once every write queued before it is done.
    Flush(oneshot::Sender<()>),
    /// The last job: the writer ends once everything before it is written.
    Close,
}

/// The fleet's two queues, for the tasks that work them off (see `background.rs`).
#[derive(Debug)]
pub struct Queues {
    /// History writes, for [`write_history`].
    pub history: HistoryQueue,
    /// Actions the policy decided, for [`Executor::run`].
    pub acts: mpsc::UnboundedReceiver<Act>,
}

/// The queue of history writes (what to write is the fleet's business).
#[derive(Debug)]
pub struct HistoryQueue(mpsc::UnboundedReceiver<Persist>);

impl Fleet {
    /// Builds the fleet; its queues are worked off by whoever owns the background work.
    pub fn new(state: FleetState, hub: Arc<Hub>, clock: Arc<dyn Clock>) -> (Self, Queues) {
        let (persist, history) = mpsc::unbounded_channel::<Persist>();
        let (acts, act_queue) = mpsc::unbounded_channel();
        let fleet = Self {
            state: Arc::new(RwLock::new(state)),
            hub,
            persist,
            acts,
            clock,
        };
        let queues = Queues {
            history: HistoryQueue(history),
            acts: act_queue,
        };
        (fleet, queues)
    }

    /// Reads the fleet. Keep the guard short; never hold it across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, FleetState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the fleet and publishes what changed, under one lock so that viewers see
    /// changes in the order they were made. Returns the migrations to persist.
    pub fn update<T>(&self, change: impl FnOnce(&mut FleetState, i64) -> T) -> T
    where
        T: Changes,
    {
        let now_ms = crate::clock::unix_ms_now(&*self.clock);
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = change(&mut state, now_ms);
        for change in result.changes() {
            let job = match change {
                Change::Publish(event) => {
                    self.hub.publish(Audience::Fleet, event);
                    for (project, view) in tenant::events_for(&state, event) {
                        if state.tenant_view_changed(&view) {
                            self.hub
                                .publish(Audience::Project(project), &LiveEvent::Tenant(view));
                        }
                    }
                    continue;
                }
                Change::Act(act) => {
                    let _ = self.acts.send(act.clone());
                    continue;
                }
                Change::Persist(write) => Persist::Write {
                    write: write.clone(),
                    done: None,
                },
            };
            if self.persist.send(job).is_err() {
                tracing::warn!("a history write came after shutdown closed the history");
            }
        }
        result
    }

    /// Changes the fleet without anything to publish (e.g. flagging an abort request).
    pub fn modify<T>(&self, change: impl FnOnce(&mut FleetState) -> T) -> T {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut state)
    }

    /// Writes a migration now and waits until it is on disk (an action is recorded
    /// before it is reported done).
    pub async fn persist_now(&self, migration: Migration) -> Result<(), store::Error> {
        let (done, wait) = oneshot::channel();
        let _ = self.persist.send(Persist::Write {
            write: HistoryWrite::Migration(migration),
            done: Some(done),
        });
        wait.await.unwrap_or(Err(store::Error::PoolClosed))
    }

    /// Waits until every write queued so far is on disk (at shutdown: nothing published
    /// is lost). Writes are done in order, so this is a marker at the end of the queue.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.persist.send(Persist::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Ends the history: writes queued so far land, later ones are refused (at
    /// shutdown, after everything that could change the fleet has stopped).
    pub fn close_history(&self) {
        let _ = self.persist.send(Persist::Close);
    }

    /// Applies host reports until `stop` is cancelled, then the ones already queued.
    pub async fn run(self, reports: mpsc::UnboundedReceiver<Report>, stop: CancellationToken) {
        self.run_with(reports, stop, FleetState::apply).await;
    }

    /// [`Self::run`] with the function that applies a report (tests inject a faulty one).
    ///
    /// A panic while applying one report is caught, logged, and noted on the migration
    /// it was about; the loop carries on with the next. Without this, one bad reading
    /// would end the task: every later report would be dropped, and the API would keep
    /// serving a fleet frozen at that moment, with nothing to say so. (The state's lock
    /// is not poisoned for the readers: every lock here ignores poisoning.)
    pub async fn run_with(
        self,
        mut reports: mpsc::UnboundedReceiver<Report>,
        stop: CancellationToken,
        apply: impl Fn(&mut FleetState, Report, i64) -> Vec<Change>,
    ) {
        loop {
            let report = tokio::select! {
                biased;
                report = reports.recv() => match report {
                    Some(report) => report,
                    None => return,
                },
                () = stop.cancelled() => break,
            };
            self.apply_guarded(report, &apply);
        }
        // What the workers sent before they stopped still counts.
        while let Ok(report) = reports.try_recv() {
            self.apply_guarded(report, &apply);
        }
    }

    fn apply_guarded(
        &self,
        report: Report,
        apply: &impl Fn(&mut FleetState, Report, i64) -> Vec<Change>,
    ) {
        let vm_uuid = report.vm_uuid().map(str::to_owned);
        let kind = report_kind(&report);
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.update(|state, now_ms| apply(state, report, now_ms));
        }));
        if let Err(panic) = applied {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(report = kind, vm = vm_uuid.as_deref().unwrap_or("-"), panic = %message, "a host report could not be applied; carrying on");
            if let Some(vm_uuid) = vm_uuid {
                let noted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.update(|state, now_ms| state.report_failed(&vm_uuid, now_ms));
                }));
                if noted.is_err() {
                    tracing::error!(vm = %vm_uuid, "could not note the failed report either");
                }
            }
        }
    }
}

/// The report's kind, for the log.
fn report_kind(report: &Report) -> &'static str {
    match report {
        Report::Connection(_) => "connection",
        Report::Domains { .. } => "domains",
        Report::Sample(_) => "sample",
        Report::JobEnded(_) => "job_ended",
        Report::JobCompleted { .. } => "job_completed",
        Report::Lifecycle { .. } => "lifecycle",
        Report::MigrateReturned(_) => "migrate_returned",
        Report::Health(_) => "health",
        Report::Memory { .. } => "memory",
    }
}

/// Writes the history in the order the changes were made, so a migration's last state on
/// disk is its last state. Ends at [`Fleet::close_history`], once everything queued
/// before it is written.
pub async fn write_history(queue: HistoryQueue, store: Store) {
    let HistoryQueue(mut queue) = queue;
    while let Some(job) = queue.recv().await {
        let (write, done) = match job {
            Persist::Write { write, done } => (write, done),
            Persist::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Persist::Close => break,
        };
        let result = match &write {
            HistoryWrite::Migration(migration) => store.save_migration(migration).await,
            HistoryWrite::Sample {
                migration_id,
                sample,
            } => store.save_sample(migration_id, sample).await,
            HistoryWrite::Iteration { migration_id, mark } => {
                store.save_iteration(migration_id, mark).await
            }
            HistoryWrite::Thin { migration_id } => store.thin_samples(migration_id).await,
        };
        if let Err(err) = &result {
            tracing::error!(migration = %write.migration_id(), error = %err, "cannot save migration history");
        }
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }
}

/// Anything a fleet change returns that carries changes to publish and persist.
pub trait Changes {
    /// The changes.
    fn changes(&self) -> &[Change];
}

impl Changes for Vec<Change> {
    fn changes(&self) -> &[Change] {
        self
    }
}

impl<T> Changes for Result<Vec<Change>, T> {
    fn changes(&self) -> &[Change] {
        self.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests;
