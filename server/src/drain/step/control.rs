//! What operators do to a running drain: pause, resume, cancel; skip a VM, move one to
//! the front.

use converge_api::{Drain, DrainItem, DrainState, ItemState};

use super::{Command, abort_once, leave};

/// Pauses, resumes or cancels a drain; `Err` with the reason when it cannot. Cancelling
/// leaves every VM that has not started where it is; the runner aborts the running ones.
pub fn control(drain: &mut Drain, to: DrainState, now_ms: i64) -> Result<(), String> {
    use DrainState::{Cancelled, Cancelling, Done, Paused, Running};
    match (drain.state, to) {
        (Done | Cancelled, _) => Err(format!(
            "drain {} is over ({}); nothing to change",
            drain.id,
            drain.state.wire_name()
        )),
        (Cancelling, _) => Err(format!("drain {} is being cancelled", drain.id)),
        (Running, Paused) | (Paused, Running) => {
            drain.state = to;
            Ok(())
        }
        (Running | Paused, Cancelling) => {
            drain.state = Cancelling;
            for item in &mut drain.items {
                if matches!(item.state, ItemState::Pending | ItemState::Waiting) {
                    let source = item.source.clone();
                    leave(
                        item,
                        now_ms,
                        format!("the drain was cancelled before its turn; it runs on {source}"),
                    );
                }
            }
            Ok(())
        }
        (from, to) => Err(format!(
            "drain {} is {}; it cannot be made {}",
            drain.id,
            from.wire_name(),
            to.wire_name()
        )),
    }
}

/// Takes a VM out of the drain (returns an abort when its migration runs), or moves it to
/// the front of the queue.
pub fn skip(drain: &mut Drain, vm_uuid: &str, now_ms: i64) -> Result<Vec<Command>, String> {
    let id = drain.id.clone();
    let item = find(drain, vm_uuid)?;
    let mut commands = Vec::new();
    match item.state {
        ItemState::Pending | ItemState::Waiting => {
            item.state = ItemState::Skipped;
            item.reason = Some("skipped by an operator; it stays on its host".into());
            item.ended_at_ms = Some(now_ms);
            item.expected_at_ms = None;
        }
        ItemState::Migrating => {
            let Some(mid) = item.migration_id.clone() else {
                return Err(format!(
                    "{} is starting its move; skip it once it runs",
                    item.vm_name
                ));
            };
            // Skipped once the abort ends it (moved, should it finish first).
            item.attempt.skip_requested = true;
            abort_once(
                item,
                &mid,
                format!("skipped by an operator in drain {id}"),
                &mut commands,
            );
        }
        state => {
            return Err(format!(
                "{} is already {}; there is nothing to skip",
                item.vm_name,
                state.wire_name()
            ));
        }
    }
    Ok(commands)
}

/// Moves a waiting or pending VM to the front of the queue (it goes next, or as soon as
/// it is quiet enough when it waits for that).
pub fn forward(drain: &mut Drain, vm_uuid: &str) -> Result<(), String> {
    let item = find(drain, vm_uuid)?;
    if !matches!(item.state, ItemState::Pending | ItemState::Waiting) {
        return Err(format!(
            "{} is {}; only a VM waiting for its turn can be moved forward",
            item.vm_name,
            item.state.wire_name()
        ));
    }
    if item.state == ItemState::Waiting {
        // The operator says: now.
        item.state = ItemState::Pending;
        item.reason = Some("moved forward by an operator".into());
    }
    let Some(pos) = drain.items.iter().position(|i| i.vm_uuid == vm_uuid) else {
        return Err("no such VM in the drain".into());
    };
    let item = drain.items.remove(pos);
    drain.items.insert(0, item);
    Ok(())
}

fn find<'a>(drain: &'a mut Drain, vm_uuid: &str) -> Result<&'a mut DrainItem, String> {
    let id = drain.id.clone();
    drain
        .items
        .iter_mut()
        .find(|i| i.vm_uuid == vm_uuid)
        .ok_or_else(|| format!("VM {vm_uuid} is not part of drain {id}"))
}
