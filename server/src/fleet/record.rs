//! One migration attempt as the server keeps it: the wire summary plus its series.

use std::collections::VecDeque;

use converge_api::{
    ActionRecord, AdviceRecord, IterationMark, LeverChange, LeverMove, Migration, MigrationDetail,
    MigrationState, RawField, Sample,
};

use crate::policy::PolicyState;

/// Samples kept per migration: 30 minutes at the default 500 ms. When full, the older
/// half is thinned to every other sample, so a long migration keeps its whole shape.
pub(crate) const MAX_SAMPLES: usize = 3600;
/// Pass boundaries kept per migration.
const MAX_ITERATIONS: usize = 10_000;
/// Actions kept per migration (operators' and the policy's).
const MAX_ACTIONS: usize = 100;
/// Samples stored per migration in the database; past this the stored series is halved
/// and the spacing doubled, so a long migration keeps its whole shape in bounded space.
pub(crate) const MAX_STORED_SAMPLES: usize = 1800;
/// Spacing of stored samples at first, ms.
const FIRST_STORE_SPACING_MS: i64 = 2000;

/// A migration with what the server knows beyond its summary.
#[derive(Debug, Clone)]
pub(crate) struct MigrationRecord {
    /// The summary sent to clients.
    pub migration: Migration,
    samples: VecDeque<Sample>,
    iterations: Vec<IterationMark>,
    raw_job_stats: Vec<RawField>,
    /// An abort was requested: a failure of the migrate call then means "aborted".
    pub(crate) abort_requested: bool,
    /// Converge's own migrate call is still running: only its return decides the outcome.
    pub(crate) call_in_flight: bool,
    /// Lowest remaining memory seen at a pass boundary (after the first pass).
    best_boundary_remaining: Option<u64>,
    /// What the deadline policy has done so far.
    pub(crate) policy: PolicyState,
    /// The policy paused the guest: resume it on the destination once it arrives.
    pub(crate) paused_by_policy: bool,
    /// The server-wide ceiling has acted on it.
    pub(crate) ceiling_fired: bool,
    /// Converge asked for a switch to post-copy, or a pause: the events that follow are
    /// its own doing, not someone else's.
    pub(crate) asked_postcopy: bool,
    pub(crate) asked_pause: bool,
    /// The guest's dirty rate as libvirt measured it before this migration, bytes/s.
    pub(crate) measured_dirty_rate: Option<converge_api::DirtyRate>,
    /// When a sample was last written to the history, and how far apart they are.
    last_stored_at_ms: i64,
    store_spacing_ms: i64,
    stored_samples: usize,
}

/// What to write to the history after a sample.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreSample {
    /// Write this sample.
    pub(crate) store: bool,
    /// Halve the stored series first.
    pub(crate) thin: bool,
}

impl MigrationRecord {
    pub(crate) fn new(migration: Migration) -> Self {
        Self {
            migration,
            samples: VecDeque::new(),
            iterations: Vec::new(),
            raw_job_stats: Vec::new(),
            abort_requested: false,
            call_in_flight: false,
            best_boundary_remaining: None,
            policy: PolicyState::default(),
            paused_by_policy: false,
            ceiling_fired: false,
            asked_postcopy: false,
            asked_pause: false,
            measured_dirty_rate: None,
            last_stored_at_ms: i64::MIN,
            store_spacing_ms: FIRST_STORE_SPACING_MS,
            stored_samples: 0,
        }
    }

    /// The smallest dirty set at a pass boundary so far.
    pub(crate) fn best_dirty(&self) -> Option<u64> {
        self.best_boundary_remaining
    }

    /// Whether the sample just added goes to the history (one every few seconds, and
    /// every one read at a pass boundary).
    /// The latest sample, if the history does not have it yet (marked as stored now).
    pub(crate) fn take_unstored_last(&mut self) -> Option<Sample> {
        let last = self.migration.last_sample.clone()?;
        if last.at_ms == self.last_stored_at_ms {
            return None;
        }
        self.last_stored_at_ms = last.at_ms;
        self.stored_samples += 1;
        Some(last)
    }

    pub(crate) fn store_decision(&mut self, boundary: bool) -> StoreSample {
        let Some(at) = self.migration.last_sample.as_ref().map(|s| s.at_ms) else {
            return StoreSample::default();
        };
        if !boundary && at < self.last_stored_at_ms.saturating_add(self.store_spacing_ms) {
            return StoreSample::default();
        }
        let thin = self.stored_samples >= MAX_STORED_SAMPLES;
        if thin {
            self.stored_samples /= 2;
            self.store_spacing_ms *= 2;
        }
        self.stored_samples += 1;
        self.last_stored_at_ms = at;
        StoreSample { store: true, thin }
    }

