//! A running drain's ETA and each waiting VM's expected start: the plan's list schedule,
//! run again from where the drain stands.

use converge_api::{Drain, ItemState};

use super::super::plan::STALL_GRACE_S;
use super::ROUND_MS;

/// The ETA of a running drain and the expected start of each VM still to go, from the
/// predicted lengths, under the limits (rounded so that they do not move at every step).
pub(super) fn estimate(drain: &mut Drain, now_ms: i64) {
    if !drain.state.is_active() {
        drain.eta_at_ms = None;
        for item in &mut drain.items {
            item.expected_at_ms = None;
        }
        return;
    }
    // Running moves hold their slots for what their prediction has left (at least a
    // few seconds); waiting VMs go after the pending ones.
    let mut queue: Vec<usize> = (0..drain.items.len())
        .filter(|&i| drain.items[i].state == ItemState::Pending)
        .chain((0..drain.items.len()).filter(|&i| drain.items[i].state == ItemState::Waiting))
        .collect();
    let mut busy: Vec<(i64, String, String)> = drain
        .items
        .iter()
        .filter(|i| i.state == ItemState::Migrating)
        .map(|i| {
            let began = i.attempt.started_at_ms.unwrap_or(now_ms);
            let length = i.predicted_s.unwrap_or(STALL_GRACE_S) as i64 * 1000;
            (
                (began + length).max(now_ms + 5000),
                i.source.clone(),
                i.destination.clone().unwrap_or_default(),
            )
        })
        .collect();
    let limits = drain.limits;
    let mut t = now_ms;
    let mut end = busy.iter().map(|b| b.0).max().unwrap_or(now_ms);
    let mut finishing = drain
        .items
        .iter()
        .filter(|i| !i.state.is_final())
        .all(|i| i.predicted_s.is_some());
    let mut guard = 0;
    while !queue.is_empty() && guard < 10_000 {
        guard += 1;
        busy.retain(|b| b.0 > t);
        let mut started = Vec::new();
        for (pos, &i) in queue.iter().enumerate() {
            let item = &drain.items[i];
            let dest = item.destination.clone().unwrap_or_default();
            let out = busy.iter().filter(|b| b.1 == item.source).count();
            let into = busy.iter().filter(|b| b.2 == dest).count();
            if busy.len() >= limits.total.max(1) as usize
                || out >= limits.per_source.max(1) as usize
                || into >= limits.per_destination.max(1) as usize
            {
                continue;
            }
            let length = item.predicted_s.unwrap_or(STALL_GRACE_S) as i64 * 1000;
            busy.push((t + length.max(1000), item.source.clone(), dest));
            started.push((pos, i, t, t + length));
        }
        for &(_, i, at, done) in &started {
            drain.items[i].expected_at_ms = Some(round(at));
            if drain.items[i].predicted_s.is_some() {
                end = end.max(done);
            } else {
                finishing = false;
            }
        }
        for (pos, _, _, _) in started.into_iter().rev() {
            queue.remove(pos);
        }
        match busy.iter().map(|b| b.0).filter(|x| *x > t).min() {
            Some(next) => t = next,
            None => break,
        }
    }
    drain.eta_at_ms = finishing.then_some(round(end.min(drain.deadline_ms.max(now_ms))));
}

fn round(ms: i64) -> i64 {
    (ms + ROUND_MS - 1) / ROUND_MS * ROUND_MS
}
