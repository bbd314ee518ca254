//! Host drains: emptying hosts for maintenance. A drain is planned before anything moves
//! (`plan`: each VM's outlook from its measured dirty rate, its destination without
//! overcommitting one, the order, the predicted time), then run step by step (`step`:
//! within its limits, applying the forecast's advice, aborting what will not converge
//! before it wastes the window and retrying it when the guest is quieter), and kept in
//! the database at every change so that a restarted server continues it. While a drain
//! runs its hosts are *draining*: nothing moves into them.
//!
//! [`Drains`] is the service the HTTP edge calls and the background task that runs them.

mod check;
pub mod plan;
mod run;
pub mod step;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use converge_api::{Drain, DrainRequest, DrainState, DrainUpdate, ItemAction, LiveEvent, Preset};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use self::step::Command;
use crate::clock::unix_ms_now;
use crate::config::HostConfig;
use crate::fleet::{Change, Executor, Fleet};
use crate::store::{self, NewEntry, Store};

const MIB: u64 = 1 << 20;
/// Past drains listed.
const LIST_LIMIT: i64 = 50;
/// Who the audit log names for what a drain does by itself.
pub const DRAIN_ACTOR: &str = "drain";

/// Why a drain request was not carried out; each says why in words.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The request's values cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// No such drain, or no such VM in it.
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with what is happening (a host already draining, a drain over).
    #[error("{0}")]
    Conflict(String),
    /// The drain or its audit row could not be written, so nothing was done.
    #[error("could not record the drain: {0}")]
    NotRecorded(store::Error),
}

/// Pause, resume or cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// No new migrations start; those running finish.
    Pause,
    /// Go on.
    Resume,
    /// Abort the running migrations; every VM stays where it is then.
    Cancel,
}

impl Control {
    fn target(self) -> DrainState {
        match self {
            Control::Pause => DrainState::Paused,
            Control::Resume => DrainState::Running,
            Control::Cancel => DrainState::Cancelling,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Control::Pause => "drain_pause",
            Control::Resume => "drain_resume",
            Control::Cancel => "drain_cancel",
        }
    }
}

/// Who asks, for the audit log.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The user.
    pub username: String,
    /// From where.
    pub client_addr: IpAddr,
}

/// The drains: planning, starting and steering them, and the task that runs them.
#[derive(Debug, Clone)]
pub struct Drains {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Drains that are not over, by id.
    active: Mutex<BTreeMap<String, Drain>>,
    /// Hosts of drains being created (not yet on disk).
    claimed: Mutex<HashSet<String>>,
    fleet: Fleet,
    executor: Executor,
    store: Store,
    hosts: Vec<HostConfig>,
    presets: Vec<Preset>,
    default_preset: String,
    wake: Notify,
    /// The commands under way (a start takes seconds); shutdown waits for them.
    tasks: TaskTracker,
}