    /// Adds an action to the migration's list (bounded).
    pub(crate) fn push_action(&mut self, action: ActionRecord) {
        let actions = &mut self.migration.actions;
        if actions.len() == MAX_ACTIONS {
            actions.remove(0);
        }
        actions.push(action);
    }

    /// Appends a sample. A sample read because a pass began (`iteration_started`) opens a
    /// new pass boundary. Returns the boundary if it was opened or its value changed.
    ///
    /// A boundary's value is the dirty set its pass has to send: the highest remaining
    /// memory of the pass's ordinary readings. The reading taken at the iteration event
    /// itself does not count: QEMU announces the pass before it syncs the dirty bitmap,
    /// so that reading still shows the tail of the previous pass (seen in the lab as a
    /// dip to ~0 at every boundary).
    pub(crate) fn add_sample(
        &mut self,
        sample: Sample,
        raw: Vec<RawField>,
        iteration_started: Option<u32>,
    ) -> Option<IterationMark> {
        let mut changed = None;
        if let Some(iteration) = iteration_started {
            if self.iterations.len() == MAX_ITERATIONS {
                self.iterations.remove(0);
            }
            // The first pass has nothing before it: its announcement reading is its start.
            let first = iteration <= 1 && sample.iteration <= 1;
            let mark = IterationMark {
                iteration,
                at_ms: sample.at_ms,
                elapsed_ms: sample.elapsed_ms,
                mem_remaining_bytes: if first { sample.mem_remaining_bytes } else { 0 },
            };
            self.iterations.push(mark);
            changed = Some(mark);
        } else if let Some(last) = self.iterations.last_mut()
            && last.iteration == sample.iteration
            && sample.mem_remaining_bytes > last.mem_remaining_bytes
        {
            last.mem_remaining_bytes = sample.mem_remaining_bytes;
            changed = Some(*last);
        }
        self.best_boundary_remaining = self
            .iterations
            .iter()
            .filter(|m| m.iteration >= 2 && m.mem_remaining_bytes > 0)
            .map(|m| m.mem_remaining_bytes)
            .min();
        if let Some(pct) = progress_pct(&sample, self.best_boundary_remaining) {
            self.migration.progress_pct = Some(pct);
        }
        if self.samples.len() >= MAX_SAMPLES {
            thin_older_half(&mut self.samples);
        }
        self.samples.push_back(sample.clone());
        if let Some(t) = sample.throttle_pct {
            let max = self.migration.max_throttle_pct.get_or_insert(t);
            *max = (*max).max(t);
        }
        self.migration.last_sample = Some(sample);
        self.raw_job_stats = raw;
        if self.migration.state == MigrationState::Starting {
            self.migration.state = MigrationState::Running;
        }
        changed
    }

    /// Recomputes the forecast from the series (and clears it once over).
    pub(crate) fn update_forecast(&mut self) {
        let m = &self.migration;
        let caps = m.settings.as_ref().map(|s| s.capabilities.clone());
        let samples = self.samples.make_contiguous();
        let input = crate::forecast::Input {
            state: m.state,
            samples: &samples[samples.len().saturating_sub(40)..],
            boundaries: &self.iterations,
            downtime_limit_ms: m.levers.downtime_limit_ms.unwrap_or(300),
            caps: caps.as_ref(),
            bandwidth_limit_mib_s: m.levers.bandwidth_mib_s,
            measured: self.measured_dirty_rate,
        };
        self.migration.forecast = crate::forecast::forecast(&input);
        if let Some(at) = self.migration.last_sample.as_ref().map(|s| s.at_ms) {
            self.note_advice(at);
        }
    }

    /// Adds the forecast's advice to the migration's record of it: one entry per kind of
    /// advice (a lever, or a restart), following its latest value until it is applied.
    fn note_advice(&mut self, now_ms: i64) {
        let Some(forecast) = &self.migration.forecast else {
            return;
        };
        let log = &mut self.migration.advice_log;
        for advice in &forecast.advice {
            let key = advice_key(&advice.action, advice.lever);
            let open = log
                .iter()
                .rposition(|r| r.applied_at_ms.is_none() && advice_key(&r.action, r.lever) == key);
            match open {
                Some(i) => {
                    let record = &mut log[i];
                    record.last_at_ms = now_ms;
                    record.action.clone_from(&advice.action);
                    record.lever = advice.lever;
                }
                None if log.len() < MAX_ADVICE_LOG => log.push(AdviceRecord {
                    action: advice.action.clone(),
                    lever: advice.lever,
                    first_at_ms: now_ms,
                    last_at_ms: now_ms,
                    applied_at_ms: None,
                    applied_by: None,
                    outcome: None,
                }),
                None => {}
            }
        }
    }

