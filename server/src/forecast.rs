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
//! - QEMU's own `expected_downtime` is the dirty set at its last bitmap sync over its
//!   bandwidth, so `expected_downtime × rate` is the current pass's dirty set even when
//!   passes are too short for a reading of their own; a pass's readings only ever see
//!   less. The larger of the two is the set.
//!
//! Every figure says how it is known ([`Basis`]): a dirty set that is the same every pass
//! shows only that the guest dirties *at least* set ÷ pass length (it rewrote all it
//! touches within each pass), so no advice takes that bound for the rate; the guest's
//! real rate comes from libvirt's measurement taken while it was not migrating.

use converge_api::{
    Advice, Basis, Capabilities, Forecast, IterationMark, LeverChange, MigrationState, Sample,
    Verdict,
};

const MIB: u64 = 1 << 20;
/// A pass that shrinks the dirty set by less than this (q ≥ 0.9) is not progress.
const SHRINKING: f64 = 0.9;
/// Advise a higher downtime limit only up to this pause; beyond it most guests notice.
pub const MAX_ADVISED_PAUSE_MS: u64 = 2000;
/// Allowance for a switchover pause of up to [`CALIBRATED_PAUSE_MS`] and the completion to
/// be reported, s.
const SWITCHOVER_S: u64 = 1;
/// The pause [`SWITCHOVER_S`] was measured with (QEMU's default limit); a higher limit
/// allows a longer pause (the lab's hot set ended 3.2 s after "0..2 s" with 650 ms).
const CALIBRATED_PAUSE_MS: u64 = 300;
/// Readings the rates are taken over.
const WINDOW: usize = 10;
/// A completed pass shorter than this (the reading interval) cannot be valued from the
/// readings; its length is the evidence instead, ms.
const SPRINT_PASS_MS: u64 = 1000;
/// Short passes in a row that do not get shorter before the sprint is called a stall.
const SPRINT_STALL_PASSES: usize = 5;
/// QEMU's dirty set over recent passes is steady unless the latest is below this share of
/// the first: its estimate wanders by a tenth on a steady set, while a final sprint
/// halves it pass after pass.
const STEADY: f64 = 0.75;
/// A measurement that found at least this share of the working set dirty within its
/// period has saturated: its rate is a lower bound ([`measured_basis`]).
const MEASURED_SHARE: f64 = 0.5;
/// The guest memory one page of libvirt's dirty-rate sampling stands for (512 per GiB).
const SAMPLED_PAGE_BYTES: f64 = (2 * MIB) as f64;
/// QEMU's ceiling for auto-converge's throttle (`max-cpu-throttle`), percent.
const MAX_THROTTLE_PCT: u32 = 99;
/// QEMU's default throttle step (`cpu-throttle-increment`), percent.
const DEFAULT_THROTTLE_STEP_PCT: u32 = 10;

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
    /// The guest's dirty rate as libvirt measured it before the migration began.
    pub measured: Option<converge_api::DirtyRate>,
}

/// The guest's dirty rate as far as it is known.
#[derive(Debug, Clone, Copy)]
struct DirtyRate {
    value: Option<u64>,
    basis: Basis,
}

