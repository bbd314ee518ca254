//! A job-statistics reading: the sample, the history to store, and the policy's turn.

use converge_api::{LeverChange, Levers, LiveEvent, MigrationState, TimeoutAction};

use super::{Ceiling, Change, FleetState, HistoryWrite};
use crate::fleet::record::MigrationRecord;
use crate::fleet::{Act, ActKind};
use crate::hypervisor::{SampleReport, raw_fields, sample_from};
use crate::policy::{self, Decision, PolicyInput};

impl FleetState {
    /// Applies a reading of `vm_uuid`'s outgoing migration from `host`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sample(&mut self, report: SampleReport, now_ms: i64) -> Vec<Change> {
        let SampleReport {
            host,
            vm_uuid,
            vm_name,
            stats,
            at,
            iteration_started,
            levers,
        } = report;
        let (host, vm_uuid, vm_name, stats) = (&*host, &*vm_uuid, &*vm_name, &stats);
        let Some((id, found_now)) = self.ensure_record(host, vm_uuid, vm_name, stats, now_ms)
        else {
            return Vec::new();
        };
        let sample = sample_from(stats, at);
        let incoming = self.incoming_host_of(vm_uuid, host);
        let ceiling = self.ceiling;
        let Some(record) = self.migrations.get_mut(&id) else {
            return Vec::new();
        };
        let was = record.migration.state;
        merge_levers(&mut record.migration.levers, levers);
        let mark = record.add_sample(sample.clone(), raw_fields(stats), iteration_started);
        if record.migration.destination.is_none() {
            record.migration.destination = incoming;
        }
        let store = record.store_decision(iteration_started.is_some());
        record.update_forecast();
        let mut acts = run_policy(record, now_ms);
        acts.extend(ceiling.and_then(|c| at_ceiling(record, c, now_ms)));
        // A migration found now is written at once: its samples' rows refer to it.
        let persist = found_now || was != record.migration.state;

        let mut changes = self.changed(&id, Some(sample.clone()), persist);
        if let (Some(mark), Some(Change::Publish(LiveEvent::Migration(update)))) =
            (mark, changes.first_mut())
        {
            update.iteration = Some(mark);
        }
        if let Some(mark) = mark {
            changes.push(Change::Persist(HistoryWrite::Iteration {
                migration_id: id.clone(),
                mark,
            }));
        }
        if store.thin {
            changes.push(Change::Persist(HistoryWrite::Thin {
                migration_id: id.clone(),
            }));
        }
        if store.store {
            changes.push(Change::Persist(HistoryWrite::Sample {
                migration_id: id,
                sample,
            }));
        }
        changes.extend(acts.into_iter().map(Change::Act));
        changes
    }
}

/// The ceiling's action, once, when a migration in pre-copy has run past it. (Post-copy
/// cannot be undone or sped up: it is left to finish.)
fn at_ceiling(record: &mut MigrationRecord, ceiling: Ceiling, now_ms: i64) -> Option<Act> {
    let m = &record.migration;
    let ran_ms = now_ms - m.started_at_ms;
    if record.ceiling_fired || m.state != MigrationState::Running || ran_ms < ceiling.max_ms {
        return None;
    }
    record.ceiling_fired = true;
    let postcopy_allowed = m.settings.as_ref().is_some_and(|s| s.capabilities.postcopy);
    let (kind, fallback) = match ceiling.action {
        TimeoutAction::Abort => (ActKind::Abort, ""),
        TimeoutAction::Pause => (ActKind::Pause, ""),
        TimeoutAction::PostCopy if postcopy_allowed => (ActKind::Lever(LeverChange::PostCopy), ""),
        TimeoutAction::PostCopy => (
            ActKind::Abort,
            " (post-copy was not allowed when it started, so: abort)",
        ),
    };
    let reason = format!(
        "ran {} s, past the server's ceiling for any migration of {} s \
         (migrations.max_duration_s){fallback}",
        ran_ms / 1000,
        ceiling.max_ms / 1000
    );
    Some(Act::by_policy(m, kind, reason))
}

/// Keeps the last known value of a lever whose read-back failed this time.
fn merge_levers(current: &mut Levers, read: Levers) {
    current.downtime_limit_ms = read.downtime_limit_ms.or(current.downtime_limit_ms);
    current.bandwidth_mib_s = read.bandwidth_mib_s.or(current.bandwidth_mib_s);
    current.xbzrle_cache_bytes = read.xbzrle_cache_bytes.or(current.xbzrle_cache_bytes);
}

/// The policy's turn after a reading: updates the countdown, returns what to do.
fn run_policy(record: &mut MigrationRecord, now_ms: i64) -> Vec<Act> {
    let m = &record.migration;
    let (Some(settings), Some(sample)) = (m.settings.clone(), m.last_sample.clone()) else {
        return Vec::new();
    };
    // Pre-copy only: after a switch to post-copy there is nothing left to decide.
    if m.state != MigrationState::Running || sample.mem_total_bytes == 0 {
        record.migration.deadline = None;
        return Vec::new();
    }
    let input = PolicyInput {
        now_ms,
        started_at_ms: m.started_at_ms,
        iteration: sample.iteration,
        mem_total_bytes: sample.mem_total_bytes,
        best_dirty: record.best_dirty(),
    };
    // The deadline's decisions say so; the adaptive ones carry their forecast already.
    let mut decisions: Vec<(Decision, &str)> =
        policy::decide(&settings, &mut record.policy, &input)
            .into_iter()
            .map(|d| (d, "deadline: "))
            .collect();
    decisions.extend(
        policy::adapt(
            &settings,
            &mut record.policy,
            record.migration.forecast.as_ref(),
            sample.iteration,
        )
        .into_iter()
        .map(|d| (d, "")),
    );
    record.migration.deadline = policy::pending(&settings, &record.policy, &input);
    let m = &record.migration;
    decisions
        .into_iter()
        .map(|(decision, prefix)| {
            let (kind, reason) = match decision {
                Decision::Lever { change, reason } => (ActKind::Lever(change), reason),
                Decision::Deadline { action, reason } => (
                    match action {
                        TimeoutAction::Abort => ActKind::Abort,
                        TimeoutAction::PostCopy => ActKind::Lever(LeverChange::PostCopy),
                        TimeoutAction::Pause => ActKind::Pause,
                    },
                    format!("{prefix}{reason}"),
                ),
            };
            Act::by_policy(m, kind, reason)
        })
        .collect()
}