    /// A lever was moved: marks the advice it carries out as applied (the advised value or
    /// more of it; any switch to post-copy).
    pub(crate) fn note_applied(&mut self, change: LeverChange, actor: &str, at_ms: i64) {
        let moved = LeverMove::from(change);
        let advised = self.migration.advice_log.iter_mut().rev().find(|r| {
            r.applied_at_ms.is_none()
                && r.lever.is_some_and(|l| {
                    l.lever == moved.lever && moved.value.unwrap_or(0) >= l.value.unwrap_or(0)
                })
        });
        if let Some(record) = advised {
            record.applied_at_ms = Some(at_ms);
            record.applied_by = Some(actor.to_owned());
        }
    }

    /// The migration ended: says what came of each advice that was applied.
    pub(crate) fn note_outcome(&mut self, state: MigrationState, at_ms: i64) {
        for record in &mut self.migration.advice_log {
            if let (Some(applied), None) = (record.applied_at_ms, &record.outcome) {
                let after = (at_ms.saturating_sub(applied) as f64 / 1000.0).round();
                record.outcome = Some(format!("{} {after} s later", state.wire_name()));
            }
        }
    }

    /// The migration with its series.
    pub(crate) fn detail(&self) -> MigrationDetail {
        MigrationDetail {
            migration: self.migration.clone(),
            samples: self.samples.iter().cloned().collect(),
            iterations: self.iterations.clone(),
            raw_job_stats: self.raw_job_stats.clone(),
        }
    }
}

/// Advice kept per migration, at most.
const MAX_ADVICE_LOG: usize = 16;

/// What makes two advices the same kind: the lever they move, or their words up to the
/// first figure ("Abort, then start again with an xbzrle cache of ").
fn advice_key(action: &str, lever: Option<LeverMove>) -> String {
    match lever {
        Some(l) => l.lever.wire_name().to_owned(),
        None => action
            .split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or(action)
            .to_owned(),
    }
}

/// Share of memory at the destination and clean, 0–100. During the first pass, the share
/// copied so far. After it, one minus the smallest dirty set any pass has had to send:
/// raw readings saw-tooth within every pass (remaining falls to ~0, then the next pass
/// starts with the dirty set again), which would make a progress bar jump back and forth.
/// From the second pass on it never falls; it drops once, when the first pass ends and
/// the guest's dirty set becomes known, and it stalls when the guest dirties memory as
/// fast as the link carries it. `None` when there is nothing new to say.
pub(crate) fn progress_pct(sample: &Sample, best_boundary_remaining: Option<u64>) -> Option<f64> {
    let total = sample.mem_total_bytes;
    if total == 0 {
        return None;
    }
    let remaining = if sample.iteration <= 1 {
        sample.mem_remaining_bytes
    } else {
        best_boundary_remaining?
    };
    let clean = total.saturating_sub(remaining) as f64;
    Some((100.0 * clean / total as f64).clamp(0.0, 100.0))
}

