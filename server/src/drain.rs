//! Host drains: emptying hosts for maintenance. A drain is planned before anything moves
//! (`plan`: each VM's outlook from its measured dirty rate, its destination without
//! overcommitting one, the order, the predicted time), then run step by step (`step`:
//! within its limits, applying the forecast's advice, aborting what will not converge
//! before it wastes the window and retrying it when the guest is quieter), and kept in
//! the database at every change so that a restarted server continues it. While a drain
//! runs its hosts are *draining*: nothing moves into them.
//!
//! [`Drains`] is the service the HTTP edge calls and the background task that runs them.

pub mod plan;
pub mod step;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_api::{
    Drain, DrainLimits, DrainPolicy, DrainRequest, DrainState, DrainUpdate, ItemAction, ItemState,
    LiveEvent, MAX_BANDWIDTH_MIB_S, Migration, MigrationState, Preset, VmState,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::plan::{HostFacts, PastMoves, PlanInput, VmFacts};
use self::step::{Command, MigrationView, Snapshot, VmView};
use crate::clock::unix_ms_now;
use crate::config::HostConfig;
use crate::fleet::{Act, ActKind, Change, Executor, Fleet, FleetState, StartError, StartRequest};
use crate::store::{self, NewEntry, Store};

const MIB: u64 = 1 << 20;
/// How often running drains are stepped (and at once after a change).
const STEP_EVERY: Duration = Duration::from_secs(1);
/// The window when the request gives none, minutes.
const DEFAULT_WINDOW_MIN: u64 = 60;
/// The longest window, minutes (a week).
const MAX_WINDOW_MIN: u64 = 7 * 24 * 60;
/// Most migrations a limit may allow at once.
const MAX_CONCURRENCY: u32 = 64;
/// Most attempts per VM.
const MAX_TRIES: u32 = 10;
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
        {
            // Two requests for one host at once: the first to get here holds it.
            let active = self.lock();
            if let Some(other) = active
                .values()
                .find(|d| d.hosts.iter().any(|h| drain.hosts.contains(h)))
            {
                return Err(DrainError::Conflict(format!(
                    "drain {} already empties {}",
                    other.id,
                    other.hosts.join(", ")
                )));
            }
        }
        let now = self.now_ms();
        self.inner
            .store
            .save_drain(&drain)
            .await
            .map_err(DrainError::NotRecorded)?;
        self.inner
            .store
            .audit_record(now, &entry, "ok")
            .await
            .map_err(DrainError::NotRecorded)?;
        {
            let mut active = self.lock();
            active.insert(drain.id.clone(), drain.clone());
        }
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
        let now = self.now_ms();
        let changed = self.change(id, |d| {
            step::control(d, control.target(), now).map(|()| Vec::new())
        });
        self.audit(now, &entry, &changed).await?;
        let (drain, _) = changed?;
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
        let now = self.now_ms();
        let changed = self.change(id, |d| match action {
            ItemAction::Skip => step::skip(d, vm_uuid, now),
            ItemAction::Forward => step::forward(d, vm_uuid).map(|()| Vec::new()),
        });
        self.audit(now, &entry, &changed).await?;
        let (drain, commands) = changed?;
        self.carry_out(&drain, commands);
        self.inner.wake.notify_one();
        Ok(drain)
    }

    /// Runs the drains until `stop`: a step each second, and at once after a change.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(STEP_EVERY) => {}
                () = self.inner.wake.notified() => {}
                () = stop.cancelled() => break,
            }
            self.tick().await;
        }
    }

    /// Waits for the commands under way (at shutdown, after the steps have stopped).
    pub async fn finish(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// One step of every running drain.
    async fn tick(&self) {
        let snapshot = {
            let active = self.lock();
            if active.is_empty() {
                drop(active);
                self.clear_notices();
                return;
            }
            let fleet = self.inner.fleet.read();
            snapshot(&fleet, &self.inner.hosts, active.values(), self.now_ms())
        };
        let mut changed = Vec::new();
        let mut work = Vec::new();
        let mut ended = Vec::new();
        let (notices, soon) = {
            let mut active = self.lock();
            for drain in active.values_mut() {
                let before = drain.clone();
                let commands = step::step(drain, &snapshot);
                if *drain != before {
                    changed.push(drain.clone());
                }
                work.push((drain.clone(), commands));
            }
            active.retain(|id, d| {
                let over = !d.state.is_active();
                if over {
                    ended.push((id.clone(), d.hosts.clone()));
                }
                !over
            });
            notices(active.values(), snapshot.now_ms)
        };
        self.inner.fleet.update(|f, _| f.set_scheduled(notices));
        self.inner.fleet.modify(|f| f.set_measure_soon(soon));
        for drain in &changed {
            self.save(drain).await;
            self.publish(drain);
        }
        for (id, hosts) in ended {
            tracing::info!(drain = %id, "drain over");
            self.inner.fleet.update(|f, _| f.set_draining(&hosts, None));
        }
        for (drain, commands) in work {
            self.carry_out(&drain, commands);
        }
    }

    /// Carries out a step's commands, each on a task of its own (a start takes seconds;
    /// nothing waits behind it).
    fn carry_out(&self, drain: &Drain, commands: Vec<Command>) {
        for command in commands {
            let this = self.clone();
            let drain = drain.clone();
            self.inner
                .tasks
                .spawn(async move { this.carry_out_one(&drain, command).await });
        }
    }

    async fn carry_out_one(&self, drain: &Drain, command: Command) {
        match command {
            Command::Start {
                vm_uuid,
                destination,
                bandwidth_mib_s,
                max_s,
            } => {
                let outcome = self
                    .start(drain, &vm_uuid, &destination, bandwidth_mib_s, max_s)
                    .await;
                let now = self.now_ms();
                let snapshot = Snapshot {
                    now_ms: now,
                    ..Snapshot::default()
                };
                let result = self.change(&drain.id, |d| {
                    Ok(step::started(d, &vm_uuid, outcome.clone(), &snapshot))
                });
                if let Ok((updated, commands)) = result {
                    self.save(&updated).await;
                    self.publish(&updated);
                    self.carry_out(&updated, commands);
                }
                self.inner.wake.notify_one();
            }
            Command::Lever {
                migration_id,
                vm_uuid,
                change,
                reason,
            } => {
                self.act(&migration_id, &vm_uuid, ActKind::Lever(change), reason)
                    .await;
            }
            Command::Abort {
                migration_id,
                vm_uuid,
                reason,
            } => {
                self.act(&migration_id, &vm_uuid, ActKind::Abort, reason)
                    .await;
            }
            Command::MeasureSoon { .. } => {}
        }
    }

    /// Starts one VM's move for `drain`; the migration's id, or why not (and whether
    /// trying again cannot help).
    async fn start(
        &self,
        drain: &Drain,
        vm_uuid: &str,
        destination: &str,
        bandwidth_mib_s: Option<u64>,
        max_s: u64,
    ) -> Result<String, (String, bool)> {
        let preset = self
            .inner
            .presets
            .iter()
            .find(|p| p.name == drain.preset)
            .ok_or_else(|| (format!("the preset {} is gone", drain.preset), true))?;
        let deadline = preset.settings.deadline.clone();
        let mut patch = serde_json::json!({
            "deadline": {
                "completion_max_s": deadline.completion_max_s.map_or(max_s, |m| m.min(max_s)),
            }
        });
        if let Some(b) = bandwidth_mib_s {
            patch["bandwidth_mib_s"] = b.into();
        }
        if !drain.policy.allow_post_copy {
            patch["capabilities"] = serde_json::json!({ "postcopy": false });
            if deadline.action == converge_api::TimeoutAction::PostCopy {
                patch["deadline"]["action"] = "abort".into();
            }
        }
        let request = StartRequest {
            vm_uuid: vm_uuid.to_owned(),
            destination: destination.to_owned(),
            preset: drain.preset.clone(),
            settings: Some(patch),
            started_by: format!("{} (drain {})", drain.created_by, drain.id),
            client_addr: IpAddr::from([127, 0, 0, 1]),
            no_post_copy: !drain.policy.allow_post_copy,
        };
        match self
            .inner
            .executor
            .start(request, self.inner.presets.clone())
            .await
        {
            Ok(m) => Ok(m.id),
            Err(StartError::Refused(refusal)) => {
                let permanent = matches!(refusal, crate::fleet::Refusal::Invalid(_));
                Err((refusal.to_string(), permanent))
            }
            Err(err) => Err((err.to_string(), false)),
        }
    }

    async fn act(&self, migration_id: &str, vm_uuid: &str, kind: ActKind, reason: String) {
        let Some(m) = self.inner.fleet.read().migration(migration_id).cloned() else {
            return;
        };
        let act = Act {
            migration_id: migration_id.to_owned(),
            vm_uuid: vm_uuid.to_owned(),
            vm_name: m.vm_name,
            host: m.source,
            kind,
            actor: DRAIN_ACTOR.into(),
            client_addr: None,
            reason,
        };
        if let Err(err) = self.inner.executor.execute(act).await {
            tracing::warn!(migration = %migration_id, action = kind.name(), error = %err, "a drain's action failed");
        }
    }

    /// Plans `request` against the fleet as it is now.
    pub async fn plan(&self, request: &DrainRequest) -> Result<Drain, DrainError> {
        let checked = self.check(request)?;
        // What the VMs' past migrations showed (the database first: no lock across it).
        let uuids: Vec<String> = {
            let fleet = self.inner.fleet.read();
            fleet
                .vms()
                .into_iter()
                .filter(|vm| checked.sources.contains(&vm.host) && vm.state != VmState::Incoming)
                .map(|vm| vm.uuid)
                .collect()
        };
        let mut past = HashMap::new();
        for uuid in &uuids {
            let history = self
                .inner
                .store
                .migrations_of_vm(uuid, 5)
                .await
                .map_err(DrainError::NotRecorded)?;
            past.insert(uuid.clone(), past_moves(&history));
        }
        let input = {
            let fleet = self.inner.fleet.read();
            self.plan_input(&fleet, checked, &past)
        };
        plan::plan(&input).map_err(|err| DrainError::Invalid(err.to_string()))
    }

    fn check(&self, request: &DrainRequest) -> Result<Checked, DrainError> {
        let invalid = |why: String| Err(DrainError::Invalid(why));
        let fleet = self.inner.fleet.read();
        let hosts = fleet.hosts();
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        if request.hosts.is_empty() {
            return invalid("name the hosts to empty in \"hosts\"".into());
        }
        let mut sources = Vec::new();
        for name in &request.hosts {
            let Some(host) = hosts.iter().find(|h| &h.name == name) else {
                return invalid(format!(
                    "no host called \"{name}\"; hosts are: {}",
                    names.join(", ")
                ));
            };
            if host.state != converge_api::HostState::Connected {
                return Err(DrainError::Conflict(format!(
                    "host {name} is not connected right now: its VMs cannot be moved; try again when it is"
                )));
            }
            if let Some(drain) = &host.draining {
                return Err(DrainError::Conflict(format!(
                    "host {name} is already being drained (drain {drain})"
                )));
            }
            if !sources.contains(name) {
                sources.push(name.clone());
            }
        }
        let asked = request.destinations.clone().filter(|d| !d.is_empty());
        let mut destinations = Vec::new();
        match &asked {
            Some(list) => {
                for name in list {
                    let Some(host) = hosts.iter().find(|h| &h.name == name) else {
                        return invalid(format!(
                            "destinations: no host called \"{name}\"; hosts are: {}",
                            names.join(", ")
                        ));
                    };
                    if sources.contains(name) {
                        return invalid(format!(
                            "destinations: {name} is one of the hosts to empty"
                        ));
                    }
                    if host.state != converge_api::HostState::Connected {
                        return Err(DrainError::Conflict(format!(
                            "destination {name} is not connected right now"
                        )));
                    }
                    if let Some(drain) = &host.draining {
                        return Err(DrainError::Conflict(format!(
                            "destination {name} is being drained (drain {drain})"
                        )));
                    }
                    if !destinations.contains(name) {
                        destinations.push(name.clone());
                    }
                }
            }
            None => {
                destinations = hosts
                    .iter()
                    .filter(|h| {
                        !sources.contains(&h.name)
                            && h.state == converge_api::HostState::Connected
                            && h.draining.is_none()
                    })
                    .map(|h| h.name.clone())
                    .collect();
            }
        }
        if destinations.is_empty() {
            return Err(DrainError::Conflict(
                "no destination: no other host is connected and free of drains".into(),
            ));
        }
        let window_min = request.window_minutes.unwrap_or(DEFAULT_WINDOW_MIN);
        if !(1..=MAX_WINDOW_MIN).contains(&window_min) {
            return invalid(format!(
                "window_minutes: give 1 to {MAX_WINDOW_MIN} (a week)"
            ));
        }
        let limits = request.limits.unwrap_or_default();
        for (field, value) in [
            ("per_source", limits.per_source),
            ("per_destination", limits.per_destination),
            ("total", limits.total),
        ] {
            if !(1..=MAX_CONCURRENCY).contains(&value) {
                return invalid(format!("limits.{field}: give 1 to {MAX_CONCURRENCY}"));
            }
        }
        for (field, value) in [
            ("bandwidth_mib_s", limits.bandwidth_mib_s),
            ("link_budget_mib_s", limits.link_budget_mib_s),
        ] {
            if value.is_some_and(|v| !(1..=MAX_BANDWIDTH_MIB_S).contains(&v)) {
                return invalid(format!(
                    "limits.{field}: give 1 to {MAX_BANDWIDTH_MIB_S} MiB/s, or leave it out"
                ));
            }
        }
        let policy = request.policy.unwrap_or_default();
        if !(1..=MAX_TRIES).contains(&policy.max_tries) {
            return invalid(format!("policy.max_tries: give 1 to {MAX_TRIES}"));
        }
        if policy
            .attempt_max_s
            .is_some_and(|s| !(30..=window_min * 60).contains(&s))
        {
            return invalid(format!(
                "policy.attempt_max_s: give 30 s to the window ({} s), or leave it out",
                window_min * 60
            ));
        }
        let preset_name = request
            .preset
            .clone()
            .unwrap_or_else(|| self.inner.default_preset.clone());
        let Some(preset) = self.inner.presets.iter().find(|p| p.name == preset_name) else {
            let names: Vec<&str> = self.inner.presets.iter().map(|p| p.name.as_str()).collect();
            return invalid(format!(
                "no preset called \"{preset_name}\"; presets are: {}",
                names.join(", ")
            ));
        };
        let on_sources: HashSet<String> = fleet
            .vms()
            .into_iter()
            .filter(|vm| sources.contains(&vm.host) && vm.state != VmState::Incoming)
            .map(|vm| vm.uuid)
            .collect();
        let mut placements = HashMap::new();
        for (i, p) in request.placements.iter().flatten().enumerate() {
            if !on_sources.contains(&p.vm_uuid) {
                return invalid(format!(
                    "placements[{i}]: VM {} is not on the hosts to empty",
                    p.vm_uuid
                ));
            }
            if !destinations.contains(&p.destination) {
                return invalid(format!(
                    "placements[{i}]: {} is not one of the destinations ({})",
                    p.destination,
                    destinations.join(", ")
                ));
            }
            placements.insert(p.vm_uuid.clone(), p.destination.clone());
        }
        let order = request.order.clone().unwrap_or_default();
        for (i, uuid) in order.iter().enumerate() {
            if !on_sources.contains(uuid) {
                return invalid(format!(
                    "order[{i}]: VM {uuid} is not on the hosts to empty"
                ));
            }
        }
        Ok(Checked {
            sources,
            destinations,
            window_s: window_min * 60,
            limits,
            policy,
            preset: preset.name.clone(),
            adaptive: preset.settings.adaptive,
            placements,
            order,
        })
    }

    fn plan_input(
        &self,
        fleet: &FleetState,
        checked: Checked,
        past: &HashMap<String, PastMoves>,
    ) -> PlanInput {
        let hosts = fleet
            .hosts()
            .iter()
            .filter_map(|h| host_facts(fleet, &self.inner.hosts, &h.name))
            .collect();
        let vms = fleet
            .vms()
            .into_iter()
            .filter(|vm| checked.sources.contains(&vm.host) && vm.state != VmState::Incoming)
            .map(|vm| {
                let nova_refused = vm.nova_managed
                    && !self
                        .inner
                        .hosts
                        .iter()
                        .any(|c| c.name == vm.host && c.start_nova_managed);
                VmFacts {
                    refusal: nova_refused.then(|| {
                        format!(
                            "OpenStack Nova manages it: move it through Nova (openstack server migrate --live-migration {}); it runs on {}",
                            vm.uuid, vm.host
                        )
                    }),
                    past: past.get(&vm.uuid).copied().unwrap_or_default(),
                    running: matches!(vm.state, VmState::Running | VmState::Paused),
                    migrating: vm.migration_id.clone(),
                    uuid: vm.uuid,
                    name: vm.name,
                    host: vm.host,
                    memory_bytes: vm.memory_bytes,
                    dirty_rate: vm.dirty_rate,
                }
            })
            .collect();
        let mut past_link = HashMap::new();
        for source in &checked.sources {
            let mut rates: Vec<u64> = fleet
                .migrations()
                .iter()
                .filter(|m| &m.source == source && m.state == MigrationState::Completed)
                .filter(|m| {
                    m.settings
                        .as_ref()
                        .is_some_and(|s| s.bandwidth_mib_s.is_none())
                })
                .filter_map(|m| m.last_sample.as_ref().map(|s| s.transfer_rate_bytes_per_s))
                .filter(|r| *r > 0)
                .collect();
            rates.sort_unstable();
            if let Some(median) = rates.get(rates.len() / 2) {
                past_link.insert(source.clone(), *median);
            }
        }
        PlanInput {
            sources: checked.sources,
            destinations: checked.destinations,
            hosts,
            vms,
            limits: checked.limits,
            policy: checked.policy,
            preset: checked.preset,
            adaptive: checked.adaptive,
            past_link,
            placements: checked.placements,
            order: checked.order,
            window_s: checked.window_s,
            now_ms: self.now_ms(),
        }
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
    async fn audit(
        &self,
        now: i64,
        entry: &NewEntry,
        changed: &Result<(Drain, Vec<Command>), DrainError>,
    ) -> Result<(), DrainError> {
        let result = match changed {
            Ok(_) => "ok".to_owned(),
            Err(err) => format!("refused: {err}"),
        };
        if let Ok((drain, _)) = changed {
            self.save(drain).await;
            self.publish(drain);
        }
        self.inner
            .store
            .audit_record(now, entry, &result)
            .await
            .map(|_| ())
            .map_err(DrainError::NotRecorded)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Drain>> {
        self.inner
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request's values, checked.
#[derive(Debug)]
struct Checked {
    sources: Vec<String>,
    destinations: Vec<String>,
    window_s: u64,
    limits: DrainLimits,
    policy: DrainPolicy,
    preset: String,
    adaptive: bool,
    placements: HashMap<String, String>,
    order: Vec<String>,
}

/// The fleet as the drains' step sees it: the migrations of their VMs, those VMs, and
/// their destinations' room.
fn snapshot<'a>(
    fleet: &FleetState,
    hosts: &[HostConfig],
    drains: impl Iterator<Item = &'a Drain>,
    now_ms: i64,
) -> Snapshot {
    let mut snapshot = Snapshot {
        now_ms,
        ..Snapshot::default()
    };
    let restoring: HashSet<&str> = fleet.restoring().collect();
    for drain in drains {
        for item in &drain.items {
            if let Some(vm) = fleet.vm(&item.vm_uuid) {
                snapshot.vms.insert(
                    item.vm_uuid.clone(),
                    VmView {
                        running: matches!(vm.state, VmState::Running | VmState::Paused),
                        host: vm.host,
                        dirty_rate: vm.dirty_rate,
                        migrating: vm.migration_id,
                    },
                );
            }
            for id in item.migration_id.iter() {
                if let Some(m) = fleet.migration(id) {
                    snapshot.migrations.insert(id.clone(), view(m));
                } else if restoring.contains(id.as_str()) {
                    snapshot.restoring.insert(id.clone());
                }
            }
        }
        for dest in &drain.destinations {
            if fleet.draining(dest).is_some() {
                continue;
            }
            if let Some(facts) = host_facts(fleet, hosts, dest) {
                snapshot
                    .rooms
                    .insert(dest.clone(), plan::room_of(&facts).room_bytes);
            }
        }
    }
    snapshot
}

/// What a drain's placement knows of `name`: its connection, drain, memory and the
/// configured reserve and guest limit.
fn host_facts(fleet: &FleetState, config: &[HostConfig], name: &str) -> Option<HostFacts> {
    let host = fleet.hosts().into_iter().find(|h| h.name == name)?;
    let config = config.iter().find(|c| c.name == name);
    let memory = fleet.host_memory(name);
    Some(HostFacts {
        connected: host.state == converge_api::HostState::Connected,
        draining: host.draining.clone(),
        free_bytes: memory.and_then(|m| m.free_bytes),
        reserve_bytes: config.map_or(1024 * MIB, |c| c.reserve_mib.saturating_mul(MIB)),
        guest_limit_bytes: config
            .and_then(|c| c.max_guest_memory_mib)
            .map(|m| m.saturating_mul(MIB)),
        guests_bytes: memory.map_or(0, |m| m.guests_bytes),
        name: host.name,
    })
}

fn view(m: &Migration) -> MigrationView {
    let forecast = m.forecast.as_ref();
    MigrationView {
        state: m.state,
        destination: m.destination.clone(),
        error: m.error.clone(),
        verdict: forecast.map(|f| f.verdict),
        reason: forecast.map(|f| f.reason.clone()),
        advice: forecast.and_then(|f| {
            f.advice
                .iter()
                .find_map(|a| a.lever.map(|l| (l, a.action.clone())))
        }),
        adaptive: m.settings.as_ref().is_some_and(|s| s.adaptive),
        postcopy_allowed: m.settings.as_ref().is_some_and(|s| s.capabilities.postcopy),
    }
}

/// What a VM's past migrations (newest first) say for the plan.
fn past_moves(history: &[Migration]) -> PastMoves {
    let completed = history
        .iter()
        .filter(|m| m.state == MigrationState::Completed);
    PastMoves {
        sent_bytes: completed
            .clone()
            .find_map(|m| m.final_stats.as_ref().and_then(|f| f.data_sent_bytes)),
        xbzrle_hit_pct: history
            .iter()
            .find_map(|m| m.last_sample.as_ref()?.xbzrle?.hit_rate_pct()),
    }
}

/// The tenants' notices for the VMs still to go, and the VMs waiting to go quiet.
fn notices<'a>(
    drains: impl Iterator<Item = &'a Drain>,
    now_ms: i64,
) -> (HashMap<String, String>, HashSet<String>) {
    let mut notices = HashMap::new();
    let mut soon = HashSet::new();
    for drain in drains {
        for item in &drain.items {
            if item.state == ItemState::Waiting {
                soon.insert(item.vm_uuid.clone());
            }
            if !matches!(item.state, ItemState::Pending | ItemState::Waiting) {
                continue;
            }
            let text = match item.expected_at_ms {
                Some(at) => {
                    let minutes = ((at - now_ms).max(0) as u64).div_ceil(60_000).max(1);
                    format!(
                        "Scheduled to be moved for maintenance, expected within about {minutes} minute{}.",
                        if minutes == 1 { "" } else { "s" }
                    )
                }
                None => "Scheduled to be moved for maintenance.".to_owned(),
            };
            notices.insert(item.vm_uuid.clone(), text);
        }
    }
    (notices, soon)
}

/// A new drain id: `d` and 15 hex digits (as migrations' `m…`).
fn new_drain_id() -> String {
    let id = crate::fleet::new_id();
    format!("d{}", id.trim_start_matches('m'))
}
