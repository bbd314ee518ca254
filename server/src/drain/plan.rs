//! The plan of a drain, before anything moves: for each VM its outlook and time from its
//! measured dirty rate, its memory and the link; its destination, never overcommitting
//! one; the order; and a simulation of the whole drain under its limits. Pure: the facts
//! come in, the plan goes out.
//!
//! **Order.** VMs that are expected to finish go first, longest predicted move first
//! (longest-processing-time-first list scheduling: the heavy moves overlap each other
//! early and the quick ones fill the slots that free up near the end, which keeps the
//! last migration from starting late — the makespan is within 4/3 of the best order).
//! VMs likely to stall go last: they would hold a slot without finishing, and the later
//! they are tried the likelier the guest has gone quiet. An operator's own order comes
//! before all of them.
//!
//! **Placement.** In that order, each VM goes to the destination with the most room
//! left (heavy VMs get the roomiest hosts, and moves spread over the destinations, whose
//! incoming limits would otherwise serialise them). Room is what libvirt reports free
//! minus the host's reserve, and at most the host's guest-memory limit minus the guests
//! it holds; what the plan already put there counts as used. A VM that fits nowhere is
//! left on its host with the numbers.

use std::collections::{BTreeMap, HashMap};

use converge_api::{
    AttemptState, DirtyRate, Drain, DrainItem, DrainLimits, DrainPolicy, DrainState, HostRoom,
    ItemState, Outlook,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The link speed assumed when nothing says what it is: 10 GbE at about 85 %.
pub const ASSUMED_LINK_MIB_S: u64 = 1024;
/// A guest that dirties at most this share of the link converges quickly.
const QUICK_SHARE: f64 = 0.5;
/// A guest that dirties at least this share of the link does not converge with pre-copy
/// (each pass shrinks the set by less than a tenth: see the forecast's `SHRINKING`).
const STALL_SHARE: f64 = 0.9;
/// Setup and switchover on top of the passes, s.
const OVERHEAD_S: u64 = 2;
/// How long a move that will not finish holds its slot before the drain gives up on
/// the attempt, beyond its first pass, s.
pub const STALL_GRACE_S: u64 = 60;

/// What the plan knows of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Its name.
    pub name: String,
    /// Connected now.
    pub connected: bool,
    /// The drain that holds it, if one does.
    pub draining: Option<String>,
    /// Memory libvirt reports free, bytes.
    pub free_bytes: Option<u64>,
    /// Kept free for the host itself, bytes.
    pub reserve_bytes: u64,
    /// The most guest memory it may hold, bytes.
    pub guest_limit_bytes: Option<u64>,
    /// Memory of the guests on it (incoming ones too), bytes.
    pub guests_bytes: u64,
}

/// What the plan knows of a VM on a host to empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFacts {
    /// Its UUID.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// Where it runs.
    pub host: String,
    /// Running (or paused): a live migration can move it.
    pub running: bool,
    /// Its memory, bytes.
    pub memory_bytes: u64,
    /// Its latest dirty-rate reading.
    pub dirty_rate: Option<DirtyRate>,
    /// The migration moving it now, when one is.
    pub migrating: Option<String>,
    /// Why Converge may not start its move, when it may not (Nova manages it).
    pub refusal: Option<String>,
    /// What its past migrations showed.
    pub past: PastMoves,
}

/// What a VM's past migrations showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PastMoves {
    /// Data its latest completed migration sent, bytes: what a first pass costs.
    pub sent_bytes: Option<u64>,
    /// The share of pages xbzrle found in its cache in its latest migration with xbzrle,
    /// percent: whether it rewrites the same memory.
    pub xbzrle_hit_pct: Option<u32>,
}

/// xbzrle that found at least this share of pages in its cache finishes the guest's move.
const XBZRLE_HELPS_PCT: u32 = 50;
/// xbzrle that found fewer is no help (the adaptive preset's own threshold).
const XBZRLE_USELESS_PCT: u32 = 20;