fn thin_older_half(samples: &mut VecDeque<Sample>) {
    let half = samples.len() / 2;
    let mut index = 0;
    samples.retain(|_| {
        let keep = index >= half || index % 2 == 0;
        index += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(iteration: u32, remaining: u64) -> Sample {
        Sample {
            iteration,
            mem_total_bytes: 1000,
            mem_remaining_bytes: remaining,
            ..Sample::default()
        }
    }

    fn record() -> MigrationRecord {
        MigrationRecord::new(Migration::begun(
            "m".into(),
            "u".into(),
            "vm".into(),
            "a".into(),
            MigrationState::Starting,
            0,
        ))
    }

    fn advised(advice: &[(&str, Option<LeverChange>)]) -> Option<converge_api::Forecast> {
        let mut f = converge_api::Forecast::new(converge_api::Verdict::WillNotConverge, "");
        f.advice = advice
            .iter()
            .map(|(action, lever)| converge_api::Advice {
                lever: lever.map(LeverMove::from),
                action: (*action).into(),
                effect: String::new(),
            })
            .collect();
        Some(f)
    }

    #[test]
    fn advice_is_recorded_once_per_kind_with_what_came_of_it() {
        let mut r = record();
        let raise = |ms| Some(LeverChange::DowntimeLimit { ms });
        r.migration.forecast = advised(&[
            ("Raise the downtime limit to 300 ms", raise(300)),
            (
                "Abort, then start again with an xbzrle cache of 128 MiB",
                None,
            ),
        ]);
        r.note_advice(1_000);
        // A reading later the same advice with new figures: the same entries, updated.
        r.migration.forecast = advised(&[
            ("Raise the downtime limit to 350 ms", raise(350)),
            (
                "Abort, then start again with an xbzrle cache of 256 MiB",
                None,
            ),
        ]);
        r.note_advice(1_500);
        let log = &r.migration.advice_log;
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0].action, "Raise the downtime limit to 350 ms");
        assert_eq!((log[0].first_at_ms, log[0].last_at_ms), (1_000, 1_500));
        assert_eq!(
            log[1].action,
            "Abort, then start again with an xbzrle cache of 256 MiB"
        );

        // Less than advised is not the advice applied; the advised value (or more) is.
        r.note_applied(LeverChange::DowntimeLimit { ms: 200 }, "ada", 1_800);
        assert_eq!(r.migration.advice_log[0].applied_at_ms, None);
        r.note_applied(LeverChange::DowntimeLimit { ms: 400 }, "ada", 2_000);
        r.note_outcome(MigrationState::Completed, 4_000);
        let log = &r.migration.advice_log;
        assert_eq!(log[0].applied_at_ms, Some(2_000));
        assert_eq!(log[0].applied_by.as_deref(), Some("ada"));
        assert_eq!(log[0].outcome.as_deref(), Some("completed 2 s later"));
        assert_eq!(log[1].outcome, None, "not applied: nothing to say of it");
    }

    #[test]
    fn progress_follows_the_first_pass_then_the_smallest_dirty_set() {
        let mut r = record();
        r.add_sample(sample(1, 900), vec![], Some(1));
        assert_eq!(r.migration.progress_pct, Some(10.0));
        assert_eq!(r.migration.state, MigrationState::Running);
        r.add_sample(sample(1, 30), vec![], None);
        assert_eq!(r.migration.progress_pct, Some(97.0));
        // Pass 2 is announced with the previous pass's tail still showing: ignored.
        let mark = r.add_sample(sample(2, 5), vec![], Some(2)).unwrap();
        assert_eq!(mark.mem_remaining_bytes, 0);
        assert_eq!(r.migration.progress_pct, Some(97.0), "nothing new yet");
        // The first ordinary reading shows the dirty set: 250 of 1000.
        let mark = r.add_sample(sample(2, 250), vec![], None).unwrap();
        assert_eq!(mark.mem_remaining_bytes, 250);
        assert_eq!(r.migration.progress_pct, Some(75.0));
        // The pass drains: mid-pass readings change nothing.
        assert_eq!(r.add_sample(sample(2, 40), vec![], None), None);
        assert_eq!(r.migration.progress_pct, Some(75.0));
        // A worse pass 3 does not pull it back; a better pass 4 moves it on.
        r.add_sample(sample(3, 2), vec![], Some(3));
        r.add_sample(sample(3, 400), vec![], None);
        assert_eq!(r.migration.progress_pct, Some(75.0));
        r.add_sample(sample(4, 1), vec![], Some(4));
        r.add_sample(sample(4, 50), vec![], None);
        assert_eq!(r.migration.progress_pct, Some(95.0));
        let marks: Vec<u64> = r
            .detail()
            .iterations
            .iter()
            .map(|m| m.mem_remaining_bytes)
            .collect();
        assert_eq!(marks, vec![900, 250, 400, 50]);
    }

    #[test]
    fn the_history_keeps_one_sample_every_few_seconds_and_every_boundary() {
        let mut r = record();
        let mut stored = 0;
        for i in 0..20 {
            let mut s = sample(1, 500);
            s.at_ms = i * 500;
            r.add_sample(s, vec![], None);
            stored += usize::from(r.store_decision(false).store);
        }
        assert_eq!(stored, 5, "at 0, 2, 4, 6 and 8 s: every 2 s");
        let mut s = sample(2, 100);
        s.at_ms = 9_600;
        r.add_sample(s, vec![], Some(2));
        assert!(r.store_decision(true).store, "a boundary is always stored");
    }

    #[test]
    fn the_stored_history_is_halved_when_full() {
        let mut r = record();
        let mut thinned = 0;
        for i in 0..(MAX_STORED_SAMPLES as i64 * 3) {
            let mut s = sample(1, 500);
            s.at_ms = i * 100_000;
            r.add_sample(s, vec![], None);
            let decision = r.store_decision(false);
            thinned += usize::from(decision.thin);
            assert!(r.stored_samples <= MAX_STORED_SAMPLES);
        }
        assert!(thinned >= 2, "halved {thinned} times");
    }

    #[test]
    fn samples_stay_bounded_and_keep_the_newest() {
        let mut r = record();
        for i in 0..(MAX_SAMPLES as u64 * 3) {
            r.add_sample(sample(1, 1000 - i % 1000), vec![], None);
        }
        let detail = r.detail();
        assert!(detail.samples.len() <= MAX_SAMPLES);
        assert_eq!(detail.samples.last(), r.migration.last_sample.as_ref());
    }
}
