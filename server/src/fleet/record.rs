//! One migration attempt as the server keeps it: the wire summary plus its series.

use std::collections::VecDeque;

use converge_api::{IterationMark, Migration, MigrationDetail, MigrationState, Sample};

/// Samples kept per migration: 30 minutes at the default 500 ms. When full, the older
/// half is thinned to every other sample, so a long migration keeps its whole shape.
pub(crate) const MAX_SAMPLES: usize = 3600;
/// Pass boundaries kept per migration.
const MAX_ITERATIONS: usize = 10_000;

/// A migration with what the server knows beyond its summary.
#[derive(Debug, Clone)]
pub(crate) struct MigrationRecord {
    /// The summary sent to clients.
    pub migration: Migration,
    samples: VecDeque<Sample>,
    iterations: Vec<IterationMark>,
    raw_job_stats: Vec<(String, String)>,
    /// An abort was requested: a failure of the migrate call then means "aborted".
    pub(crate) abort_requested: bool,
    /// Converge's own migrate call is still running: only its return decides the outcome.
    pub(crate) call_in_flight: bool,
    /// Lowest remaining memory seen at a pass boundary (after the first pass).
    best_boundary_remaining: Option<u64>,
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
        }
    }

    /// Appends a sample (and a boundary, when the sample was read at one).
    pub(crate) fn add_sample(
        &mut self,
        sample: Sample,
        raw: Vec<(String, String)>,
        iteration_started: Option<u32>,
    ) -> Option<IterationMark> {
        let mark = iteration_started.map(|iteration| IterationMark {
            iteration,
            at_ms: sample.at_ms,
            elapsed_ms: sample.elapsed_ms,
            mem_remaining_bytes: sample.mem_remaining_bytes,
        });
        if let Some(mark) = mark {
            if self.iterations.len() == MAX_ITERATIONS {
                self.iterations.remove(0);
            }
            self.iterations.push(mark);
            if mark.iteration >= 2 {
                self.best_boundary_remaining = Some(
                    self.best_boundary_remaining
                        .map_or(mark.mem_remaining_bytes, |b| {
                            b.min(mark.mem_remaining_bytes)
                        }),
                );
            }
        }
        if self.samples.len() >= MAX_SAMPLES {
            thin_older_half(&mut self.samples);
        }
        self.migration.progress_pct = progress_pct(&sample, self.best_boundary_remaining)
            .map(|p| p.max(self.migration.progress_pct.unwrap_or(0.0)));
        self.samples.push_back(sample.clone());
        self.migration.last_sample = Some(sample);
        self.raw_job_stats = raw;
        if self.migration.state == MigrationState::Starting {
            self.migration.state = MigrationState::Running;
        }
        mark
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

/// Share of memory sent, 0–100. During the first pass remaining memory only falls, so it
/// is used directly; after that, the lowest remaining memory at any pass boundary — the
/// smallest dirty set the migration has got down to. Raw samples saw-tooth within each
/// pass and would make progress jump back and forth.
pub(crate) fn progress_pct(sample: &Sample, best_boundary_remaining: Option<u64>) -> Option<f64> {
    let total = sample.mem_total_bytes;
    if total == 0 {
        return None;
    }
    let remaining = match best_boundary_remaining {
        Some(best) if sample.iteration >= 2 => best,
        _ => sample.mem_remaining_bytes,
    };
    let sent = total.saturating_sub(remaining) as f64;
    Some((100.0 * sent / total as f64).clamp(0.0, 100.0))
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
        MigrationRecord::new(Migration {
            id: "m".into(),
            vm_uuid: "u".into(),
            vm_name: "vm".into(),
            source: "a".into(),
            destination: Some("b".into()),
            state: MigrationState::Starting,
            started_at_ms: 0,
            ended_at_ms: None,
            started_by: None,
            bandwidth_mib_s: None,
            downtime_limit_ms: None,
            progress_pct: None,
            last_sample: None,
            final_stats: None,
            error: None,
        })
    }

    #[test]
    fn progress_follows_the_first_pass_then_the_best_boundary() {
        let mut r = record();
        r.add_sample(sample(1, 900), vec![], Some(1));
        assert_eq!(r.migration.progress_pct, Some(10.0));
        assert_eq!(r.migration.state, MigrationState::Running);
        r.add_sample(sample(1, 300), vec![], None);
        assert_eq!(r.migration.progress_pct, Some(70.0));
        // Pass 2 starts with 200 left: 80 %.
        r.add_sample(sample(2, 200), vec![], Some(2));
        assert_eq!(r.migration.progress_pct, Some(80.0));
        // Mid-pass readings and a worse pass 3 do not pull it back.
        r.add_sample(sample(2, 600), vec![], None);
        r.add_sample(sample(3, 400), vec![], Some(3));
        assert_eq!(r.migration.progress_pct, Some(80.0));
        // A better pass moves it on.
        r.add_sample(sample(4, 50), vec![], Some(4));
        assert_eq!(r.migration.progress_pct, Some(95.0));
        assert_eq!(r.detail().iterations.len(), 4);
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
