//! Checking a drain request against the fleet, and gathering the facts its plan is made
//! from.

use std::collections::{HashMap, HashSet};

use converge_api::{
    Drain, DrainLimits, DrainPolicy, DrainRequest, MAX_BANDWIDTH_MIB_S, Migration, MigrationState,
    VmState,
};

use super::plan::{self, HostFacts, PastMoves, PlanInput, VmFacts};
use super::{DrainError, Drains, MIB};
use crate::config::HostConfig;
use crate::fleet::FleetState;

/// The window when the request gives none, minutes.
const DEFAULT_WINDOW_MIN: u64 = 60;
/// The longest window, minutes (a week).
const MAX_WINDOW_MIN: u64 = 7 * 24 * 60;
/// Most migrations a limit may allow at once.
const MAX_CONCURRENCY: u32 = 64;
/// Most attempts per VM.
const MAX_TRIES: u32 = 10;

impl Drains {
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
        // The request's own values first (422), then what they name against the fleet.
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

/// What a drain's placement knows of `name`: its connection, drain, memory and the
/// configured reserve and guest limit.
pub(super) fn host_facts(
    fleet: &FleetState,
    config: &[HostConfig],
    name: &str,
) -> Option<HostFacts> {
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

/// What a VM's past migrations (newest first) say for the plan.
pub(super) fn past_moves(history: &[Migration]) -> PastMoves {
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
