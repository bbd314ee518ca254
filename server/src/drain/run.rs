//! Running the drains: a step of each every second (and at once after a change), what the
//! step asks carried out on tasks of their own, and the fleet as the step sees it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use converge_api::{Drain, ItemState, Migration, VmState};
use tokio_util::sync::CancellationToken;

use super::step::{self, Command, MigrationView, Snapshot, VmView};
use super::{DRAIN_ACTOR, Drains, check::host_facts, plan};
use crate::config::HostConfig;
use crate::fleet::{Act, ActKind, FleetState, StartError, StartRequest};

/// How often running drains are stepped (and at once after a change).
const STEP_EVERY: Duration = Duration::from_secs(1);

impl Drains {
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
    pub(super) fn carry_out(&self, drain: &Drain, commands: Vec<Command>) {
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
