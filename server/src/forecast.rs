//! Will it converge? A model of pre-copy from a migration's own readings: pure functions,
//! the same for the live verdict on every card and for the adaptive policy's decisions.
//!
//! Pre-copy sends memory in passes. Pass *n+1* must resend what the guest dirtied during
//! pass *n*, so the number that decides convergence is the **dirty set at each pass
//! boundary**, not the raw "remaining" reading (which falls to ~0 within every pass) and
//! not libvirt's dirty rate (which saturates near the transfer rate). QEMU switches over
//! once what remains after a pass fits in the downtime limit at the current bandwidth:
//! `remaining ≤ bandwidth × downtime_limit` (QEMU's `threshold_size`).
//!
//! - The transfer rate *R* is the median wire rate of recent readings; the *drain* rate
//!   (how fast remaining memory falls within a pass) can exceed it when xbzrle sends
//!   deltas or pages are zero, and is used for times.
//! - The guest's dirty rate is at least `D(n+1) / duration(n)`: it rewrote at least the next
//!   pass's dirty set while pass *n* ran. When the guest rewrites a bounded working set
//!   the dirty set saturates at that set, so this is a lower bound.
//! - If dirty sets shrink by a factor *q < 1* per pass, the passes left follow
//!   `D·qᵏ ≤ threshold`, and the time left sums their lengths `D·qᵏ / drain`.
//! - If they do not shrink, pre-copy alone never ends, unless the set already fits.

use converge_api::{
    Advice, Capabilities, Forecast, IterationMark, LeverChange, MigrationState, Sample, Verdict,
};

const MIB: u64 = 1 << 20;
/// A pass that shrinks the dirty set by less than this (q ≥ 0.9) is not progress.
const SHRINKING: f64 = 0.9;
/// Advise a higher downtime limit only up to this pause; beyond it most guests notice.
pub const MAX_ADVISED_PAUSE_MS: u64 = 2000;
/// Readings the rates are taken over.
const WINDOW: usize = 10;

/// What the forecast looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The migration's state.
    pub state: MigrationState,
    /// Recent readings, oldest first.
    pub samples: &'a [Sample],
    /// Pass boundaries, oldest first, valued by each pass's dirty set (0 when unknown yet).
    pub boundaries: &'a [IterationMark],
    /// The downtime limit libvirt reports, ms.
    pub downtime_limit_ms: u64,
    /// Capabilities it started with (none when found running).
    pub caps: Option<&'a Capabilities>,
    /// The bandwidth limit, MiB/s, when one is set.
    pub bandwidth_limit_mib_s: Option<u64>,
}

