//! The fleet as the server knows it: hosts, their VMs, and every migration in memory.
//! Reports from the host workers and requests from handlers change it; each change says
//! what to publish and what to persist. No I/O here, so it is tested without libvirt.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use converge_api::{
    Host, HostState, LiveEvent, Migration, MigrationDetail, MigrationState, MigrationUpdate,
    TenantVm, Vm, VmState,
};
use converge_libvirt::{DomainState, DomainSummary, JobStats};

mod actions;
mod maintenance;
mod measuring;
mod reports;
mod sampling;

pub use actions::LeverTarget;
pub use maintenance::HostMemory;
pub use measuring::FRESH_DIRTY_RATE_MS;

use super::record::MigrationRecord;
use super::{Act, ActKind};
use crate::config::{ProjectConfig, ProjectVm};

/// A reading of a migration that ended at most this long ago, of a job that began while
/// that migration was recorded (or this much before), is a late reading of it, ms.
const LATE_READING_MS: i64 = 5_000;
/// Finished migrations kept in memory for the fleet page.
const KEEP_FINISHED: usize = 100;
/// `VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY`: the source paused because post-copy began.
const SUSPENDED_POSTCOPY: i32 = 7;

/// What a change asks the caller to do.
// Short-lived and moved once; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Send this event to viewers.
    Publish(LiveEvent),
    /// Write this to the history.
    Persist(HistoryWrite),
    /// Carry out an action the policy decided.
    Act(Act),
}

/// A write to the migration history, done in the order the changes were made.
// As `Change`: short-lived and moved once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryWrite {
    /// A migration's summary, inserted or updated.
    Migration(Migration),
    /// A (downsampled) sample of a migration.
    Sample {
        /// The migration.
        migration_id: String,
        /// The sample.
        sample: converge_api::Sample,
    },
    /// A pass boundary of a migration.
    Iteration {
        /// The migration.
        migration_id: String,
        /// The boundary.
        mark: converge_api::IterationMark,
    },
    /// Halve a migration's stored samples.
    Thin {
        /// The migration.
        migration_id: String,
    },
}

impl HistoryWrite {
    /// The migration it is about.
    pub fn migration_id(&self) -> &str {
        match self {
            HistoryWrite::Migration(m) => &m.id,
            HistoryWrite::Sample { migration_id, .. }
            | HistoryWrite::Iteration { migration_id, .. }
            | HistoryWrite::Thin { migration_id } => migration_id,
        }
    }
}

/// Why a request about a migration cannot be carried out; each says why in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such VM, host or migration.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with what is happening (already migrating, already over).
    #[error("{0}")]
    Conflict(String),
    /// The request's values cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// A validated request to start a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// The VM.
    pub vm_uuid: String,
    /// Its name.
    pub vm_name: String,
    /// Where it runs.
    pub source: String,
    /// Where it goes.
    pub destination: String,
    /// The VM's memory, bytes.
    pub memory_bytes: u64,
    /// OpenStack Nova manages the VM.
    pub nova_managed: bool,
}

#[derive(Debug, Clone)]
struct HostEntry {
    host: Host,
    domains: Vec<DomainSummary>,
    /// Memory free on the host as libvirt last said, bytes.
    free_bytes: Option<u64>,
}

/// Hosts, VMs and migrations.
#[derive(Debug)]
pub struct FleetState {
    hosts: BTreeMap<String, HostEntry>,
    migrations: HashMap<String, MigrationRecord>,
    active_by_vm: HashMap<String, String>,
    finished: VecDeque<String>,
    /// Migrations the database says were running when the server last stopped, by VM,
    /// waiting for a host to report them (or their end).
    orphans: HashMap<String, Migration>,
    /// Projects from the configuration, by VM UUID.
    owners: HashMap<String, String>,
    /// Projects from the configuration, by (host, domain name).
    owners_by_name: HashMap<(String, String), String>,
    /// The project of every VM seen, by UUID (kept after a VM leaves a host, so a move's
    /// last events still reach its tenant).
    projects: HashMap<String, String>,
    /// What each tenant VM's last `tenant_vm` event said, so that an unchanged view is not
    /// sent again (every VM-list refresh would otherwise repeat them all, crowding the
    /// replay buffer that fleet viewers resume from).
    tenant_views: HashMap<String, TenantVm>,
    /// The longest any migration may run, whoever started it.
    ceiling: Option<Ceiling>,
    /// Each VM's latest dirty-rate reading, by UUID.
    dirty_rates: HashMap<String, converge_api::DirtyRate>,
    /// When each VM's dirty rate was last tried (read or not), by UUID.
    measure_tried: HashMap<String, i64>,
    /// VMs being measured now, with their host.
    measuring: HashMap<String, String>,
    /// VMs to measure more often than the rest (a drain waits for them to go quiet).
    measure_soon: HashSet<String>,
    /// Maintenance notices for tenants, by VM UUID (a drain will move the VM).
    scheduled: HashMap<String, String>,
}

