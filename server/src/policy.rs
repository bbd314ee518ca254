//! Deadline policy and downtime stepping: pure functions of a migration's settings and
//! what has happened so far, so live decisions and "what if" previews share one code.
//!
//! - The completion timeout is `per-GiB × guest GiB`, capped (Nova's 800 s/GiB alone gives
//!   a 16 GiB VM 12,800 s, long past a 1-hour identity token).
//! - The stall timeout watches the smallest dirty set seen at a pass boundary, not raw
//!   readings: remaining memory falls to ~0 within every pass and would look like progress.
//! - Downtime steps go by time (optionally per GiB, as Nova's) or by passes (as oVirt's).

mod adaptive;

use converge_api::{
    DowntimeSteps, Growth, LeverChange, MigrationSettings, PendingDeadline, TimeoutAction,
};

pub use adaptive::{StartFacts, adapt, adapt_start};

const GIB: f64 = (1u64 << 30) as f64;
/// A dirty set counts as shrinking only when it falls by at least this share (percent):
/// pass-to-pass noise of a stuck migration must not keep restarting the stall clock.
const STALL_MIN_IMPROVEMENT_PCT: u64 = 5;

/// What the policy remembers about one migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// The downtime step applied last (0 = the start value).
    pub step: u32,
    /// A deadline has fired; the policy is done.
    pub fired: bool,
    /// The dirty set the stall clock last restarted at, bytes.
    pub best_dirty: Option<u64>,
    /// When it last shrank (unix ms); during the first pass, the last reading.
    pub improved_at_ms: i64,
    /// Adaptive: the downtime limit was raised on the forecast's advice.
    pub raised_downtime: bool,
    /// Adaptive: the pass since which the forecast has said "will not converge".
    pub hopeless_since: Option<u32>,
}

/// What the policy looks at, at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyInput {
    /// Now (unix ms).
    pub now_ms: i64,
    /// When the migration started (unix ms).
    pub started_at_ms: i64,
    /// Current pre-copy pass.
    pub iteration: u32,
    /// Guest memory, bytes.
    pub mem_total_bytes: u64,
    /// Smallest dirty set at a pass boundary so far, bytes.
    pub best_dirty: Option<u64>,
}

/// What the policy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Move a lever.
    Lever {
        /// Which, to what.
        change: LeverChange,
        /// Why, in words.
        reason: String,
    },
    /// A deadline fired.
    Deadline {
        /// What to do.
        action: TimeoutAction,
        /// Why, in words, with the numbers.
        reason: String,
    },
}

/// The completion timeout for a guest of `mem_total_bytes`, seconds.
pub fn completion_timeout_s(settings: &MigrationSettings, mem_total_bytes: u64) -> Option<u64> {
    let d = &settings.deadline;
    let gib = mem_total_bytes as f64 / GIB;
    let scaled = d
        .completion_s_per_gib
        .map(|s| (s as f64 * gib).round() as u64);
    match (scaled, d.completion_max_s) {
        (Some(s), Some(max)) => Some(s.min(max)),
        (s, max) => s.or(max),
    }
}

/// The number of the last step of `steps`.
pub fn last_step(steps: &DowntimeSteps) -> u32 {
    match steps.growth {
        Growth::Linear => steps.steps.unwrap_or(1).max(1),
        Growth::Double => {
            let mut k = 0;
            let mut value = steps.start_ms.max(1);
            while value < steps.max_ms && k < 64 {
                value = value.saturating_mul(2);
                k += 1;
            }
            k
        }
    }
}

/// The downtime limit at step `k`, ms: from `start_ms` (k = 0) to `max_ms` (last step).
pub fn step_value(steps: &DowntimeSteps, k: u32) -> u64 {
    let k = k.min(last_step(steps));
    let (start, max) = (steps.start_ms, steps.max_ms.max(steps.start_ms));
    match steps.growth {
        Growth::Linear => {
            let n = u64::from(last_step(steps));
            start + (max - start) * u64::from(k) / n
        }
        Growth::Double => start.saturating_mul(1u64 << k.min(63)).min(max),
    }
}

/// The step that is due at this reading.
pub fn due_step(steps: &DowntimeSteps, input: &PolicyInput) -> u32 {
    let k = if let Some(every) = steps.every_iterations {
        input.iteration.saturating_sub(1) / every.max(1)
    } else if let Some(interval_s) = steps.every_s.map(|s| s as f64).or_else(|| {
        steps
            .every_s_per_gib
            .map(|s| s as f64 * input.mem_total_bytes as f64 / GIB)
    }) {
        let elapsed_s = (input.now_ms - input.started_at_ms).max(0) as f64 / 1000.0;
        if interval_s <= 0.0 {
            0
        } else {
            (elapsed_s / interval_s).floor().min(f64::from(u32::MAX)) as u32
        }
    } else {
        0
    };
    k.min(last_step(steps))
}