/// The forecast for `input`; `None` before the first useful reading and once it is over.
pub fn forecast(input: &Input<'_>) -> Option<Forecast> {
    if !input.state.is_active() {
        return None;
    }
    let last = input.samples.iter().rev().find(|s| s.mem_total_bytes > 0)?;
    let wire = median(
        input
            .samples
            .iter()
            .rev()
            .take(WINDOW)
            .map(|s| s.transfer_rate_bytes_per_s),
    )?;
    let drain = drain_rate(input.samples).unwrap_or(wire).max(wire);
    let limit = input.downtime_limit_ms.max(1);
    let threshold = wire.saturating_mul(limit) / 1000;
    let xbzrle_hit_pct = last
        .xbzrle
        .and_then(|x| u32::try_from((100 * x.pages).checked_div(x.pages + x.cache_misses)?).ok());
    let sets: Vec<u64> = input
        .boundaries
        .iter()
        .filter(|b| b.iteration >= 2 && b.mem_remaining_bytes > 0)
        .map(|b| b.mem_remaining_bytes)
        .collect();
    let dirty_rate = dirty_rate(input.boundaries);
    let working_set = sets.iter().copied().max();
    let mut f = Forecast {
        verdict: Verdict::Converging,
        reason: String::new(),
        transfer_rate_bytes_per_s: wire,
        dirty_rate_bytes_per_s: dirty_rate,
        working_set_bytes: working_set,
        switchover_bytes: Some(threshold),
        eta_min_s: None,
        eta_max_s: None,
        expected_pause_ms: None,
        xbzrle_hit_pct,
        advice: Vec::new(),
    };
    let remaining = last.mem_remaining_bytes;
    let to_end_of_pass_s = remaining / drain.max(1);

    if input.state == MigrationState::PostCopy {
        f.verdict = Verdict::PostCopy;
        f.reason = format!(
            "running on the destination; {} still to fetch",
            mib(remaining)
        );
        f.eta_min_s = Some(to_end_of_pass_s);
        f.eta_max_s = Some(to_end_of_pass_s.saturating_mul(2).max(1));
        return Some(f);
    }
    if last.iteration >= 2 && last.expected_downtime_ms.is_some_and(|d| d <= limit) {
        f.verdict = Verdict::SwitchingOver;
        f.reason = format!(
            "QEMU expects a pause of {} ms, within the {limit} ms limit",
            last.expected_downtime_ms.unwrap_or(0)
        );
        f.expected_pause_ms = last.expected_downtime_ms;
        f.eta_min_s = Some(0);
        f.eta_max_s = Some(to_end_of_pass_s.max(1));
        return Some(f);
    }
    let Some(&set) = sets.last() else {
        f.reason = format!(
            "first pass: {} of {} left to copy at {}",
            mib(remaining),
            mib(last.mem_total_bytes),
            rate(drain)
        );
        f.eta_min_s = Some(to_end_of_pass_s);
        return Some(f);
    };
    if set <= threshold {
        f.verdict = Verdict::SwitchingOver;
        f.reason = format!(
            "the last pass left {}, within the {} that fit in {limit} ms",
            mib(set),
            mib(threshold)
        );
        f.expected_pause_ms = Some(set.saturating_mul(1000) / wire.max(1));
        f.eta_min_s = Some(0);
        f.eta_max_s = Some(to_end_of_pass_s.max(1));
        return Some(f);
    }
    let ratios: Vec<f64> = sets
        .windows(2)
        .rev()
        .take(3)
        .map(|w| w[1] as f64 / w[0] as f64)
        .collect();
    let model_q = dirty_rate.map(|w| w as f64 / drain as f64);
    // "Refills" compares the dirty rate with how fast passes drain, which xbzrle's deltas
    // make faster than the wire. With xbzrle, wait for a second pass boundary before
    // judging: its deltas only start in the second pass.
    let xbzrle_on = last.xbzrle.is_some();
    let refills = dirty_rate.is_some_and(|w| w as f64 >= SHRINKING * drain as f64)
        && (!xbzrle_on || sets.len() >= 2);
    // An observed shrink between passes beats the model (which sees a saturated working
    // set as "refilling" even when shorter passes are about to shrink it).
    let observed = ratios.first().copied();
    let converging = match observed {
        Some(q) => q < SHRINKING,
        None => model_q.is_some_and(|q| q < SHRINKING) && !refills,
    };
    let q = observed.or(model_q);
    match q {
        Some(q) if converging => {
            let best = ratios.iter().copied().fold(q, f64::min);
            let worst = ratios.iter().copied().fold(q, f64::max).min(0.99);
            let (passes_fast, eta_fast) = eta(set, best, threshold, drain);
            let (_, eta_slow) = eta(set, worst, threshold, drain);
            f.reason = format!(
                "each pass leaves {:.0} % of the one before; about {passes_fast} more pass(es) to get under {}",
                q * 100.0,
                mib(threshold)
            );
            f.eta_min_s = Some(to_end_of_pass_s + eta_fast);
            f.eta_max_s = Some(to_end_of_pass_s + eta_slow.max(eta_fast));
            f.expected_pause_ms = Some(limit);
        }
        _ if last.throttle_pct.is_some_and(|t| t > 0 && t < 99) => {
            f.verdict = Verdict::Stalled;
            f.reason = format!(
                "the dirty set stays at {}; auto-converge is slowing the guest by {} % and still rising",
                mib(set),
                last.throttle_pct.unwrap_or(0)
            );
            f.expected_pause_ms = Some(set.saturating_mul(1000) / wire.max(1));
        }
        _ if observed.is_some() || refills => {
            f.verdict = Verdict::WillNotConverge;
            let pause_ms = set.saturating_mul(1000) / wire.max(1);
            f.reason = format!(
                "the guest dirties at least {} (a dirty set of {} every pass) and the link carries {}: \
                 switching over needs at most {} ({limit} ms at {}), so it would pause the guest {} ms",
                rate(dirty_rate.unwrap_or(0)),
                mib(set),
                rate(wire),
                mib(threshold),
                rate(wire),
                pause_ms
            );
            f.expected_pause_ms = Some(pause_ms);
        }
        _ => {
            f.reason = format!(
                "pass {}: a dirty set of {} so far",
                last.iteration,
                mib(set)
            );
            f.eta_min_s = Some(to_end_of_pass_s);
        }
    }
    if matches!(f.verdict, Verdict::WillNotConverge | Verdict::Stalled) {
        f.advice = advise(input, last, set, wire, drain, dirty_rate, working_set);
    }
    Some(f)
}

/// Passes and seconds until a dirty set of `set` shrinking by `q` per pass fits `threshold`.
fn eta(set: u64, q: f64, threshold: u64, drain: u64) -> (u32, u64) {
    let (mut d, mut passes, mut seconds) = (set as f64, 0u32, 0.0);
    while d > threshold as f64 && passes < 100 {
        d *= q;
        seconds += d / drain.max(1) as f64;
        passes += 1;
    }
    (passes, seconds.ceil() as u64)
}