/// The server-wide ceiling on a migration's duration (`migrations.max_duration_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    /// Longest run, ms.
    pub max_ms: i64,
    /// What to do when a migration reaches it.
    pub action: converge_api::TimeoutAction,
}

impl FleetState {
    /// A fleet of these hosts, all still connecting.
    pub fn new<'a>(host_names: impl IntoIterator<Item = &'a str>, now_ms: i64) -> Self {
        let hosts = host_names
            .into_iter()
            .map(|name| {
                let host = Host {
                    name: name.to_owned(),
                    state: HostState::Connecting,
                    since_ms: now_ms,
                    error: None,
                    hostname: None,
                    libvirt_version: None,
                    vm_count: 0,
                    degraded: None,
                    draining: None,
                };
                (
                    name.to_owned(),
                    HostEntry {
                        host,
                        domains: Vec::new(),
                        free_bytes: None,
                    },
                )
            })
            .collect();
        Self {
            hosts,
            migrations: HashMap::new(),
            active_by_vm: HashMap::new(),
            finished: VecDeque::new(),
            orphans: HashMap::new(),
            owners: HashMap::new(),
            owners_by_name: HashMap::new(),
            projects: HashMap::new(),
            tenant_views: HashMap::new(),
            ceiling: None,
            dirty_rates: HashMap::new(),
            measure_tried: HashMap::new(),
            measuring: HashMap::new(),
            measure_soon: HashSet::new(),
            scheduled: HashMap::new(),
        }
    }

    /// Acts on every migration that runs longer than `ceiling`.
    pub fn with_ceiling(mut self, ceiling: Ceiling) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    /// Assigns VMs to projects as the configuration lists them (by UUID, or by name on
    /// one host).
    pub fn with_projects(mut self, projects: &[ProjectConfig]) -> Self {
        for project in projects {
            let name = project.name.trim().to_owned();
            for vm in &project.vms {
                match ProjectVm::parse(vm) {
                    Some(ProjectVm::Uuid(uuid)) => {
                        self.owners.insert(uuid.to_ascii_lowercase(), name.clone());
                    }
                    Some(ProjectVm::OnHost { host, name: domain }) => {
                        self.owners_by_name
                            .insert((host.to_owned(), domain.to_owned()), name.clone());
                    }
                    // Refused by config validation.
                    None => {}
                }
            }
        }
        self
    }

    /// Takes back migrations still marked active in the database; returns `(source host,
    /// VM)` pairs whose jobs the host workers should look at.
    pub fn restore(&mut self, active: Vec<Migration>) -> Vec<(String, String)> {
        active
            .into_iter()
            .map(|m| {
                let key = (m.source.clone(), m.vm_uuid.clone());
                self.orphans.insert(m.vm_uuid.clone(), m);
                key
            })
            .collect()
    }

    // ---- reading ----

    /// Every host.
    pub fn hosts(&self) -> Vec<Host> {
        self.hosts.values().map(|e| e.host.clone()).collect()
    }

    /// Every VM on every host: hosts in name order, each host's VMs by name.
    pub fn vms(&self) -> Vec<Vm> {
        self.hosts
            .values()
            .flat_map(|e| self.vms_of(&e.host.name, &e.domains))
            .collect()
    }

    /// Active migrations, then recently finished ones, newest first within each.
    pub fn migrations(&self) -> Vec<Migration> {
        let mut all: Vec<Migration> = self
            .migrations
            .values()
            .map(|r| r.migration.clone())
            .collect();
        all.sort_by_key(|m| (!m.state.is_active(), std::cmp::Reverse(m.started_at_ms)));
        all
    }

    /// One migration with its series.
    pub fn detail(&self, id: &str) -> Option<MigrationDetail> {
        self.migrations.get(id).map(MigrationRecord::detail)
    }

    /// One migration's summary.
    pub fn migration(&self, id: &str) -> Option<&Migration> {
        self.migrations.get(id).map(|r| &r.migration)
    }

    /// Whether `view` differs from the last one published for its VM (and remembers it).
    pub fn tenant_view_changed(&mut self, view: &TenantVm) -> bool {
        if self.tenant_views.get(&view.uuid) == Some(view) {
            return false;
        }
        self.tenant_views.insert(view.uuid.clone(), view.clone());
        true
    }

    /// The project a VM belongs to, if any (also for a VM no host lists right now).
    pub fn project_of(&self, vm_uuid: &str) -> Option<&str> {
        self.projects.get(vm_uuid).map(String::as_str)
    }

    /// The VM with this UUID as a host lists it now.
    pub fn vm(&self, vm_uuid: &str) -> Option<Vm> {
        let copies = self.hosts.values().filter_map(|e| {
            e.domains
                .iter()
                .find(|d| d.uuid == vm_uuid)
                .and_then(|d| self.vms_of(&e.host.name, std::slice::from_ref(d)).pop())
        });
        // Mid-migration the VM is listed twice: where it runs, and paused where it goes.
        copies.min_by_key(|vm| vm.state == VmState::Incoming)
    }

    /// The VMs of these projects, by name; one entry per VM (mid-migration, the copy
    /// where it runs, not the one waiting where it goes).
    pub fn vms_in(&self, projects: &[String]) -> Vec<Vm> {
        let mut vms: Vec<Vm> = self
            .vms()
            .into_iter()
            .filter(|vm| vm.project.as_ref().is_some_and(|p| projects.contains(p)))
            .collect();
        vms.sort_by(|a, b| {
            (&a.name, &a.uuid, a.state == VmState::Incoming).cmp(&(
                &b.name,
                &b.uuid,
                b.state == VmState::Incoming,
            ))
        });
        vms.dedup_by(|later, first| later.uuid == first.uuid);
        vms
    }

    /// The VM's migration under way, else its latest one still in memory.
    pub fn latest_migration_of(&self, vm_uuid: &str) -> Option<&Migration> {
        if let Some(id) = self.active_by_vm.get(vm_uuid) {
            return self.migration(id);
        }
        self.migrations
            .values()
            .map(|r| &r.migration)
            .filter(|m| m.vm_uuid == vm_uuid)
            .max_by_key(|m| m.started_at_ms)
    }

    // ---- requests ----

    /// Checks a start request against what is known right now.
    pub fn plan_start(&self, vm_uuid: &str, destination: &str) -> Result<StartPlan, Refusal> {
        let (source, domain) = self
            .hosts
            .values()
            .find_map(|e| {
                e.domains
                    .iter()
                    .find(|d| d.uuid == vm_uuid && d.state == DomainState::Running)
                    .map(|d| (e.host.name.clone(), d))
            })
            .ok_or_else(|| {
                Refusal::NotFound(format!(
                    "no running VM with UUID {vm_uuid} on any connected host"
                ))
            })?;
        if let Some(id) = self.active_by_vm.get(vm_uuid) {
            return Err(Refusal::Conflict(format!(
                "{} is already being migrated (migration {id})",
                domain.name
            )));
        }
        let Some(dest) = self.hosts.get(destination) else {
            let known: Vec<&str> = self.hosts.keys().map(String::as_str).collect();
            return Err(Refusal::NotFound(format!(
                "no host called \"{destination}\"; hosts are: {}",
                known.join(", ")
            )));
        };
        if destination == source {
            return Err(Refusal::Invalid(format!(
                "{} already runs on {source}; choose another destination",
                domain.name
            )));
        }
        if let Some(drain) = &dest.host.draining {
            return Err(Refusal::Conflict(format!(
                "host {destination} is being drained (drain {drain}): nothing moves into it until the drain ends; choose another destination"
            )));
        }
        for name in [&source, destination] {
            if self.hosts[name].host.state != HostState::Connected {
                return Err(Refusal::Conflict(format!(
                    "host {name} is not connected right now; try again when it is"
                )));
            }
        }
        debug_assert_eq!(dest.host.name, destination);
        Ok(StartPlan {
            vm_uuid: vm_uuid.to_owned(),
            vm_name: domain.name.clone(),
            source,
            destination: destination.to_owned(),
            memory_bytes: domain.memory_bytes,
            nova_managed: domain.nova.is_some(),
        })
    }

    /// Writes every migration under way as it stands, with its latest sample (at
    /// shutdown: the history then ends where the live view did).
    pub fn snapshot_active(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        for id in self.active_by_vm.values() {
            let Some(record) = self.migrations.get_mut(id) else {
                continue;
            };
            changes.push(Change::Persist(HistoryWrite::Migration(
                record.migration.clone(),
            )));
            if let Some(sample) = record.take_unstored_last() {
                changes.push(Change::Persist(HistoryWrite::Sample {
                    migration_id: id.clone(),
                    sample,
                }));
            }
        }
        changes
    }

    /// Records a migration Converge is about to start.
    pub fn begin(&mut self, migration: Migration) -> Result<Vec<Change>, Refusal> {
        if let Some(id) = self.active_by_vm.get(&migration.vm_uuid) {
            return Err(Refusal::Conflict(format!(
                "{} is already being migrated (migration {id})",
                migration.vm_name
            )));
        }
        if self.is_measuring(&migration.vm_uuid) {
            return Err(Refusal::Conflict(format!(
                "{}'s dirty rate is being measured (a second or so); try again when it ends",
                migration.vm_name
            )));
        }
        let mut record = MigrationRecord::new(migration);
        record.call_in_flight = true;
        record.measured_dirty_rate =
            self.fresh_dirty_rate(&record.migration.vm_uuid, record.migration.started_at_ms);
        self.active_by_vm.insert(
            record.migration.vm_uuid.clone(),
            record.migration.id.clone(),
        );
        let id = record.migration.id.clone();
        self.migrations.insert(id.clone(), record);
        Ok(self.changed(&id, None, true))
    }

    /// The host refused to start a migration that [`Self::begin`] recorded.
    pub fn start_failed(&mut self, id: &str, error: String, now_ms: i64) -> Vec<Change> {
        self.finish(id, MigrationState::Failed, Some(error), now_ms)
    }

    // ---- reports ----

    /// A host's VMs in name order (the dashboard shows them as sent: hosts in name order,
    /// each host's VMs by name).
    fn vms_of(&self, host: &str, domains: &[DomainSummary]) -> Vec<Vm> {
        let mut domains: Vec<&DomainSummary> = domains.iter().collect();
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        domains
            .into_iter()
            .map(|d| {
                let migration_id = self.active_by_vm.get(&d.uuid).cloned();
                let outgoing = migration_id
                    .as_ref()
                    .is_some_and(|id| self.migrations[id].migration.source == host);
                let state = match d.state {
                    DomainState::Running => VmState::Running,
                    DomainState::Paused { migrating: true } if !outgoing => VmState::Incoming,
                    DomainState::Paused { .. } => VmState::Paused,
                    DomainState::Shutoff => VmState::Shutoff,
                    DomainState::Other => VmState::Other,
                };
                // A UUID is the operator naming this very VM; Nova's metadata beats a name,
                // which is only an operator's word about one host's domain of that name.
                // A VM named on its host keeps that project when it moves (by UUID).
                let by_name = || {
                    self.owners_by_name
                        .get(&(host.to_owned(), d.name.clone()))
                        .or_else(|| self.projects.get(&d.uuid))
                        .cloned()
                };
                let project = self
                    .owners
                    .get(&d.uuid.to_ascii_lowercase())
                    .cloned()
                    .or_else(|| d.nova.as_ref().and_then(|n| n.project.clone()))
                    .or_else(by_name);
                Vm {
                    project,
                    uuid: d.uuid.clone(),
                    name: d.name.clone(),
                    host: host.to_owned(),
                    state,
                    memory_bytes: d.memory_bytes,
                    vcpus: d.vcpus,
                    migration_id,
                    nova_managed: d.nova.is_some(),
                    dirty_rate: self.dirty_rates.get(&d.uuid).copied(),
                }
            })
            .collect()
    }

    /// The active migration of `vm_uuid` from `host`, created from a sample when Converge
    /// did not start it (or took it back from the database after a restart); `true` when
    /// it was created now (it has no row on disk yet, or an old one).
    fn ensure_record(
        &mut self,
        host: &str,
        vm_uuid: &str,
        vm_name: &str,
        stats: &JobStats,
        now_ms: i64,
    ) -> Option<(String, bool)> {
        if let Some(id) = self.active_by_vm.get(vm_uuid) {
            return (self.migrations[id].migration.source == host).then(|| (id.clone(), false));
        }
        let elapsed = i64::try_from(stats.u64("time_elapsed").unwrap_or(0)).unwrap_or(0);
        if self.orphans.get(vm_uuid).is_none_or(|o| o.source != host)
            && self.is_late_reading(host, vm_uuid, now_ms - elapsed, now_ms)
        {
            return None;
        }
        let migration = match self.orphans.remove(vm_uuid) {
            Some(orphan) if orphan.source == host => orphan,
            _ => {
                let mut found = Migration::begun(
                    new_id(),
                    vm_uuid.to_owned(),
                    vm_name.to_owned(),
                    host.to_owned(),
                    MigrationState::Running,
                    now_ms - elapsed,
                );
                found.destination = self.incoming_host_of(vm_uuid, host);
                found
            }
        };
        let id = migration.id.clone();
        self.active_by_vm.insert(vm_uuid.to_owned(), id.clone());
        let mut record = MigrationRecord::new(migration);
        // Never measured while it migrates: a reading is from before.
        record.measured_dirty_rate = self.fresh_dirty_rate(vm_uuid, now_ms);
        self.migrations.insert(id.clone(), record);
        Some((id, true))
    }

    /// Whether a reading of a job that began at `job_started_ms` is a late one of the VM's
    /// migration from `host` that has just ended: the host's sampler read it just before
    /// the end, and its report came after the end's (seen in CI: a "found running" copy of
    /// a completed migration). Not a new migration to adopt.
    fn is_late_reading(&self, host: &str, vm_uuid: &str, job_started_ms: i64, now_ms: i64) -> bool {
        let Some(done) = self
            .latest_from(host, vm_uuid)
            .and_then(|id| self.migrations.get(&id))
        else {
            return false;
        };
        let m = &done.migration;
        m.ended_at_ms.is_some_and(|ended| {
            now_ms.saturating_sub(ended) <= LATE_READING_MS
                && (m.started_at_ms - LATE_READING_MS..=ended).contains(&job_started_ms)
        })
    }

    /// The host (other than `source`) where the VM waits paused for an incoming migration.
    fn incoming_host_of(&self, vm_uuid: &str, source: &str) -> Option<String> {
        self.hosts.values().find_map(|e| {
            (e.host.name != source
                && e.domains.iter().any(|d| {
                    d.uuid == vm_uuid && matches!(d.state, DomainState::Paused { migrating: true })
                }))
            .then(|| e.host.name.clone())
        })
    }

    /// The newest migration of `vm_uuid` from `host`, active or just finished.
    fn latest_from(&self, host: &str, vm_uuid: &str) -> Option<String> {
        self.migrations
            .values()
            .filter(|r| r.migration.vm_uuid == vm_uuid && r.migration.source == host)
            .max_by_key(|r| r.migration.started_at_ms)
            .map(|r| r.migration.id.clone())
    }

    /// Ends a migration (first outcome wins; later reports may only add final stats).
    fn finish(
        &mut self,
        id: &str,
        state: MigrationState,
        error: Option<String>,
        now_ms: i64,
    ) -> Vec<Change> {
        let Some(record) = self.migrations.get_mut(id) else {
            return Vec::new();
        };
        let mut resume = None;
        let m = &mut record.migration;
        if m.state.is_active() {
            m.state = state;
            m.error = error;
            m.ended_at_ms = Some(now_ms);
            m.deadline = None;
            m.forecast = None;
            record.note_outcome(state, now_ms);
            let m = &mut record.migration;
            if state == MigrationState::Completed {
                m.progress_pct = Some(100.0);
            }
            if self.active_by_vm.get(&m.vm_uuid).map(String::as_str) == Some(id) {
                self.active_by_vm.remove(&m.vm_uuid);
            }
            // Paused by the policy to force switchover: make sure it runs where it landed.
            if state == MigrationState::Completed
                && record.paused_by_policy
                && let Some(destination) = m.destination.clone()
            {
                let reason =
                    format!("the guest was paused to force switchover; resume it on {destination}");
                let mut act = Act::by_policy(m, ActKind::Resume, reason);
                act.host = destination;
                resume = Some(act);
            }
            self.finished.push_back(id.to_owned());
            while self.finished.len() > KEEP_FINISHED {
                if let Some(old) = self.finished.pop_front() {
                    self.migrations.remove(&old);
                }
            }
        }
        let mut changes = self.changed(id, None, true);
        changes.extend(resume.map(Change::Act));
        changes
    }

    fn changed(
        &self,
        id: &str,
        sample: Option<converge_api::Sample>,
        persist: bool,
    ) -> Vec<Change> {
        let Some(record) = self.migrations.get(id) else {
            return Vec::new();
        };
        let mut changes = vec![Change::Publish(LiveEvent::Migration(MigrationUpdate {
            migration: record.migration.clone(),
            sample,
            iteration: None,
        }))];
        if persist {
            changes.push(Change::Persist(HistoryWrite::Migration(
                record.migration.clone(),
            )));
        }
        changes
    }
}

/// A new migration id: time-ordered and unique enough for one controller.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("m{now:x}{:04x}", n & 0xffff)
}

#[cfg(test)]
mod tests;
