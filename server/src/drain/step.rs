//! A running drain, one step at a time: what its migrations did since the last step, which
//! VM starts next within the limits, what to do with a migration that will not converge,
//! when to retry one, and when the drain is over. Pure: the fleet comes in as a
//! [`Snapshot`], the actions go out as [`Command`]s for the runner to carry out.

use std::collections::{HashMap, HashSet};

use converge_api::{
    DirtyRate, Drain, DrainItem, DrainState, ItemState, LeverChange, LeverKind, LeverMove,
    MigrationState, Verdict,
};

use super::plan::{link_slots, size};

const MIB: u64 = 1 << 20;
/// A migration the forecast has called *will not converge* this long, advice applied or
/// none to apply, is aborted to be retried later, s. (The adaptive preset acts sooner by
/// itself: it switches to post-copy or aborts with its reason.)
pub const STUCK_GRACE_S: i64 = 30;
/// A start that has not answered in this long is taken as failed (the executor bounds
/// libvirt's calls well within it), s.
const START_TIMEOUT_S: i64 = 120;
/// A retried VM goes again once measured below this share of the link (where pre-copy
/// converges quickly: the plan's `QUICK_SHARE`).
const RETRY_SHARE: f64 = 0.5;
/// Times for tenants and the ETA are rounded to this, ms, so that they do not change at
/// every step.
const ROUND_MS: i64 = 10_000;

/// A migration as the drain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationView {
    /// Where it stands.
    pub state: MigrationState,
    /// Where it goes.
    pub destination: Option<String>,
    /// Why it failed or was aborted.
    pub error: Option<String>,
    /// The forecast's verdict, while it runs.
    pub verdict: Option<Verdict>,
    /// The forecast's reason.
    pub reason: Option<String>,
    /// The forecast's first one-click advice: the lever, and what it says to do.
    pub advice: Option<(LeverMove, String)>,
    /// Its settings let the forecast act by itself.
    pub adaptive: bool,
    /// Post-copy was allowed at its start.
    pub postcopy_allowed: bool,
}

/// What the drain knows of a migration id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The fleet has it.
    Known(MigrationView),
    /// The database had it running at the last stop; its host has not reported it yet.
    Restoring,
    /// The fleet does not know it (forgotten, or never recorded).
    Unknown,
}

/// A VM as the drain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmView {
    /// The host it is on (its source while it migrates).
    pub host: String,
    /// Running or paused (a live migration can move it).
    pub running: bool,
    /// Its latest dirty-rate reading.
    pub dirty_rate: Option<DirtyRate>,
    /// The migration moving it, if one is.
    pub migrating: Option<String>,
}

/// The fleet at one moment, as the step needs it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Now, unix ms.
    pub now_ms: i64,
    /// Migrations by id.
    pub migrations: HashMap<String, MigrationView>,
    /// Migrations waiting to be taken back after a restart.
    pub restoring: HashSet<String>,
    /// VMs by UUID.
    pub vms: HashMap<String, VmView>,
    /// Each usable destination's room now, bytes (connected, not held by a drain).
    pub rooms: HashMap<String, u64>,
}

impl Snapshot {
    fn migration(&self, id: &str) -> Lookup {
        match self.migrations.get(id) {
            Some(m) => Lookup::Known(m.clone()),
            None if self.restoring.contains(id) => Lookup::Restoring,
            None => Lookup::Unknown,
        }
    }
}

/// What the runner does for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the VM's move (the runner reports back with [`started`]).
    Start {
        /// The VM.
        vm_uuid: String,
        /// Where to.
        destination: String,
        /// Its bandwidth limit, MiB/s.
        bandwidth_mib_s: Option<u64>,
        /// Its completion deadline: the rest of the window, s.
        max_s: u64,
    },
    /// Move a lever of a migration (the forecast's advice).
    Lever {
        /// The migration.
        migration_id: String,
        /// Its VM.
        vm_uuid: String,
        /// Which lever, to what.
        change: LeverChange,
        /// Why.
        reason: String,
    },
    /// Abort a migration.
    Abort {
        /// The migration.
        migration_id: String,
        /// Its VM.
        vm_uuid: String,
        /// Why.
        reason: String,
    },
    /// Measure the VM's dirty rate soon (it waits for a quieter spell).
    MeasureSoon {
        /// The VM.
        vm_uuid: String,
    },
}