/// The levers and restarts that would make it finish, best first.
fn advise(
    input: &Input<'_>,
    last: &Sample,
    set: u64,
    wire: u64,
    drain: u64,
    dirty_rate: Option<u64>,
    working_set: Option<u64>,
) -> Vec<Advice> {
    let mut out = Vec::new();
    let caps = input.caps;
    // Enough downtime to send the dirty set in one go, with a margin, in 50 ms steps.
    let needed_ms = (set.saturating_mul(1200) / wire.max(1)).div_ceil(50) * 50;
    if needed_ms <= MAX_ADVISED_PAUSE_MS {
        out.push(Advice {
            lever: Some(LeverChange::DowntimeLimit { ms: needed_ms }.into()),
            action: format!("Raise the downtime limit to {needed_ms} ms"),
            effect: format!(
                "QEMU switches over after the current pass (about {} s); the guest pauses up to {needed_ms} ms",
                last.mem_remaining_bytes / drain.max(1) + 1
            ),
        });
    }
    if caps.is_none_or(|c| c.postcopy) {
        let seconds = last.mem_remaining_bytes.max(set) / wire.max(1) + 1;
        out.push(Advice {
            lever: Some(LeverChange::PostCopy.into()),
            action: "Switch to post-copy".into(),
            effect: format!(
                "it completes in about {seconds} s while {} follow the guest to {}; the guest slows on page faults until then",
                mib(last.mem_remaining_bytes.max(set)),
                "the destination"
            ),
        });
    }
    if let (Some(limit), Some(w)) = (input.bandwidth_limit_mib_s, dirty_rate) {
        let needed = (w.saturating_mul(5) / 4).div_ceil(MIB);
        if needed > limit {
            out.push(Advice {
                lever: Some(LeverChange::Bandwidth { mib_s: needed }.into()),
                action: format!(
                    "Raise the bandwidth limit to {needed} MiB/s, if the network has room"
                ),
                effect: "passes then drain faster than the guest refills them".into(),
            });
        }
    }
    let xbzrle = caps.is_some_and(|c| c.xbzrle_cache_bytes.is_some());
    if let Some(ws) = working_set
        && !xbzrle
        && ws.saturating_mul(2) <= last.mem_total_bytes
    {
        let cache = ws
            .next_power_of_two()
            .max(64 * MIB)
            .min(last.mem_total_bytes);
        out.push(Advice {
            lever: None,
            action: format!("Abort, then start again with xbzrle (cache {})", mib(cache)),
            effect: format!(
                "the guest keeps rewriting the same {}: xbzrle sends only the changed bytes of those pages",
                mib(ws)
            ),
        });
    }
    let auto = caps.is_some_and(|c| c.auto_converge.is_some());
    if !auto && let Some(w) = dirty_rate.filter(|w| *w > 0) {
        let throttle = 100 - (100 * drain / w).min(100);
        out.push(Advice {
            lever: None,
            action: "Abort, then start again with auto-converge".into(),
            effect: format!(
                "it converges once the guest is slowed by at least {} % (it dirties ≥ {}, the link drains {})",
                throttle.max(10),
                rate(w),
                rate(drain)
            ),
        });
    }
    out.push(Advice {
        lever: None,
        action: "Abort and retry when the guest is idle".into(),
        effect: "an idle guest migrates in one pass".into(),
    });
    out
}

/// The guest's dirty rate from the latest pair of boundaries: the next pass's dirty set
/// divided by the time the pass before it took.
fn dirty_rate(boundaries: &[IterationMark]) -> Option<u64> {
    boundaries.windows(2).rev().find_map(|w| {
        let (pass, next) = (&w[0], &w[1]);
        let ms = u64::try_from(next.at_ms - pass.at_ms)
            .ok()
            .filter(|ms| *ms > 0)?;
        (next.mem_remaining_bytes > 0).then(|| next.mem_remaining_bytes.saturating_mul(1000) / ms)
    })
}

/// How fast remaining memory falls within passes after the first, bytes/s (median).
fn drain_rate(samples: &[Sample]) -> Option<u64> {
    median(samples.windows(2).rev().take(WINDOW).filter_map(|w| {
        let (a, b) = (&w[0], &w[1]);
        let ms = u64::try_from(b.at_ms - a.at_ms).ok().filter(|ms| *ms > 0)?;
        (a.iteration == b.iteration
            && a.iteration >= 2
            && b.mem_remaining_bytes < a.mem_remaining_bytes)
            .then(|| (a.mem_remaining_bytes - b.mem_remaining_bytes).saturating_mul(1000) / ms)
    }))
}

fn median(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut v: Vec<u64> = values.filter(|v| *v > 0).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(MIB))
}

fn rate(bytes_per_s: u64) -> String {
    format!("{:.1} MiB/s", bytes_per_s as f64 / MIB as f64)
}

#[cfg(test)]
mod tests;