impl Drains {
    /// Takes back the drains that were running when the server last stopped (their hosts
    /// are draining again at once).
    pub async fn open(
        fleet: Fleet,
        executor: Executor,
        store: Store,
        hosts: Vec<HostConfig>,
        presets: Vec<Preset>,
        default_preset: String,
    ) -> Result<Self, store::Error> {
        let unfinished = store.active_drains().await?;
        for drain in &unfinished {
            tracing::info!(drain = %drain.id, hosts = ?drain.hosts, "continuing a drain");
            fleet.update(|f, _| f.set_draining(&drain.hosts, Some(&drain.id)));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                active: Mutex::new(unfinished.into_iter().map(|d| (d.id.clone(), d)).collect()),
                claimed: Mutex::new(HashSet::new()),
                fleet,
                executor,
                store,
                hosts,
                presets,
                default_preset,
                wake: Notify::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// Drains that run now, then past ones, newest first.
    pub async fn list(&self) -> Result<Vec<Drain>, store::Error> {
        let mut all: Vec<Drain> = self.lock().values().rev().cloned().collect();
        let known: HashSet<String> = all.iter().map(|d| d.id.clone()).collect();
        let past = self.inner.store.drains(LIST_LIMIT).await?;
        all.extend(past.into_iter().filter(|d| !known.contains(&d.id)));
        Ok(all)
    }

    /// One drain.
    pub async fn get(&self, id: &str) -> Result<Option<Drain>, store::Error> {
        if let Some(d) = self.lock().get(id) {
            return Ok(Some(d.clone()));
        }
        self.inner.store.drain(id).await
    }

    /// Drains that are not over (for the metrics).
    pub fn active(&self) -> Vec<Drain> {
        self.lock().values().cloned().collect()
    }

    /// Plans a drain as `request` asks, and unless it is a dry run starts it: the plan is
    /// written to the database and the audit log before its hosts are marked draining.
    pub async fn create(&self, request: DrainRequest, by: &Requester) -> Result<Drain, DrainError> {
        let mut drain = self.plan(&request).await?;
        if request.dry_run {
            return Ok(drain);
        }
        drain.id = new_drain_id();
        drain.created_by = by.username.clone();
        let entry =
            NewEntry::request(&by.username, by.client_addr, "drain_start").with_details(format!(
                "drain {}: empty {} into {}; {} VMs; window {} min; preset {}",
                drain.id,
                drain.hosts.join(", "),
                drain.destinations.join(", "),
                drain.items.len(),
                (drain.deadline_ms - drain.created_at_ms) / 60_000,
                drain.preset
            ));
        let now = self.now_ms();
        let audit_id = self
            .inner
            .store
            .audit_begin(now, &entry)
            .await
            .map_err(DrainError::NotRecorded)?;
        let finish = |result: String| async move {
            if let Err(err) = self.inner.store.audit_finish(audit_id, &result).await {
                tracing::error!(audit_id, error = %err, "cannot complete an audit entry");
            }
        };
        // Two requests for one host at once: the first to get here holds it. It is held
        // (in `claimed`) until it is on disk and among the drains that run.
        let clash = {
            let active = self.lock();
            let mut claimed = self.claims();
            let taken = active
                .values()
                .flat_map(|d| d.hosts.iter())
                .chain(claimed.iter())
                .find(|h| drain.hosts.contains(h))
                .cloned();
            if taken.is_none() {
                claimed.extend(drain.hosts.iter().cloned());
            }
            taken
        };
        if let Some(host) = clash {
            let err = DrainError::Conflict(format!("host {host} is already being drained"));
            finish(format!("refused: {err}")).await;
            return Err(err);
        }
        let saved = self.inner.store.save_drain(&drain).await;
        {
            let mut claimed = self.claims();
            claimed.retain(|h| !drain.hosts.contains(h));
            if saved.is_ok() {
                self.lock().insert(drain.id.clone(), drain.clone());
            }
        }
        if let Err(err) = saved {
            finish("failed: the drain could not be written".into()).await;
            return Err(DrainError::NotRecorded(err));
        }
        finish("ok".into()).await;
        let (hosts, id) = (drain.hosts.clone(), drain.id.clone());
        self.inner
            .fleet
            .update(|f, _| f.set_draining(&hosts, Some(&id)));
        self.publish(&drain);
        tracing::info!(drain = %drain.id, hosts = ?drain.hosts, vms = drain.items.len(), user = %by.username, "drain started");
        self.inner.wake.notify_one();
        Ok(drain)
    }

    /// Pauses, resumes or cancels drain `id`; audited whether or not it is allowed.
    pub async fn control(
        &self,
        id: &str,
        control: Control,
        by: &Requester,
    ) -> Result<Drain, DrainError> {
        let entry = NewEntry::request(&by.username, by.client_addr, control.name())
            .with_details(format!("drain {id}"));
        let (drain, _) = self
            .audited(
                &entry,
                |d, now| step::control(d, control.target(), now).map(|()| Vec::new()),
                id,
            )
            .await?;
        self.inner.wake.notify_one();
        Ok(drain)
    }

    /// Skips a VM of drain `id` or moves it to the front; audited.
    pub async fn item(
        &self,
        id: &str,
        vm_uuid: &str,
        action: ItemAction,
        by: &Requester,
    ) -> Result<Drain, DrainError> {
        let name = match action {
            ItemAction::Skip => "drain_skip",
            ItemAction::Forward => "drain_forward",
        };
        let vm_name = self
            .lock()
            .get(id)
            .and_then(|d| d.items.iter().find(|i| i.vm_uuid == vm_uuid))
            .map(|i| i.vm_name.clone());
        let mut entry = NewEntry::request(&by.username, by.client_addr, name)
            .with_details(format!("drain {id}, VM {vm_uuid}"));
        entry.vm = vm_name;
        let (drain, commands) = self
            .audited(
                &entry,
                |d, now| match action {
                    ItemAction::Skip => step::skip(d, vm_uuid, now),
                    ItemAction::Forward => step::forward(d, vm_uuid).map(|()| Vec::new()),
                },
                id,
            )
            .await?;
        self.carry_out(&drain, commands);
        self.inner.wake.notify_one();
        Ok(drain)
    }

    /// Applies `f` to active drain `id`; the drain after, and the commands `f` gave.
    fn change(
        &self,
        id: &str,
        f: impl FnOnce(&mut Drain) -> Result<Vec<Command>, String>,
    ) -> Result<(Drain, Vec<Command>), DrainError> {
        let mut active = self.lock();
        let Some(drain) = active.get_mut(id) else {
            return Err(DrainError::NotFound(format!(
                "no running drain with id {id} (it may be over: GET /api/drains/{id} shows it)"
            )));
        };
        let commands = f(drain).map_err(DrainError::Conflict)?;
        Ok((drain.clone(), commands))
    }

    /// Audits a request with its outcome, and saves and publishes the drain it changed;
    /// an audit row that cannot be written fails the request (the change stays: it was
    /// made in memory and is saved with the drain).
    /// Applies `f` to active drain `id` as a request: its audit row is written first
    /// (nothing changes if it cannot be), completed with the outcome, refusals too; the
    /// drain it changed is saved and published.
    async fn audited(
        &self,
        entry: &NewEntry,
        f: impl FnOnce(&mut Drain, i64) -> Result<Vec<Command>, String>,
        id: &str,
    ) -> Result<(Drain, Vec<Command>), DrainError> {
        let now = self.now_ms();
        let audit_id = self
            .inner
            .store
            .audit_begin(now, entry)
            .await
            .map_err(DrainError::NotRecorded)?;
        let changed = self.change(id, |d| f(d, now));
        let result = match &changed {
            Ok(_) => "ok".to_owned(),
            Err(err) => format!("refused: {err}"),
        };
        if let Err(err) = self.inner.store.audit_finish(audit_id, &result).await {
            tracing::error!(audit_id, error = %err, "cannot complete an audit entry");
        }
        if let Ok((drain, _)) = &changed {
            self.save(drain).await;
            self.publish(drain);
        }
        changed
    }

    async fn save(&self, drain: &Drain) {
        if let Err(err) = self.inner.store.save_drain(drain).await {
            tracing::error!(drain = %drain.id, error = %err, "cannot save a drain");
        }
    }

    fn publish(&self, drain: &Drain) {
        let event = LiveEvent::Drain(DrainUpdate {
            drain: drain.clone(),
        });
        self.inner.fleet.update(|_, _| vec![Change::Publish(event)]);
    }

    fn clear_notices(&self) {
        self.inner
            .fleet
            .update(|f, _| f.set_scheduled(HashMap::new()));
        self.inner
            .fleet
            .modify(|f| f.set_measure_soon(HashSet::new()));
    }

    fn now_ms(&self) -> i64 {
        unix_ms_now(&*self.inner.fleet.clock)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Drain>> {
        self.inner
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A new drain id: `d` and 15 hex digits (as migrations' `m…`).
fn new_drain_id() -> String {
    let id = crate::fleet::new_id();
    format!("d{}", id.trim_start_matches('m'))
}