/// One step of `drain` against the fleet as `now` shows it. Returns the commands to carry
/// out; the drain is changed in place (compare it with a copy to know whether to save).
pub fn step(drain: &mut Drain, now: &Snapshot) -> Vec<Command> {
    let mut commands = Vec::new();
    if !drain.state.is_active() {
        return commands;
    }
    for i in 0..drain.items.len() {
        follow(drain, i, now, &mut commands);
    }
    for item in &mut drain.items {
        if item.state == ItemState::Waiting && quiet_again(item, now) {
            let rate = item.dirty_rate.map_or(0, |r| r.bytes_per_s);
            item.state = ItemState::Pending;
            item.reason = Some(format!("quieter now ({} MiB/s): tried again", rate / MIB));
            item.attempt.retry_below_bytes_per_s = None;
            item.attempt.waiting_since_ms = None;
        }
    }
    if now.now_ms >= drain.deadline_ms {
        for item in &mut drain.items {
            if matches!(item.state, ItemState::Pending | ItemState::Waiting) {
                let last = item.reason.take();
                leave(
                    item,
                    now.now_ms,
                    match last {
                        Some(last) if item.state == ItemState::Waiting => {
                            format!("the window ended before it went quiet ({last})")
                        }
                        _ => "the window ended before its turn".to_owned(),
                    },
                );
            }
        }
    }
    if drain.state == DrainState::Running {
        start_next(drain, now, &mut commands);
    }
    if !drain.items.iter().any(|i| i.state == ItemState::Migrating) {
        let all_final = drain.items.iter().all(|i| i.state.is_final());
        if drain.state == DrainState::Cancelling {
            drain.state = DrainState::Cancelled;
            drain.ended_at_ms = Some(now.now_ms);
        } else if all_final {
            drain.state = DrainState::Done;
            drain.ended_at_ms = Some(now.now_ms);
        }
    }
    estimate(drain, now.now_ms);
    commands
}