/// Everything the plan is made from.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The hosts to empty.
    pub sources: Vec<String>,
    /// Where VMs may go (already checked: connected, not draining, not a source).
    pub destinations: Vec<String>,
    /// Every host.
    pub hosts: Vec<HostFacts>,
    /// Every VM on the hosts to empty.
    pub vms: Vec<VmFacts>,
    /// Limits.
    pub limits: DrainLimits,
    /// Policy.
    pub policy: DrainPolicy,
    /// The preset, and whether it is adaptive (it then chooses xbzrle and post-copy by
    /// itself for a busy guest).
    pub preset: String,
    /// The preset is adaptive.
    pub adaptive: bool,
    /// Each source's link speed per migration when known from past migrations, bytes/s.
    pub past_link: HashMap<String, u64>,
    /// The operator's destinations, by VM UUID.
    pub placements: HashMap<String, String>,
    /// VMs to move first, in this order.
    pub order: Vec<String>,
    /// The window, s.
    pub window_s: u64,
    /// Now (unix ms).
    pub now_ms: i64,
}

/// Why a plan cannot be made as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The operator placed a VM where it does not fit or cannot go.
    #[error("{0}")]
    Placement(String),
}

/// The per-migration link speed the plan uses, bytes/s, and where it came from.
pub fn link_speed(input: &PlanInput) -> (u64, String) {
    let limits = &input.limits;
    let split = limits.link_budget_mib_s.map(|budget| {
        let slots = u64::from(link_slots(limits));
        (budget / slots.max(1)).max(1)
    });
    let (mib_s, basis) = match (limits.bandwidth_mib_s, split) {
        (Some(cap), Some(share)) if share < cap => (share, "the link budget, shared".to_owned()),
        (Some(cap), _) => (cap, "the drain's bandwidth limit".to_owned()),
        (None, Some(share)) => (share, "the link budget, shared".to_owned()),
        (None, None) => {
            let known: Vec<u64> = input
                .sources
                .iter()
                .filter_map(|s| input.past_link.get(s).copied())
                .collect();
            match known.iter().min() {
                Some(&bytes) => {
                    let names: Vec<&str> = input
                        .sources
                        .iter()
                        .filter(|s| input.past_link.contains_key(*s))
                        .map(String::as_str)
                        .collect();
                    (
                        (bytes / MIB).max(1),
                        format!("past migrations from {}", names.join(", ")),
                    )
                }
                None => (
                    ASSUMED_LINK_MIB_S,
                    "assumed: no bandwidth limit and no past migration says what the link carries"
                        .to_owned(),
                ),
            }
        }
    };
    (mib_s.saturating_mul(MIB), basis)
}

/// How many migrations may share one source→destination link at once.
pub fn link_slots(limits: &DrainLimits) -> u32 {
    limits
        .per_source
        .min(limits.per_destination)
        .min(limits.total)
        .max(1)
}

/// What the plan expects of one VM: its outlook, why, and how long its move takes, s.
pub fn outlook(
    vm: &VmFacts,
    link: u64,
    adaptive: bool,
    policy: &DrainPolicy,
) -> (Outlook, String, Option<u64>) {
    let link = link.max(1);
    // The first pass sends what the last move sent (zero pages cost almost nothing), or
    // at most all of the guest's memory.
    let first_bytes = vm
        .past
        .sent_bytes
        .unwrap_or(vm.memory_bytes)
        .min(vm.memory_bytes.max(1));
    let first_s = first_bytes.div_ceil(link);
    let link_words = format!("{} MiB/s", link / MIB);
    let Some(rate) = vm.dirty_rate.map(|r| r.bytes_per_s) else {
        return (
            Outlook::Unknown,
            format!(
                "not measured yet; {} at {link_words} take at least {first_s} s",
                size(first_bytes)
            ),
            Some(first_s.saturating_mul(2) + OVERHEAD_S),
        );
    };
    let share = rate as f64 / link as f64;
    let rate_words = format!("dirties {} MiB/s", rate / MIB);
    if share < STALL_SHARE {
        // Each pass resends what the guest dirtied during the one before: the passes
        // shrink geometrically, by `share` each.
        let total_s = (first_s as f64 / (1.0 - share)).ceil() as u64 + OVERHEAD_S;
        let how = if share <= QUICK_SHARE {
            "converges"
        } else {
            "converges, slowly"
        };
        return (
            Outlook::Converges,
            format!("{how}: it {rate_words} and the link carries {link_words}"),
            Some(total_s),
        );
    }
    let busy = format!("it {rate_words}, as fast as the link carries ({link_words})");
    let hit = vm.past.xbzrle_hit_pct;
    let rewrites = hit.is_some_and(|h| h >= XBZRLE_HELPS_PCT);
    let useless = hit.is_some_and(|h| h < XBZRLE_USELESS_PCT);
    // The adaptive preset starts a busy guest with xbzrle (unless it was no help last
    // time) and allows post-copy when the drain does.
    if adaptive && rewrites {
        return (
            Outlook::NeedsXbzrle,
            format!(
                "{busy}, but rewrites the same memory: xbzrle found {} % of its pages last time",
                hit.unwrap_or(0)
            ),
            Some(first_s.saturating_mul(3) / 2 + OVERHEAD_S),
        );
    }
    if adaptive && policy.allow_post_copy {
        let how = if useless {
            "xbzrle was no help last time"
        } else {
            "xbzrle first, which finishes it if it rewrites the same memory"
        };
        return (
            Outlook::NeedsPostCopy,
            format!("{busy}: pre-copy alone will not finish; {how}, else post-copy"),
            // The first pass, a few passes to be sure, then at most the guest's memory
            // again, fetched after it.
            Some(first_s.saturating_mul(5) / 2 + OVERHEAD_S),
        );
    }
    if adaptive && !useless {
        return (
            Outlook::NeedsXbzrle,
            format!(
                "{busy}: only xbzrle can finish it (post-copy is not allowed), if it rewrites the same memory; if not it stalls, is stopped before it wastes the window and tried again when quieter"
            ),
            Some(first_s.saturating_mul(3) / 2 + OVERHEAD_S),
        );
    }
    let why = if !adaptive {
        "the preset neither adapts nor allows post-copy"
    } else {
        "xbzrle was no help last time and post-copy is not allowed"
    };
    (
        Outlook::LikelyToStall,
        format!(
            "{busy}, and {why}: tried, stopped before it wastes the window, and tried again when it is quieter"
        ),
        None,
    )
}