/// Decides what to do at this reading and updates `state`. Each step is applied once,
/// and a deadline fires at most once.
pub fn decide(
    settings: &MigrationSettings,
    state: &mut PolicyState,
    input: &PolicyInput,
) -> Vec<Decision> {
    let mut out = Vec::new();
    if state.fired {
        return out;
    }
    if let Some(steps) = &settings.downtime_steps {
        let due = due_step(steps, input);
        if due > state.step {
            let (from, to) = (step_value(steps, state.step), step_value(steps, due));
            let trigger = match steps.every_iterations {
                Some(_) => format!("pass {} began", input.iteration),
                None => format!("{} s elapsed", (input.now_ms - input.started_at_ms) / 1000),
            };
            state.step = due;
            out.push(Decision::Lever {
                change: LeverChange::DowntimeLimit { ms: to },
                reason: format!(
                    "downtime step {due} of {}: {from} → {to} ms ({trigger})",
                    last_step(steps)
                ),
            });
        }
    }
    // The stall clock restarts whenever the smallest dirty set shrinks, and keeps running
    // only once the first pass is over (the first pass is progress by definition).
    if input.iteration <= 1 || state.improved_at_ms == 0 {
        state.improved_at_ms = input.now_ms;
    }
    if let Some(best) = input.best_dirty
        && state.best_dirty.is_none_or(|b| {
            best.saturating_mul(100) <= b.saturating_mul(100 - STALL_MIN_IMPROVEMENT_PCT)
        })
    {
        state.best_dirty = Some(best);
        state.improved_at_ms = input.now_ms;
    }
    let deadline = &settings.deadline;
    let fire = if let Some(at) = completion_at_ms(settings, input)
        && input.now_ms >= at
    {
        let timeout = completion_timeout_s(settings, input.mem_total_bytes).unwrap_or(0);
        Some(format!(
            "running for {} s, past the completion timeout of {timeout} s ({})",
            (input.now_ms - input.started_at_ms) / 1000,
            completion_formula(settings, input.mem_total_bytes),
        ))
    } else if let Some(stall_s) = deadline.stall_s
        && input.now_ms - state.improved_at_ms >= (stall_s as i64) * 1000
    {
        Some(format!(
            "the smallest dirty set ({} MiB) has not shrunk for {} s",
            state.best_dirty.unwrap_or(0) >> 20,
            (input.now_ms - state.improved_at_ms) / 1000
        ))
    } else {
        None
    };
    if let Some(reason) = fire {
        state.fired = true;
        out.push(Decision::Deadline {
            action: deadline.action,
            reason,
        });
    }
    out
}

/// The next deadline, for the countdown on the card.
pub fn pending(
    settings: &MigrationSettings,
    state: &PolicyState,
    input: &PolicyInput,
) -> Option<PendingDeadline> {
    if state.fired {
        return None;
    }
    let completion = completion_at_ms(settings, input).map(|at| (at, "completion"));
    let stall = settings.deadline.stall_s.map(|s| {
        (
            state.improved_at_ms.max(input.started_at_ms) + (s as i64) * 1000,
            "stall",
        )
    });
    let (at_ms, kind) = match (completion, stall) {
        (Some(c), Some(s)) => {
            if c.0 <= s.0 {
                c
            } else {
                s
            }
        }
        (c, s) => c.or(s)?,
    };
    Some(PendingDeadline {
        at_ms,
        kind: kind.into(),
        action: settings.deadline.action,
    })
}

fn completion_at_ms(settings: &MigrationSettings, input: &PolicyInput) -> Option<i64> {
    completion_timeout_s(settings, input.mem_total_bytes)
        .map(|s| input.started_at_ms + (s as i64) * 1000)
}

fn completion_formula(settings: &MigrationSettings, mem_total_bytes: u64) -> String {
    let d = &settings.deadline;
    let gib = mem_total_bytes as f64 / GIB;
    match (d.completion_s_per_gib, d.completion_max_s) {
        (Some(per), Some(max)) => format!("{per} s/GiB × {gib:.2} GiB, capped at {max} s"),
        (Some(per), None) => format!("{per} s/GiB × {gib:.2} GiB"),
        (None, Some(max)) => format!("fixed at {max} s"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests;