/// Follows item `i`'s migration, if it has one running.
fn follow(drain: &mut Drain, i: usize, now: &Snapshot, commands: &mut Vec<Command>) {
    let rules = Rules::of(drain);
    let cancelling = rules.cancelling;
    let policy = drain.policy;
    let item = &mut drain.items[i];
    if item.state != ItemState::Migrating {
        return;
    }
    let Some(id) = item.migration_id.clone() else {
        // A start under way; the runner reports its outcome. Once the fleet has the
        // migration it is followed from there (the same id; after a restart, the runner's
        // report is gone with the old process).
        if let Some(found) = now
            .vms
            .get(&item.vm_uuid)
            .and_then(|vm| vm.migrating.clone())
        {
            item.migration_ids.push(found.clone());
            item.migration_id = Some(found);
            return;
        }
        let started = item.attempt.started_at_ms.unwrap_or(now.now_ms);
        if now.now_ms - started > START_TIMEOUT_S * 1000 {
            attempt_over(item, now, &rules, "the start did not answer", commands);
        }
        return;
    };
    let m = match now.migration(&id) {
        Lookup::Known(m) => m,
        Lookup::Restoring => return,
        Lookup::Unknown => {
            // Forgotten by the fleet: where the VM runs says how it ended.
            match now.vms.get(&item.vm_uuid) {
                Some(vm) if vm.host != item.source => moved(item, vm.host.clone(), now.now_ms),
                Some(vm) if vm.migrating.is_some() => {}
                _ => attempt_over(
                    item,
                    now,
                    &rules,
                    "its migration's record was lost",
                    commands,
                ),
            }
            return;
        }
    };
    if m.state == MigrationState::Completed {
        let destination = m.destination.or_else(|| item.destination.clone());
        moved(item, destination.unwrap_or_default(), now.now_ms);
        return;
    }
    if !m.state.is_active() {
        // Unknown: the record could not tell; where the VM runs can.
        if m.state == MigrationState::Unknown
            && let Some(vm) = now.vms.get(&item.vm_uuid)
            && vm.host != item.source
        {
            moved(item, vm.host.clone(), now.now_ms);
            return;
        }
        // The drain's own reason for an abort it asked for says more than "aborted".
        let why = match (m.state, item.attempt.abort_reason.take()) {
            (MigrationState::Aborted, Some(reason)) => reason,
            _ => m.error.unwrap_or_else(|| m.state.wire_name().to_owned()),
        };
        attempt_over(item, now, &rules, &why, commands);
        return;
    }
    // Running.
    if m.state == MigrationState::PostCopy {
        // Cannot be undone, and it ends by itself.
        item.attempt.stuck_since_ms = None;
        return;
    }
    if cancelling {
        abort_once(item, &id, "the drain was cancelled".into(), commands);
        return;
    }
    let stuck = matches!(m.verdict, Some(Verdict::WillNotConverge));
    if !stuck {
        item.attempt.stuck_since_ms = None;
        item.reason = None;
    } else {
        let since = *item.attempt.stuck_since_ms.get_or_insert(now.now_ms);
        let forecast = m.reason.clone().unwrap_or_default();
        item.reason = Some(format!("will not converge: {forecast}"));
        // Advice the drain may apply: a one-click lever, post-copy only when allowed.
        let applicable = m.advice.as_ref().filter(|(lever, _)| {
            lever.lever != LeverKind::PostCopy || (policy.allow_post_copy && m.postcopy_allowed)
        });
        if policy.apply_advice
            && !m.adaptive
            && !item.attempt.advice_applied
            && let Some((lever, action)) = applicable
            && let Some(change) = lever.change()
        {
            item.attempt.advice_applied = true;
            item.attempt.stuck_since_ms = Some(now.now_ms);
            commands.push(Command::Lever {
                migration_id: id.clone(),
                vm_uuid: item.vm_uuid.clone(),
                change,
                reason: format!("drain: the forecast's advice, \"{action}\" ({forecast})"),
            });
            return;
        }
        if now.now_ms - since >= STUCK_GRACE_S * 1000 {
            let tried = if item.attempt.advice_applied {
                " with the advice applied"
            } else {
                ""
            };
            abort_once(
                item,
                &id,
                format!(
                    "drain: will not converge{tried} ({forecast}); aborted to try again when the guest is quieter"
                ),
                commands,
            );
            return;
        }
    }
    let ran_s = item
        .attempt
        .started_at_ms
        .map_or(0, |at| (now.now_ms - at) / 1000);
    if let Some(max) = policy.attempt_max_s
        && ran_s >= i64::try_from(max).unwrap_or(i64::MAX)
    {
        abort_once(
            item,
            &id,
            format!("drain: the attempt ran {ran_s} s, its limit; tried again later"),
            commands,
        );
    }
}

fn abort_once(item: &mut DrainItem, id: &str, reason: String, commands: &mut Vec<Command>) {
    if item.attempt.abort_sent {
        return;
    }
    item.attempt.abort_sent = true;
    item.attempt.abort_reason = Some(reason.trim_start_matches("drain: ").to_owned());
    commands.push(Command::Abort {
        migration_id: id.to_owned(),
        vm_uuid: item.vm_uuid.clone(),
        reason,
    });
}

fn moved(item: &mut DrainItem, destination: String, now_ms: i64) {
    item.state = ItemState::Moved;
    item.destination = Some(destination);
    item.reason = None;
    item.ended_at_ms = Some(now_ms);
    item.expected_at_ms = None;
}

fn leave(item: &mut DrainItem, now_ms: i64, reason: String) {
    item.state = ItemState::Left;
    item.reason = Some(reason);
    item.ended_at_ms = Some(now_ms);
    item.expected_at_ms = None;
}

/// What decides the fate of an attempt that ended without moving its VM.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// The link per migration, bytes/s.
    link: u64,
    max_tries: u32,
    deadline_ms: i64,
    cancelling: bool,
}

impl Rules {
    fn of(drain: &Drain) -> Self {
        Self {
            link: drain.link_mib_s.saturating_mul(MIB),
            max_tries: drain.policy.max_tries,
            deadline_ms: drain.deadline_ms,
            cancelling: drain.state == DrainState::Cancelling,
        }
    }
}