impl DirtyRate {
    /// "dirties at least 96.0 MiB/s" or "dirties 96.0 MiB/s (measured)".
    fn words(self) -> String {
        let r = rate(self.value.unwrap_or(0));
        match self.basis {
            Basis::Measured => format!("dirties {r}"),
            Basis::AtLeast | Basis::Unknown => format!("dirties at least {r}"),
            Basis::AtMost => format!("dirties at most {r}"),
        }
    }
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
    let xbzrle_hit_pct = last.xbzrle.and_then(|x| x.hit_rate_pct());
    let sets: Vec<u64> = input
        .boundaries
        .iter()
        .filter(|b| b.iteration >= 2 && b.mem_remaining_bytes > 0)
        .map(|b| b.mem_remaining_bytes)
        .collect();
    // QEMU's dirty set at its last sync (see the module's notes), from pass 2 on.
    let qemu_set = (last.iteration >= 2)
        .then_some(last.expected_downtime_ms)
        .flatten()
        .map(|ms| ms.saturating_mul(wire) / 1000)
        .filter(|set| *set > 0);
    let bound = dirty_rate(input.boundaries);
    // The same set every pass (or one pass only): the rate is only a bound.
    let flat = match sets.as_slice() {
        [.., a, b] => {
            (*b as f64) < *a as f64 * (2.0 - SHRINKING) && *b as f64 >= *a as f64 * SHRINKING
        }
        _ => true,
    };
    let measured = input.measured.filter(|m| m.bytes_per_s > 0);
    let dirty = match (bound, measured) {
        (Some(b), _) if !flat => DirtyRate {
            value: Some(b),
            basis: Basis::Measured,
        },
        (b, Some(m)) if b.is_none_or(|b| m.bytes_per_s >= b) => DirtyRate {
            value: Some(m.bytes_per_s),
            basis: measured_basis(&m, sets.iter().copied().max()),
        },
        (Some(b), _) => DirtyRate {
            value: Some(b),
            basis: Basis::AtLeast,
        },
        _ => DirtyRate {
            value: None,
            basis: Basis::Unknown,
        },
    };
    let dirty_rate = dirty.value;
    let working_set = sets.iter().copied().max();
    let mut f = Forecast {
        transfer_rate_bytes_per_s: wire,
        dirty_rate_bytes_per_s: dirty_rate,
        dirty_rate_basis: dirty.basis,
        working_set_bytes: working_set,
        // Readings see part of a pass's set, QEMU's estimate its last sync: at least this.
        working_set_basis: if working_set.is_some() {
            Basis::AtLeast
        } else {
            Basis::Unknown
        },
        switchover_bytes: Some(threshold),
        xbzrle_hit_pct,
        ..Forecast::new(Verdict::Converging, String::new())
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
        (f.expected_pause_ms, f.expected_pause_basis) =
            (last.expected_downtime_ms, Basis::Measured);
        f.eta_min_s = Some(0);
        // The rest of this pass, then the pause and the completion's report (the lab's
        // xbzrle run ended 2.0 s after "QEMU expects 7 ms" with 0 s of pass left).
        f.eta_max_s = Some(to_end_of_pass_s.max(1).saturating_add(switchover_s(limit)));
        return Some(f);
    }
    let Some(&set) = sets.last() else {
        if let Some(qemu) = qemu_set.filter(|q| *q > threshold) {
            // Passes too short for a reading of their own: QEMU still knows the set.
            f.reason = format!(
                "pass {}: QEMU expects a pause of {} ms for the {} left at its last sync, over the {limit} ms limit",
                last.iteration,
                last.expected_downtime_ms.unwrap_or(0),
                mib(qemu)
            );
            f.eta_min_s = Some(to_end_of_pass_s);
            return Some(f);
        }
        f.reason = format!(
            "first pass: {} of {} left to copy at {}",
            mib(remaining),
            mib(last.mem_total_bytes),
            rate(drain)
        );
        // Soonest: at once, as far as the readings tell. Pages never written are sent as
        // zero pages at memory speed, and the readings cannot say how much of the rest
        // they are (the lab's idle guests end the first pass many times faster than its
        // first readings' drain).
        f.eta_min_s = Some(0);
        f.eta_max_s = quiet_first_pass_s(last, input.measured, wire, drain, threshold, limit);
        return Some(f);
    };
    // What the readings saw of the pass is the least its dirty set can be.
    let set = set.max(qemu_set.unwrap_or(0));
    if set <= threshold {
        f.verdict = Verdict::SwitchingOver;
        f.reason = format!(
            "the last pass left {}, within the {} that fit in {limit} ms",
            mib(set),
            mib(threshold)
        );
        // What the readings saw: QEMU switches over only once the set fits, so the pause is
        // between this and the limit.
        (f.expected_pause_ms, f.expected_pause_basis) =
            (Some(set.saturating_mul(1000) / wire.max(1)), Basis::AtLeast);
        f.eta_min_s = Some(0);
        // The rest of this pass, then the pause and the completion's report (the lab's
        // xbzrle run ended 2.0 s after "QEMU expects 7 ms" with 0 s of pass left).
        f.eta_max_s = Some(to_end_of_pass_s.max(1).saturating_add(switchover_s(limit)));
        return Some(f);
    }
    // xbzrle sends pass 2 whole while it fills its cache; its deltas start in pass 3, so
    // the first ratio that says anything about it is pass 4's dirty set over pass 3's.
    let xbzrle_on = last.xbzrle.is_some();
    // Passes shorter than the reading interval cannot be valued, but their lengths still
    // tell: the guest dirties in proportion to a pass's length, so passes that keep
    // getting shorter are the final sprint (this is how xbzrle's deltas finish), and
    // short passes that stop getting shorter leave a dirty set just above the threshold.
    let lengths = pass_lengths_ms(input.boundaries, if xbzrle_on { 3 } else { 2 });
    if let Some(&d) = lengths.last()
        && d < SPRINT_PASS_MS
    {
        // QEMU's set at each of these passes, where a reading caught it: the same set
        // above the threshold pass after pass is a stall whatever the lengths do (the lab's
        // 4 MiB hot set at 32 MiB/s alternated 200 and 300 ms passes for minutes).
        // Sets valued by these passes' few readings are too low to say a rate.
        let sprint_rate = match measured {
            Some(m) => DirtyRate {
                value: Some(m.bytes_per_s.max(bound.unwrap_or(0))),
                basis: measured_basis(&m, Some(set)),
            },
            None => DirtyRate {
                value: bound,
                basis: if bound.is_some() {
                    Basis::AtLeast
                } else {
                    Basis::Unknown
                },
            },
        };
        if let Some((passes, qemu)) = steady_qemu_sets(input, threshold, wire) {
            f.verdict = Verdict::WillNotConverge;
            (f.dirty_rate_bytes_per_s, f.dirty_rate_basis) = (sprint_rate.value, sprint_rate.basis);
            let pause_ms = qemu.saturating_mul(1000) / wire.max(1);
            f.reason = format!(
                "{passes} passes of about {d} ms each leave {} to send (QEMU expects a pause of {pause_ms} ms), \
                 more than the {} that fit in {limit} ms at {}: pre-copy as set never switches over",
                mib(qemu),
                mib(threshold),
                rate(wire)
            );
            // QEMU's own estimate of the set.
            (f.expected_pause_ms, f.expected_pause_basis) = (Some(pause_ms), Basis::Measured);
            f.advice = advise(input, last, qemu, wire, drain, sprint_rate, working_set);
            return Some(f);
        }
        let flat = lengths
            .windows(2)
            .rev()
            .take_while(|w| w[1] < SPRINT_PASS_MS && w[1] as f64 >= SHRINKING * w[0] as f64)
            .count();
        if flat >= SPRINT_STALL_PASSES {
            f.verdict = Verdict::WillNotConverge;
            f.reason = format!(
                "{flat} passes in a row have lasted about {d} ms without getting shorter: what remains after each stays above {}",
                mib(threshold)
            );
            // A reading's remaining is the least the current pass's set can be.
            let floor = last.mem_remaining_bytes.max(threshold).max(set);
            (f.dirty_rate_bytes_per_s, f.dirty_rate_basis) = (sprint_rate.value, sprint_rate.basis);
            f.advice = advise(input, last, floor, wire, drain, sprint_rate, working_set);
        } else {
            // The current pass and all after it, each at most `q` of the one before,
            // take at most d / (1 − q); then the switchover.
            let previous = lengths.len().checked_sub(2).map(|i| lengths[i]);
            let q = previous
                .map_or(0.5, |p| d as f64 / p.max(1) as f64)
                .clamp(0.1, SHRINKING);
            f.reason = format!(
                "pass {} took {d} ms{}: passes are now too short for the guest to dirty much",
                last.iteration.saturating_sub(1),
                previous.map_or(String::new(), |p| format!(" after {p} ms"))
            );
            f.eta_min_s = Some(0);
            f.eta_max_s = Some((d as f64 / (1.0 - q) / 1000.0).ceil() as u64 + switchover_s(limit));
            (f.expected_pause_ms, f.expected_pause_basis) = (Some(limit), Basis::AtMost);
        }
        return Some(f);
    }
    // With xbzrle the pass being sent now is the one that tells, and its deltas drain it
    // faster than anything before.
    let current_drain = xbzrle_on
        .then(|| {
            let first = input
                .samples
                .iter()
                .rposition(|s| s.iteration != last.iteration)
                .map_or(0, |i| i + 1);
            drain_rate(&input.samples[first..])
        })
        .flatten();
    let drain = current_drain.unwrap_or(drain).max(wire);
    let to_end_of_pass_s = remaining / drain.max(1);
    let judged = if xbzrle_on { &sets[1..] } else { &sets[..] };
    // No pass of deltas has ended: there is no ratio to observe yet, only a drain rate.
    let first_delta_pass = xbzrle_on && judged.len() < 2;
    if xbzrle_on && (last.iteration <= 2 || (current_drain.is_none() && first_delta_pass)) {
        f.reason = if last.iteration <= 2 {
            format!(
                "pass {}: xbzrle sends whole pages until its cache holds them; deltas start next pass",
                last.iteration
            )
        } else {
            format!(
                "pass {}: the first of xbzrle's deltas; judged once it has drained a little",
                last.iteration
            )
        };
        f.eta_min_s = Some(to_end_of_pass_s);
        return Some(f);
    }
    let ratios: Vec<f64> = judged
        .windows(2)
        .rev()
        .take(3)
        .map(|w| w[1] as f64 / w[0] as f64)
        .collect();
    // With xbzrle's short passes QEMU's own dirty-rate reading is no longer held down by
    // long passes, and may be the higher (truer) of the two lower bounds.
    let model_rate = if xbzrle_on {
        dirty_rate.max(Some(last.dirty_rate_bytes_per_s).filter(|r| *r > 0))
    } else {
        dirty_rate
    };
    let model_q = model_rate.map(|w| w as f64 / drain as f64);
    // "Refills" compares the dirty rate with how fast passes drain, which xbzrle's deltas
    // make faster than the wire.
    let refills = dirty_rate.is_some_and(|w| w as f64 >= SHRINKING * drain as f64);
    // An observed shrink between passes beats the model (which sees a saturated working
    // set as "refilling" even when shorter passes are about to shrink it).
    let observed = ratios.first().copied();
    let converging = match observed {
        Some(q) => q < SHRINKING,
        None => model_q.is_some_and(|q| q < SHRINKING) && !refills,
    };
    let q = observed.or(model_q);
    // Auto-converge raises its throttle while passes dirty more than half what they send.
    let throttle_rising = last
        .throttle_pct
        .is_some_and(|t| t > 0 && t < MAX_THROTTLE_PCT);
    match q {
        Some(q) if converging => {
            // Fewer than two observed ratios: the model's tolerance is a factor of two
            // either way (its dirty rate is a lower bound; shorter passes dirty less).
            let (best, worst) = if ratios.len() < 2 {
                (q / 2.0, (q * 2.0).min(SHRINKING))
            } else {
                (
                    ratios.iter().copied().fold(q, f64::min),
                    ratios.iter().copied().fold(q, f64::max).min(0.99),
                )
            };
            let (passes_fast, eta_fast) = eta(set, best, threshold, drain);
            let (_, eta_slow) = eta(set, worst, threshold, drain);
            f.reason = format!(
                "each pass leaves {:.0} % of the one before; about {passes_fast} more pass(es) to get under {}",
                q * 100.0,
                mib(threshold)
            );
            let end_of_pass = remaining as f64 / drain.max(1) as f64;
            // With xbzrle each pass drains faster than the one before as more of its
            // pages hit the cache, so one pass of deltas bounds the time only from above:
            // the lab's `loop` guest ended 1.4 s after a lower bound of 4 s taken from
            // the first delta pass's drain. Two or more delta passes give a real range.
            // A rising throttle shrinks the sets faster than any ratio seen so far (the lab's
            // `loop` with auto-converge ended before the fastest ratio's estimate): then only
            // the rest of this pass is certain.
            f.eta_min_s = Some(if xbzrle_on && ratios.len() < 2 {
                0
            } else if throttle_rising {
                end_of_pass.floor() as u64
            } else {
                (end_of_pass + eta_fast).floor() as u64
            });
            // And a second for the completion to be reported (the lab's xbzrle run ended
            // 2.0 s after an estimate of 1 s without it).
            f.eta_max_s = Some(
                ((end_of_pass + eta_slow.max(eta_fast)).ceil() as u64)
                    .saturating_add(switchover_s(limit)),
            );
            (f.expected_pause_ms, f.expected_pause_basis) = (Some(limit), Basis::AtMost);
        }
        _ if throttle_rising => {
            f.verdict = Verdict::Stalled;
            f.reason = format!(
                "the dirty set stays at {}; auto-converge is slowing the guest by {} % and still rising",
                mib(set),
                last.throttle_pct.unwrap_or(0)
            );
            (f.expected_pause_ms, f.expected_pause_basis) =
                (Some(set.saturating_mul(1000) / wire.max(1)), Basis::AtLeast);
            // It may be enough already; at the latest the throttle's ceiling stops the
            // guest all but 1 % of the time, after the ramp's passes.
            f.eta_min_s = Some(to_end_of_pass_s);
            let pass_s = set.max(working_set.unwrap_or(0)) as f64 / wire.max(1) as f64;
            let ramp = throttle_ramp_passes(input.caps, last.throttle_pct.unwrap_or(0));
            f.eta_max_s = Some(
                ((remaining as f64 / drain.max(1) as f64 + f64::from(ramp) * pass_s).ceil() as u64)
                    .saturating_add(switchover_s(limit)),
            );
        }
        // A first delta pass that drains no faster than the dirty rate is not yet hopeless:
        // the deltas speed up as the pass goes on and more of its pages hit the cache (the
        // lab's `loop` guest drained pass 3 at the wire's pace for its first readings, was
        // once called hopeless there, and finished 1.5 s later). Its end gives a ratio.
        _ if first_delta_pass => {
            f.reason = format!(
                "pass {}: the first of xbzrle's deltas, draining at {} so far; judged when it ends",
                last.iteration,
                rate(drain)
            );
            f.eta_min_s = Some(to_end_of_pass_s);
        }
        _ if observed.is_some() || refills => {
            f.verdict = Verdict::WillNotConverge;
            let pause_ms = set.saturating_mul(1000) / wire.max(1);
            f.reason = format!(
                "the guest {} (a dirty set of {} every pass) and the link carries {}: \
                 switching over needs at most {} ({limit} ms at {}), so it would pause the guest {} ms",
                dirty.words(),
                mib(set),
                rate(wire),
                mib(threshold),
                rate(wire),
                pause_ms
            );
            (f.expected_pause_ms, f.expected_pause_basis) = (Some(pause_ms), Basis::AtLeast);
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
        f.advice = advise(input, last, set, wire, drain, dirty, working_set);
    }
    Some(f)
}

/// The latest a first pass and what follows it end, for a guest measured quiet: one whose
/// measured rate over its measurement's period fits the switchover.
///
/// A page-sampled rate cannot tell a slow writer from a small hot set rewritten faster than
/// it counts (both read as rate = set ÷ period), so for a busy guest it cannot say what the
/// first pass leaves. For a quiet one it can: the set after the first pass is at most the
/// rate times the longer of the pass and the period, either way; it shrinks (if it was
/// the rate) or already fits (if it was a hot set). Passes after it are taken to shrink by
/// twice rate ÷ link, as a margin.
fn quiet_first_pass_s(
    last: &Sample,
    measured: Option<converge_api::DirtyRate>,
    wire: u64,
    drain: u64,
    threshold: u64,
    limit: u64,
) -> Option<u64> {
    let m = measured.filter(|_| last.iteration <= 1)?;
    let period_s = f64::from(m.period_s.max(1));
    if m.bytes_per_s as f64 * period_s > threshold as f64 {
        return None;
    }
    let end_of_pass = last.mem_remaining_bytes as f64 / drain.max(1) as f64;
    let first_pass_s = last.elapsed_ms as f64 / 1000.0 + end_of_pass;
    let set = (m.bytes_per_s as f64 * first_pass_s.max(period_s)) as u64;
    let after = if set <= threshold {
        0.0
    } else {
        let q = (2.0 * m.bytes_per_s as f64 / wire.max(1) as f64).min(SHRINKING);
        set as f64 / wire.max(1) as f64 + eta(set, q, threshold, wire).1
    };
    Some(((end_of_pass + after).ceil() as u64).saturating_add(switchover_s(limit)))
}

/// Seconds from QEMU's decision to switch over to the completion's report, at a downtime
/// limit of `limit_ms`.
fn switchover_s(limit_ms: u64) -> u64 {
    SWITCHOVER_S + limit_ms.saturating_sub(CALIBRATED_PAUSE_MS).div_ceil(1000)
}

/// Passes left, at most, before auto-converge's throttle reaches its ceiling from `throttle`
/// percent, and one to finish: QEMU raises it by one step at every second bitmap sync
/// (pass) that dirtied more than half what the pass sent.
fn throttle_ramp_passes(caps: Option<&Capabilities>, throttle: u32) -> u32 {
    let step = caps
        .and_then(|c| c.auto_converge)
        .map_or(DEFAULT_THROTTLE_STEP_PCT, |a| a.increment_pct)
        .max(1);
    2 * MAX_THROTTLE_PCT.saturating_sub(throttle).div_ceil(step) + 1
}

/// The xbzrle cache to advise for a working set: half as much again as the set, rounded
/// up to the power of two QEMU rounds to, at least 64 MiB and at most the guest's memory.
/// The margin is needed twice over: the cache is indexed by guest address, so pages
/// collide (50 % hits with 64 MiB for a 134 MiB set), and the set is only ever a lower
/// bound (in one CI run the `loop` guest's set read under 128 MiB, 128 MiB was advised
/// without the margin, and the guest rewrote 132 MiB: 64 % hits, no convergence).
fn xbzrle_cache_for(working_set: u64, mem_total: u64) -> u64 {
    (working_set.saturating_mul(3) / 2)
        .next_power_of_two()
        .max(64 * MIB)
        .min(mem_total)
}

/// The most a page-sampled rate can be short of the truth, at two standard errors. libvirt
/// samples 512 pages per GiB, so each stands for 2 MiB, and the pages it found dirty are
/// a count with a Poisson error of √n (the lab's 50 MiB/s guest read 30 and 54 MiB/s; the
/// 38 MiB/s advised from the 30 did not converge).
fn sampled_upper_bound(m: &converge_api::DirtyRate) -> u64 {
    let counted = m.bytes_per_s as f64 * f64::from(m.period_s.max(1)) / SAMPLED_PAGE_BYTES;
    if counted < 1.0 {
        return m.bytes_per_s;
    }
    (m.bytes_per_s as f64 * (1.0 + 2.0 / counted.sqrt())) as u64
}

/// How far a measurement of the guest tells its rate: libvirt counts distinct pages dirtied
/// within its period, so one that found most of the dirty set dirty is only a lower bound,
/// like a saturated set. "Most" is half: a guest writing at random over its set at the
/// set's size per period leaves only 1 − 1/e (63 %) of it dirty, and 512 sampled pages per
/// GiB miss by a tenth either way. (The lab's `fresh` guest read 142 MiB/s over a 131 MiB
/// set, then 114 MiB/s over 128 MiB; links of 159 and 134 MiB/s did not outrun it.)
fn measured_basis(m: &converge_api::DirtyRate, working_set: Option<u64>) -> Basis {
    let seen = m.bytes_per_s.saturating_mul(u64::from(m.period_s.max(1)));
    if working_set.is_some_and(|ws| seen as f64 >= MEASURED_SHARE * ws as f64) {
        Basis::AtLeast
    } else {
        Basis::Measured
    }
}

/// QEMU's dirty set (expected downtime × rate) where readings caught the last
/// 2 × [`SPRINT_STALL_PASSES`] passes: `Some((passes spanned, largest set))` when at least
/// three passes spanning [`SPRINT_STALL_PASSES`] were caught, most of them above
/// `threshold`, and the latest not smaller than [`STEADY`] of the first.
///
/// QEMU's estimate divides by its bandwidth of the moment, so it wanders by a tenth or
/// more from pass to pass on a steady set (the lab's hot set: 250–280 ms); and until
/// QEMU has a dirty rate (pass 2) it is the limit itself. Neither may read as progress.
fn steady_qemu_sets(input: &Input<'_>, threshold: u64, wire: u64) -> Option<(u32, u64)> {
    let from = if input.samples.last().is_some_and(|s| s.xbzrle.is_some()) {
        4
    } else {
        3
    };
    let mut sets: Vec<(u32, u64)> = Vec::new();
    for s in input.samples.iter().filter(|s| s.iteration >= from) {
        let Some(ms) = s.expected_downtime_ms else {
            continue;
        };
        let set = ms.saturating_mul(wire) / 1000;
        match sets.last_mut() {
            Some((iteration, latest)) if *iteration == s.iteration => *latest = set,
            Some((iteration, _)) if *iteration > s.iteration => sets.clear(),
            _ => sets.push((s.iteration, set)),
        }
    }
    let last_pass = sets.last()?.0;
    let recent_from = last_pass.saturating_sub(2 * SPRINT_STALL_PASSES as u32);
    sets.retain(|(iteration, _)| *iteration > recent_from);
    let (&(first_pass, first), &(_, latest)) = (sets.first()?, sets.last()?);
    let spanned = last_pass.checked_sub(first_pass)?.saturating_add(1);
    let mut values: Vec<u64> = sets.iter().map(|(_, set)| *set).collect();
    values.sort_unstable();
    let (median, largest) = (values[values.len() / 2], *values.last()?);
    (values.len() >= 3
        && spanned as usize >= SPRINT_STALL_PASSES
        && median > threshold
        && latest as f64 >= STEADY * first as f64)
        .then_some((spanned, largest))
}

/// Passes and seconds until a dirty set of `set` shrinking by `q` per pass fits `threshold`.
/// The last of them is the one sent during the pause.
fn eta(set: u64, q: f64, threshold: u64, drain: u64) -> (u32, f64) {
    let (mut d, mut passes, mut seconds) = (set as f64, 0u32, 0.0);
    while d > threshold as f64 && passes < 100 {
        d *= q;
        seconds += d / drain.max(1) as f64;
        passes += 1;
    }
    (passes, seconds)
}

/// The levers and restarts that would make it finish, best first.
fn advise(
    input: &Input<'_>,
    last: &Sample,
    set: u64,
    wire: u64,
    drain: u64,
    dirty: DirtyRate,
    working_set: Option<u64>,
) -> Vec<Advice> {
    let mut out = Vec::new();
    let dirty_rate = dirty.value;
    let caps = input.caps;
    // xbzrle only helps when its cache holds the pages the guest rewrites. QEMU's cache is
    // indexed by guest address, so pages collide: the lab measured 50 % hits with 64 MiB
    // for a 134 MiB working set, and a quick finish with 256 MiB (`xbzrle_cache_for`).
    // It is a restart, not a lever: on the lab's QEMU 10.0 resizing the cache mid-flight
    // is read back but leaves the hit rate where it was (measured at 64 → 128 and
    // 64 → 256 MiB).
    if let (Some(x), Some(ws)) = (last.xbzrle, working_set)
        && x.cache_bytes < ws.saturating_mul(3) / 2
        && x.cache_bytes < last.mem_total_bytes
    {
        let cache = xbzrle_cache_for(ws, last.mem_total_bytes);
        let hit = x.hit_rate_pct().unwrap_or(0);
        out.push(Advice {
            lever: None,
            action: format!(
                "Abort, then start again with an xbzrle cache of {}",
                mib(cache)
            ),
            effect: format!(
                "the {} cache holds less than the {} the guest rewrites, so only {hit} % of pages are found in it; with {} the third pass sends deltas",
                mib(x.cache_bytes),
                mib(ws),
                mib(cache)
            ),
        });
    }
    // Enough downtime to send the dirty set in one go, with a margin, in 50 ms steps.
    let needed_ms = (set.saturating_mul(1200) / wire.max(1)).div_ceil(50) * 50;
    if needed_ms <= MAX_ADVISED_PAUSE_MS {
        out.push(Advice {
            lever: Some(LeverChange::DowntimeLimit { ms: needed_ms }.into()),
            action: format!("Raise the downtime limit to {needed_ms} ms"),
            effect: format!(
                "QEMU switches over after the current pass (about {} s); the guest pauses up to {needed_ms} ms",
                (last.mem_remaining_bytes / drain.max(1)).saturating_add(1)
            ),
        });
    }
    if caps.is_none_or(|c| c.postcopy) {
        let seconds = (last.mem_remaining_bytes.max(set) / wire.max(1)).saturating_add(1);
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
    // Bandwidth helps only once it is above the rate the guest dirties at; a bound on that
    // rate says nothing about how far above (the `loop` guest's advice chased itself from
    // 39 to 51 MiB/s when the bound was taken for the rate).
    if let (Some(limit), Some(w)) = (input.bandwidth_limit_mib_s, dirty_rate) {
        // A rate from libvirt's page sampling is planned at its upper error bound.
        let planned = match input.measured {
            Some(m) if m.bytes_per_s == w => sampled_upper_bound(&m),
            _ => w,
        };
        let needed = (planned.saturating_mul(5) / 4).div_ceil(MIB);
        match dirty.basis {
            Basis::Measured if needed > limit => out.push(Advice {
                lever: Some(LeverChange::Bandwidth { mib_s: needed }.into()),
                action: format!(
                    "Raise the bandwidth limit to {needed} MiB/s, if the network has room"
                ),
                effect: format!(
                    "the guest dirties {} (measured): passes then drain faster than it refills them",
                    rate(w)
                ),
            }),
            Basis::AtLeast if w.div_ceil(MIB) >= limit => out.push(Advice {
                lever: None,
                action: format!(
                    "Raise the bandwidth limit well above {} MiB/s, if the network has room (a guess)",
                    w.div_ceil(MIB)
                ),
                effect: format!(
                    "the guest dirties at least {} — every pass finds the same {} dirty, so how much more is unknown until the VM is measured while it does not migrate",
                    rate(w),
                    mib(set)
                ),
            }),
            _ => {}
        }
    }
    let xbzrle = caps.is_some_and(|c| c.xbzrle_cache_bytes.is_some());
    if let Some(ws) = working_set
        && !xbzrle
        && ws.saturating_mul(2) <= last.mem_total_bytes
    {
        let cache = xbzrle_cache_for(ws, last.mem_total_bytes);
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
        let throttle = 100 - (drain.saturating_mul(100) / w).min(100);
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
        let ms = u64::try_from(next.at_ms.saturating_sub(pass.at_ms))
            .ok()
            .filter(|ms| *ms > 0)?;
        (next.mem_remaining_bytes > 0).then(|| next.mem_remaining_bytes.saturating_mul(1000) / ms)
    })
}

/// How fast remaining memory falls within passes after the first, bytes/s (median).
fn drain_rate(samples: &[Sample]) -> Option<u64> {
    median(samples.windows(2).rev().take(WINDOW).filter_map(|w| {
        let (a, b) = (&w[0], &w[1]);
        let ms = u64::try_from(b.at_ms.saturating_sub(a.at_ms))
            .ok()
            .filter(|ms| *ms > 0)?;
        (a.iteration == b.iteration
            && a.iteration >= 2
            && b.mem_remaining_bytes < a.mem_remaining_bytes)
            .then(|| (a.mem_remaining_bytes - b.mem_remaining_bytes).saturating_mul(1000) / ms)
    }))
}

/// Lengths of the completed passes from pass `from` on, oldest first, ms.
fn pass_lengths_ms(boundaries: &[IterationMark], from: u32) -> Vec<u64> {
    boundaries
        .windows(2)
        .filter(|w| w[0].iteration >= from && w[0].iteration.checked_add(1) == Some(w[1].iteration))
        .filter_map(|w| u64::try_from(w[1].at_ms.saturating_sub(w[0].at_ms)).ok())
        .collect()
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