/// The plan: a drain in state `running` that has not started (its id and creator are
/// the caller's to fill), or why the operator's placements cannot be kept.
pub fn plan(input: &PlanInput) -> Result<Drain, PlanError> {
    let (link, link_basis) = link_speed(input);
    let mut warnings = Vec::new();
    if link_basis.starts_with("assumed") {
        warnings.push(format!(
            "No link speed is known: the plan assumes {} MiB/s per migration. Set a bandwidth limit to plan with a known rate.",
            link / MIB
        ));
    }
    // Each VM with its outlook, in the plan's order.
    let mut items: Vec<DrainItem> = input
        .vms
        .iter()
        .map(|vm| {
            let (outlook, outlook_reason, predicted_s) =
                outlook(vm, link, input.adaptive, &input.policy);
            DrainItem {
                vm_uuid: vm.uuid.clone(),
                vm_name: vm.name.clone(),
                source: vm.host.clone(),
                destination: None,
                memory_bytes: vm.memory_bytes,
                dirty_rate: vm.dirty_rate,
                outlook,
                outlook_reason,
                predicted_s,
                predicted_start_s: None,
                state: ItemState::Pending,
                attempts: 0,
                migration_id: vm.migrating.clone(),
                migration_ids: vm.migrating.iter().cloned().collect(),
                reason: None,
                ended_at_ms: None,
                expected_at_ms: None,
                attempt: AttemptState::default(),
            }
        })
        .collect();
    items.sort_by_key(|item| order_key(input, item));

    // Rooms, counted as the plan places VMs.
    let mut rooms: BTreeMap<String, HostRoom> = input
        .destinations
        .iter()
        .filter_map(|name| input.hosts.iter().find(|h| &h.name == name))
        .map(|h| (h.name.clone(), room_of(h)))
        .collect();
    for (item, vm) in items
        .iter_mut()
        .map(|item| {
            let vm = input.vms.iter().find(|v| v.uuid == item.vm_uuid);
            (item, vm)
        })
        .filter_map(|(item, vm)| vm.map(|vm| (item, vm)))
    {
        if let Some(id) = &vm.migrating {
            item.state = ItemState::Migrating;
            item.reason = Some(format!("already migrating ({id}): the drain follows it"));
            continue;
        }
        if !vm.running {
            item.state = ItemState::Left;
            item.reason = Some(
                "not running: a live migration moves running guests only (move its definition with `virsh migrate --offline`)"
                    .into(),
            );
            continue;
        }
        if let Some(why) = &vm.refusal {
            item.state = ItemState::Left;
            item.reason = Some(why.clone());
            continue;
        }
        match input.placements.get(&vm.uuid) {
            Some(chosen) => {
                let Some(room) = rooms.get_mut(chosen) else {
                    return Err(PlanError::Placement(format!(
                        "{} cannot go to {chosen}: it is not one of the drain's destinations ({})",
                        vm.name,
                        input.destinations.join(", ")
                    )));
                };
                if room.room_bytes < vm.memory_bytes {
                    return Err(PlanError::Placement(format!(
                        "{} ({}) does not fit on {chosen}: {} of room left ({})",
                        vm.name,
                        size(vm.memory_bytes),
                        size(room.room_bytes),
                        room_words(room)
                    )));
                }
                take(room, vm.memory_bytes);
                item.destination = Some(chosen.clone());
            }
            None => {
                let best = rooms
                    .values_mut()
                    .filter(|r| r.room_bytes >= vm.memory_bytes)
                    .max_by(|a, b| a.room_bytes.cmp(&b.room_bytes).then(b.host.cmp(&a.host)));
                match best {
                    Some(room) => {
                        take(room, vm.memory_bytes);
                        item.destination = Some(room.host.clone());
                    }
                    None => {
                        let roomiest = rooms.values().max_by_key(|r| r.room_bytes);
                        let why = match roomiest {
                            Some(r) => format!(
                                "no destination has room: it needs {}, the most left is {} on {} ({})",
                                size(vm.memory_bytes),
                                size(r.room_bytes),
                                r.host,
                                room_words(r)
                            ),
                            None => "no destination to move it to".to_owned(),
                        };
                        warnings.push(format!("{}: {why}", vm.name));
                        item.state = ItemState::Left;
                        item.reason = Some(why);
                    }
                }
            }
        }
    }

    // A destination that gets nothing because it is too full says so.
    let smallest = items
        .iter()
        .filter(|i| i.state == ItemState::Pending || i.destination.is_some())
        .map(|i| i.memory_bytes)
        .min();
    for room in rooms.values() {
        if let Some(smallest) = smallest
            && room.planned_bytes == 0
            && room.room_bytes < smallest
        {
            warnings.push(format!(
                "{} receives nothing: {} of room ({}), and the smallest VM needs {}",
                room.host,
                size(room.room_bytes),
                room_words(room),
                size(smallest)
            ));
        }
    }

    let total = simulate(&mut items, &input.limits);
    let finishing = items
        .iter()
        .all(|i| i.state != ItemState::Pending || i.predicted_s.is_some());
    let predicted_total_s = finishing.then_some(total);
    if total > input.window_s {
        let late: Vec<&str> = items
            .iter()
            .filter(|i| {
                i.state == ItemState::Pending
                    && i.predicted_start_s
                        .zip(i.predicted_s)
                        .is_some_and(|(start, len)| start.saturating_add(len) > input.window_s)
            })
            .map(|i| i.vm_name.as_str())
            .collect();
        warnings.push(format!(
            "The window is too short: the plan takes about {} min, the window is {} min{}",
            total.div_ceil(60),
            input.window_s / 60,
            if late.is_empty() {
                String::new()
            } else {
                format!("; likely left behind: {}", late.join(", "))
            }
        ));
    }
    let stalling: Vec<&str> = items
        .iter()
        .filter(|i| i.state == ItemState::Pending && i.outlook == Outlook::LikelyToStall)
        .map(|i| i.vm_name.as_str())
        .collect();
    if !stalling.is_empty() {
        warnings.push(format!(
            "Likely to stall: {} (tried last, retried when quieter, else left on the host)",
            stalling.join(", ")
        ));
    }
    Ok(Drain {
        id: String::new(),
        hosts: input.sources.clone(),
        destinations: input.destinations.clone(),
        state: DrainState::Running,
        created_by: String::new(),
        created_at_ms: input.now_ms,
        ended_at_ms: None,
        deadline_ms: input
            .now_ms
            .saturating_add(i64::try_from(input.window_s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        preset: input.preset.clone(),
        limits: input.limits,
        policy: input.policy,
        items,
        predicted_total_s,
        eta_at_ms: None,
        warnings,
        rooms: rooms.into_values().collect(),
        link_mib_s: link / MIB,
        link_basis,
    })
}

/// The plan's order: the operator's first, then finishing VMs longest first, then those
/// likely to stall; ties by name.
fn order_key(input: &PlanInput, item: &DrainItem) -> (usize, u8, std::cmp::Reverse<u64>, String) {
    let chosen = input
        .order
        .iter()
        .position(|u| *u == item.vm_uuid)
        .unwrap_or(usize::MAX);
    let class = u8::from(item.outlook == Outlook::LikelyToStall);
    let length = item.predicted_s.unwrap_or(0);
    (
        chosen,
        class,
        std::cmp::Reverse(length),
        item.vm_name.clone(),
    )
}

/// A host's room before the plan puts anything on it.
pub fn room_of(host: &HostFacts) -> HostRoom {
    let by_free = host
        .free_bytes
        .map(|f| f.saturating_sub(host.reserve_bytes));
    let by_limit = host
        .guest_limit_bytes
        .map(|l| l.saturating_sub(host.guests_bytes));
    // Unknown free memory (not reported yet) is no room: never overcommit.
    let room = match (by_free, by_limit) {
        (Some(f), Some(l)) => f.min(l),
        (Some(f), None) => f,
        (None, _) => 0,
    };
    HostRoom {
        host: host.name.clone(),
        free_bytes: host.free_bytes,
        reserve_bytes: host.reserve_bytes,
        guest_limit_bytes: host.guest_limit_bytes,
        guests_bytes: host.guests_bytes,
        planned_bytes: 0,
        room_bytes: room,
    }
}

fn take(room: &mut HostRoom, bytes: u64) {
    room.planned_bytes = room.planned_bytes.saturating_add(bytes);
    room.room_bytes = room.room_bytes.saturating_sub(bytes);
}

/// "8.0 GiB free − 1.0 GiB reserve; limit 4.0 GiB of guests, 3.5 GiB used; 512 MiB planned".
pub fn room_words(room: &HostRoom) -> String {
    let mut parts = Vec::new();
    if let Some(free) = room.free_bytes {
        parts.push(format!(
            "{} free − {} reserve",
            size(free),
            size(room.reserve_bytes)
        ));
    } else {
        parts.push("free memory not known yet".to_owned());
    }
    if let Some(limit) = room.guest_limit_bytes {
        parts.push(format!(
            "guest limit {}, {} in use",
            size(limit),
            size(room.guests_bytes)
        ));
    }
    if room.planned_bytes > 0 {
        parts.push(format!("{} planned", size(room.planned_bytes)));
    }
    parts.join("; ")
}

/// Bytes in GiB or MiB, one decimal.
pub fn size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// Runs the plan's items (pending ones, in order) through a list schedule under the
/// limits, filling each item's predicted start; returns the predicted total, s. A move
/// that will not finish holds its slot for its first pass and [`STALL_GRACE_S`].
fn simulate(items: &mut [DrainItem], limits: &DrainLimits) -> u64 {
    // (end time, source, destination) of moves under way.
    let mut running: Vec<(u64, String, String)> = Vec::new();
    let mut now = 0u64;
    let mut end = 0u64;
    let mut queue: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].state == ItemState::Pending && items[i].destination.is_some())
        .collect();
    let slots = link_slots(limits);
    while !queue.is_empty() {
        running.retain(|(done, _, _)| *done > now);
        let mut started = Vec::new();
        for (pos, &i) in queue.iter().enumerate() {
            let item = &items[i];
            let Some(dest) = item.destination.as_deref() else {
                continue;
            };
            let out = running.iter().filter(|r| r.1 == item.source).count();
            let into = running.iter().filter(|r| r.2 == dest).count();
            let on_link = running
                .iter()
                .filter(|r| r.1 == item.source && r.2 == dest)
                .count();
            if running.len() >= limits.total.max(1) as usize
                || out >= limits.per_source.max(1) as usize
                || into >= limits.per_destination.max(1) as usize
                || on_link >= slots as usize
            {
                continue;
            }
            let holds = item.predicted_s.unwrap_or(STALL_GRACE_S);
            running.push((now + holds.max(1), item.source.clone(), dest.to_owned()));
            started.push((pos, i));
        }
        for &(_, i) in &started {
            items[i].predicted_start_s = Some(now);
            if items[i].predicted_s.is_some() {
                end = end.max(now + items[i].predicted_s.unwrap_or(0));
            }
        }
        for (pos, _) in started.into_iter().rev() {
            queue.remove(pos);
        }
        // On to the next end of a move.
        match running.iter().map(|r| r.0).filter(|t| *t > now).min() {
            Some(next) => now = next,
            None if queue.is_empty() => break,
            // Nothing runs and nothing could start: the limits admit nothing.
            None => break,
        }
    }
    end
}

#[cfg(test)]
mod tests;