/// An attempt ended without moving the VM: wait for a quieter spell and try again, or
/// leave it on its host with the reason.
fn attempt_over(
    item: &mut DrainItem,
    now: &Snapshot,
    rules: &Rules,
    why: &str,
    commands: &mut Vec<Command>,
) {
    let Rules {
        link,
        max_tries,
        deadline_ms,
        cancelling,
    } = *rules;
    let source = item.source.clone();
    let tries = item.attempts;
    item.migration_id = None;
    if item.attempt.skip_requested {
        item.state = ItemState::Skipped;
        item.reason = Some(format!(
            "skipped by an operator; its move was aborted and it runs on {source}"
        ));
        item.ended_at_ms = Some(now.now_ms);
        return;
    }
    if cancelling {
        leave(
            item,
            now.now_ms,
            format!("the drain was cancelled; it runs on {source}"),
        );
        return;
    }
    if tries >= max_tries.max(1) || now.now_ms >= deadline_ms {
        leave(
            item,
            now.now_ms,
            format!(
                "tried {tries} time{}; the last: {why}; it runs on {source}",
                if tries == 1 { "" } else { "s" }
            ),
        );
        return;
    }
    let below = (link as f64 * RETRY_SHARE) as u64;
    item.state = ItemState::Waiting;
    item.attempt.retry_below_bytes_per_s = Some(below);
    item.attempt.waiting_since_ms = Some(now.now_ms);
    item.reason = Some(format!(
        "attempt {tries}: {why}; tried again once it dirties less than {} MiB/s",
        below / MIB
    ));
    commands.push(Command::MeasureSoon {
        vm_uuid: item.vm_uuid.clone(),
    });
}

/// Whether a waiting VM was measured quiet enough since it began to wait (the reading is
/// copied into the item).
fn quiet_again(item: &mut DrainItem, now: &Snapshot) -> bool {
    let Some(vm) = now.vms.get(&item.vm_uuid) else {
        return false;
    };
    let (Some(since), Some(below)) = (
        item.attempt.waiting_since_ms,
        item.attempt.retry_below_bytes_per_s,
    ) else {
        return false;
    };
    match vm.dirty_rate {
        Some(reading) if reading.at_ms > since => {
            item.dirty_rate = Some(reading);
            reading.bytes_per_s < below
        }
        _ => false,
    }
}

/// Starts pending VMs, in order, as far as the limits allow; a VM whose turn has come but
/// whose destination is full goes to another with room, or waits for room.
fn start_next(drain: &mut Drain, now: &Snapshot, commands: &mut Vec<Command>) {
    let limits = drain.limits;
    let link_slots = link_slots(&limits) as usize;
    let bandwidth = drain
        .limits
        .bandwidth_mib_s
        .map(|b| b.min(drain.link_mib_s));
    let bandwidth = match (bandwidth, drain.limits.link_budget_mib_s) {
        (b, Some(_)) => Some(b.unwrap_or(drain.link_mib_s).min(drain.link_mib_s)),
        (b, None) => b,
    };
    let max_s = u64::try_from((drain.deadline_ms - now.now_ms).max(0) / 1000).unwrap_or(0);
    if max_s < 10 {
        return;
    }
    // Memory already heading to each destination (counted until the drain is over: the
    // host's own figures catch up with a move only after a while).
    let mut heading: HashMap<String, u64> = HashMap::new();
    for item in &drain.items {
        if item.state == ItemState::Migrating
            && let Some(d) = &item.destination
        {
            *heading.entry(d.clone()).or_default() += item.memory_bytes;
        }
    }
    for i in 0..drain.items.len() {
        let running: Vec<(String, String)> = drain
            .items
            .iter()
            .filter(|x| x.state == ItemState::Migrating)
            .map(|x| (x.source.clone(), x.destination.clone().unwrap_or_default()))
            .collect();
        if running.len() >= limits.total.max(1) as usize {
            return;
        }
        let item = &mut drain.items[i];
        if item.state != ItemState::Pending {
            continue;
        }
        match now.vms.get(&item.vm_uuid) {
            None => {
                leave(
                    item,
                    now.now_ms,
                    format!("it is no longer on {} (deleted?)", item.source),
                );
                continue;
            }
            Some(vm) if vm.host != item.source => {
                item.reason = Some(format!("moved to {} outside the drain", vm.host));
                let host = vm.host.clone();
                moved(item, host, now.now_ms);
                continue;
            }
            Some(vm) if !vm.running => {
                leave(
                    item,
                    now.now_ms,
                    "it stopped running: a live migration moves running guests only".into(),
                );
                continue;
            }
            Some(vm) if vm.migrating.is_some() => {
                // Someone started a move of it: follow that one.
                item.state = ItemState::Migrating;
                item.migration_id = vm.migrating.clone();
                item.migration_ids.extend(vm.migrating.clone());
                item.attempts += 1;
                item.attempt = Default::default();
                item.attempt.started_at_ms = Some(now.now_ms);
                continue;
            }
            Some(_) => {}
        }
        let out = running.iter().filter(|r| r.0 == item.source).count();
        if out >= limits.per_source.max(1) as usize {
            continue;
        }
        let room_for = |dest: &str, heading: &HashMap<String, u64>| {
            let room = now.rooms.get(dest).copied().unwrap_or(0);
            room.saturating_sub(heading.get(dest).copied().unwrap_or(0)) >= item.memory_bytes
        };
        let free_slot = |dest: &str| {
            let into = running.iter().filter(|r| r.1 == dest).count();
            let on_link = running
                .iter()
                .filter(|r| r.0 == item.source && r.1 == dest)
                .count();
            into < limits.per_destination.max(1) as usize && on_link < link_slots
        };
        // The planned destination while it has room (its slots free up in time); another
        // with room and a free slot once it has not.
        let destination = match item.destination.clone() {
            Some(planned) if room_for(&planned, &heading) => {
                if !free_slot(&planned) {
                    continue;
                }
                Some(planned)
            }
            _ => drain
                .destinations
                .iter()
                .filter(|d| room_for(d, &heading) && free_slot(d))
                .max_by_key(|d| {
                    now.rooms
                        .get(*d)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(heading.get(*d).copied().unwrap_or(0))
                })
                .cloned(),
        };
        let Some(destination) = destination else {
            if !drain.destinations.iter().any(|d| room_for(d, &heading)) {
                item.reason = Some(format!(
                    "waiting for room: no destination has {} free now",
                    size(item.memory_bytes)
                ));
            }
            continue;
        };
        *heading.entry(destination.clone()).or_default() += item.memory_bytes;
        item.destination = Some(destination.clone());
        item.state = ItemState::Migrating;
        item.attempts += 1;
        item.migration_id = None;
        item.reason = None;
        item.expected_at_ms = None;
        item.attempt = Default::default();
        item.attempt.started_at_ms = Some(now.now_ms);
        commands.push(Command::Start {
            vm_uuid: item.vm_uuid.clone(),
            destination,
            bandwidth_mib_s: bandwidth,
            max_s,
        });
    }
}

/// The runner's report of a start: the migration's id, or why it did not start (`final`:
/// retrying cannot help, e.g. a refusal).
pub fn started(
    drain: &mut Drain,
    vm_uuid: &str,
    outcome: Result<String, (String, bool)>,
    now: &Snapshot,
) -> Vec<Command> {
    let rules = Rules::of(drain);
    let cancelling = rules.cancelling;
    let mut commands = Vec::new();
    let Some(item) = drain.items.iter_mut().find(|i| {
        i.vm_uuid == vm_uuid && i.state == ItemState::Migrating && i.migration_id.is_none()
    }) else {
        return commands;
    };
    match outcome {
        Ok(id) => {
            item.migration_ids.push(id.clone());
            item.migration_id = Some(id.clone());
            if cancelling {
                abort_once(item, &id, "the drain was cancelled".into(), &mut commands);
            }
        }
        Err((why, true)) => {
            let source = item.source.clone();
            leave(item, now.now_ms, format!("{why}; it runs on {source}"));
        }
        Err((why, false)) => attempt_over(
            item,
            now,
            &rules,
            &format!("did not start: {why}"),
            &mut commands,
        ),
    }
    commands
}

mod control;
mod eta;

pub use control::{control, forward, skip};
use eta::estimate;

#[cfg(test)]
mod tests;
