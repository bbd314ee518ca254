//! The forecast on synthetic passes shaped like the lab's workloads, and its properties.

use converge_api::{
    AutoConverge, Capabilities, IterationMark, LeverKind, MigrationState, Sample, Verdict,
    XbzrleStats,
};
use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;
const TOTAL: u64 = 512 * MIB;
const LINK: u64 = 32 * MIB;

/// Readings every 500 ms of passes whose dirty sets are `sets` (the first pass sends
/// `TOTAL`), draining at `LINK`; returns the samples and the valued boundaries.
fn passes(sets: &[u64], throttle: Option<u32>) -> (Vec<Sample>, Vec<IterationMark>) {
    let (mut samples, mut marks, mut t) = (Vec::new(), Vec::new(), 0i64);
    for (i, &set) in std::iter::once(&TOTAL).chain(sets).enumerate() {
        let iteration = i as u32 + 1;
        marks.push(IterationMark {
            iteration,
            at_ms: t,
            elapsed_ms: t as u64,
            mem_remaining_bytes: set,
        });
        let mut remaining = set;
        loop {
            samples.push(Sample {
                at_ms: t,
                elapsed_ms: t as u64,
                iteration,
                mem_total_bytes: TOTAL,
                mem_remaining_bytes: remaining,
                transfer_rate_bytes_per_s: LINK,
                throttle_pct: throttle,
                // QEMU's estimate: the pass's dirty set over the bandwidth (300 ms, the
                // limit, during the first pass).
                expected_downtime_ms: Some(if iteration == 1 {
                    300
                } else {
                    set * 1000 / LINK
                }),
                ..Sample::default()
            });
            if remaining == 0 {
                break;
            }
            remaining = remaining.saturating_sub(LINK / 2);
            t += 500;
        }
        t += 1;
    }
    (samples, marks)
}

fn input<'a>(
    samples: &'a [Sample],
    marks: &'a [IterationMark],
    caps: Option<&'a Capabilities>,
) -> Input<'a> {
    Input {
        state: MigrationState::Running,
        samples,
        boundaries: marks,
        downtime_limit_ms: 300,
        caps,
        bandwidth_limit_mib_s: Some(32),
        measured: None,
    }
}

/// A measurement of `mib_s` MiB/s over one second, before the migration.
fn measured(mib_s: u64) -> Option<converge_api::DirtyRate> {
    Some(converge_api::DirtyRate {
        bytes_per_s: mib_s * MIB,
        at_ms: 0,
        previous_bytes_per_s: None,
        period_s: 1,
    })
}

#[test]
fn the_loop_workload_will_not_converge_by_pass_three_and_says_why() {
    // 128 MiB rewritten faster than 32 MiB/s: every pass finds the whole set dirty again.
    let (samples, marks) = passes(&[128 * MIB, 128 * MIB], None);
    let caps = Capabilities::default();
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    assert!(
        f.reason.contains("the link carries 32.0 MiB/s"),
        "{}",
        f.reason
    );
    assert!(
        f.reason.contains("a dirty set of 128 MiB every pass"),
        "{}",
        f.reason
    );
    assert_eq!(f.working_set_bytes, Some(128 * MIB));
    assert_eq!(f.expected_pause_ms, Some(4000), "128 MiB at 32 MiB/s");
    assert_eq!(
        f.expected_pause_basis,
        Basis::AtLeast,
        "the set may be larger"
    );
    assert_eq!(f.working_set_basis, Basis::AtLeast);
    assert_eq!(f.eta_max_s, None);
    // Downtime would need ~4.8 s: too long to advise. xbzrle fits the pattern.
    let actions: Vec<&str> = f.advice.iter().map(|a| a.action.as_str()).collect();
    assert!(
        !actions.iter().any(|a| a.starts_with("Raise the downtime")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.contains("xbzrle (cache 256 MiB)")),
        "{actions:?}"
    );
    assert_eq!(
        actions.last(),
        Some(&"Abort and retry when the guest is idle")
    );
    assert!(
        f.advice
            .iter()
            .all(|a| a.lever.is_none_or(|l| l.lever != LeverKind::PostCopy)),
        "no post-copy: not allowed at start"
    );
    // The same 128 MiB every pass: the guest dirties at least 32 MiB/s, how much more is
    // unknown, so bandwidth is a guess in words, not a lever with a made-up value.
    assert_eq!(f.dirty_rate_basis, Basis::AtLeast);
    assert!(
        f.reason.contains("dirties at least 32.0 MiB/s"),
        "{}",
        f.reason
    );
    assert!(
        f.advice
            .iter()
            .all(|a| a.lever.is_none_or(|l| l.lever != LeverKind::Bandwidth)),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(
            |a| a.starts_with("Raise the bandwidth limit well above 32 MiB/s")
                && a.ends_with("(a guess)")
        ),
        "{actions:?}"
    );
}

#[test]
fn a_measured_dirty_rate_gives_the_bandwidth_that_outruns_it() {
    // A `loop` guest measured at 50 MiB/s (under half its 128 MiB set in the measurement's
    // second) before it migrated: planned at 70 MiB/s for sampling error, 88 MiB/s drains it.
    let (samples, marks) = passes(&[128 * MIB, 128 * MIB], None);
    let caps = Capabilities::default();
    let mut i = input(&samples, &marks, Some(&caps));
    i.measured = measured(50);
    let f = forecast(&i).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    assert_eq!(f.dirty_rate_basis, Basis::Measured);
    assert_eq!(f.dirty_rate_bytes_per_s, Some(50 * MIB));
    assert!(f.reason.contains("dirties 50.0 MiB/s"), "{}", f.reason);
    let bandwidth = f
        .advice
        .iter()
        .find_map(|a| a.lever.filter(|l| l.lever == LeverKind::Bandwidth));
    assert_eq!(
        bandwidth.and_then(|l| l.value),
        Some(88),
        "the measured rate at its sampling error's upper bound (25 pages counted: +40 %), + 25 %"
    );
}

#[test]
fn a_measurement_that_found_the_whole_set_dirty_is_only_a_bound() {
    // The lab's `fresh` guest: 142 MiB/s measured over a 131 MiB dirty set. The 159 MiB/s
    // advised from it did not converge: the measurement had saturated too.
    let (samples, marks) = passes(&[131 * MIB, 131 * MIB], None);
    let caps = Capabilities::default();
    let mut i = input(&samples, &marks, Some(&caps));
    i.measured = measured(142);
    let f = forecast(&i).unwrap();
    assert_eq!(f.dirty_rate_basis, Basis::AtLeast, "{}", f.reason);
    assert!(
        f.reason.contains("dirties at least 142.0 MiB/s"),
        "{}",
        f.reason
    );
    assert!(
        f.advice
            .iter()
            .all(|a| a.lever.is_none_or(|l| l.lever != LeverKind::Bandwidth)),
        "{:?}",
        f.advice
    );
}

#[test]
fn a_measurement_that_found_most_of_the_set_dirty_is_only_a_bound_too() {
    // The lab's `fresh` guest again: 114 MiB/s over a 128 MiB set; the 143 MiB/s advised
    // from it did not converge on a link that carried 134 MiB/s.
    let (samples, marks) = passes(&[128 * MIB, 128 * MIB], None);
    let caps = Capabilities::default();
    let mut i = input(&samples, &marks, Some(&caps));
    i.measured = measured(114);
    let f = forecast(&i).unwrap();
    assert_eq!(f.dirty_rate_basis, Basis::AtLeast, "{}", f.reason);
    // While one that found under half of it dirty is the rate.
    i.measured = measured(60);
    assert_eq!(forecast(&i).unwrap().dirty_rate_basis, Basis::Measured);
}

#[test]
fn dirty_sets_that_follow_the_pass_lengths_measure_the_rate() {
    // A guest dirtying fresh memory: each set is the rate times the pass before.
    let (samples, marks) = passes(&[200 * MIB, 300 * MIB, 450 * MIB], None);
    let f = forecast(&input(&samples, &marks, None)).unwrap();
    assert_eq!(f.dirty_rate_basis, Basis::Measured, "{}", f.reason);
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
}

/// Readings every 250 ms of a small hot working set: the first pass sends `TOTAL`, then
/// passes of `lengths` ms, each leaving the set QEMU reports as `expected_ms` of
/// downtime at `LINK` while the readings, mid-pass, see only ~1 MiB of it.
fn hot_set(lengths: &[i64], expected_ms: &[u64]) -> (Vec<Sample>, Vec<IterationMark>) {
    let (mut samples, mut marks) = passes(&[], None);
    let mut t = samples.last().unwrap().at_ms + 1;
    let mut next_reading = t;
    for (i, &length) in lengths.iter().enumerate() {
        let iteration = i as u32 + 2;
        marks.push(IterationMark {
            iteration,
            at_ms: t,
            elapsed_ms: t as u64,
            mem_remaining_bytes: 0,
        });
        let end = t + length;
        while next_reading < end {
            samples.push(Sample {
                at_ms: next_reading,
                elapsed_ms: next_reading as u64,
                iteration,
                mem_total_bytes: TOTAL,
                mem_remaining_bytes: MIB,
                transfer_rate_bytes_per_s: LINK,
                expected_downtime_ms: Some(expected_ms[i % expected_ms.len()]),
                ..Sample::default()
            });
            let mark = marks.last_mut().unwrap();
            mark.mem_remaining_bytes = MIB;
            next_reading += 250;
        }
        t = end;
    }
    (samples, marks)
}

#[test]
fn a_small_hot_set_over_a_low_limit_will_not_converge_and_names_the_limit_that_fits() {
    // The lab's case: 200–300 ms passes, ~1 MiB seen per reading, QEMU expecting 251 ms
    // against a 50 ms limit. It was called "switching over" and "converging" by turns.
    let lengths: Vec<i64> = (0..30)
        .map(|i| if i % 2 == 0 { 200 } else { 300 })
        .collect();
    let (samples, marks) = hot_set(&lengths, &[251, 248, 255]);
    let mut i = input(&samples, &marks, None);
    i.downtime_limit_ms = 50;
    let f = forecast(&i).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    assert!(f.reason.contains("QEMU expects a pause of"), "{}", f.reason);
    let downtime = f.advice[0].lever.unwrap();
    assert_eq!(downtime.lever, LeverKind::DowntimeLimit, "{:?}", f.advice);
    // 251 ms of the set at 32 MiB/s, +20 %, in 50 ms steps.
    assert_eq!(downtime.value, Some(350), "{:?}", f.advice);
    assert_eq!(f.dirty_rate_basis, Basis::AtLeast);
}

#[test]
fn qemus_first_estimate_and_its_wander_do_not_hide_a_steady_hot_set() {
    // QEMU reports the limit itself until it has a dirty rate: that first reading must not
    // keep the steady passes after it from being judged (seen in the lab for 20 passes).
    let lengths: Vec<i64> = (0..30)
        .map(|i| if i % 2 == 0 { 200 } else { 300 })
        .collect();
    // And then wanders with QEMU's bandwidth of the moment (seen: 250–280 ms).
    let wander = [280, 245, 262, 250];
    let expected: Vec<u64> = (0..30)
        .map(|i| if i < 2 { 50 } else { wander[i % 4] })
        .collect();
    for passes in 8..30 {
        let (samples, marks) = hot_set(&lengths[..passes], &expected);
        let mut i = input(&samples, &marks, None);
        i.downtime_limit_ms = 50;
        let f = forecast(&i).unwrap();
        assert_eq!(
            f.verdict,
            Verdict::WillNotConverge,
            "after {passes} passes: {}",
            f.reason
        );
    }
}

#[test]
fn a_hot_set_that_qemu_says_fits_is_switching_over() {
    let lengths: Vec<i64> = (0..12)
        .map(|i| if i % 2 == 0 { 200 } else { 300 })
        .collect();
    let (samples, marks) = hot_set(&lengths, &[40]);
    let mut i = input(&samples, &marks, None);
    i.downtime_limit_ms = 50;
    let f = forecast(&i).unwrap();
    assert_eq!(f.verdict, Verdict::SwitchingOver, "{}", f.reason);
    assert_eq!(
        (f.expected_pause_ms, f.expected_pause_basis),
        (Some(40), Basis::Measured),
        "QEMU's own estimate"
    );
}

#[test]
fn an_xbzrle_cache_smaller_than_the_working_set_is_advised_bigger() {
    // xbzrle on with 64 MiB for a 128 MiB working set: half the pages miss the cache, and
    // a direct-mapped cache needs about twice the working set.
    let (mut samples, marks) = passes(&[128 * MIB, 128 * MIB, 128 * MIB], None);
    let xbzrle = XbzrleStats {
        cache_bytes: 64 * MIB,
        bytes: 5 * MIB,
        pages: 1000,
        cache_misses: 1000,
        overflow: 0,
    };
    for s in &mut samples {
        s.xbzrle = Some(xbzrle);
    }
    let caps = Capabilities {
        xbzrle_cache_bytes: Some(64 * MIB),
        ..Capabilities::default()
    };
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    assert_eq!(f.xbzrle_hit_pct, Some(50));
    let first = &f.advice[0];
    assert_eq!(
        first.action,
        "Abort, then start again with an xbzrle cache of 256 MiB"
    );
    assert!(
        first.effect.contains("only 50 % of pages"),
        "{}",
        first.effect
    );
    assert_eq!(
        first.lever, None,
        "a restart: resizing mid-flight did not help"
    );
    // Restarting with xbzrle is not advised: it is already on.
    assert!(
        f.advice
            .iter()
            .all(|a| !a.action.contains("start again with xbzrle")),
        "{:?}",
        f.advice
    );
}

fn with_xbzrle(samples: &mut [Sample], hits: u64, misses: u64) -> Capabilities {
    for s in samples {
        s.xbzrle = Some(XbzrleStats {
            cache_bytes: 256 * MIB,
            bytes: hits * 16,
            pages: hits,
            cache_misses: misses,
            overflow: 0,
        });
    }
    Capabilities {
        xbzrle_cache_bytes: Some(256 * MIB),
        ..Capabilities::default()
    }
}

#[test]
fn xbzrle_is_not_judged_while_it_fills_its_cache() {
    // Pass 2 sends the working set whole into the cache (at the wire's speed, the dirty
    // set refilling): without xbzrle that is "will not converge", with it not yet known.
    let (mut samples, marks) = passes(&[128 * MIB], None);
    let caps = with_xbzrle(&mut samples, 0, 30_000);
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
    assert!(f.reason.contains("deltas start next pass"), "{}", f.reason);
    assert_eq!(f.eta_max_s, None);
    assert!(f.advice.is_empty());
}

#[test]
fn xbzrle_deltas_are_judged_by_how_fast_they_drain_the_third_pass() {
    // Pass 3 finds the whole 128 MiB dirty again (the cache-filling pass 2 took 4 s)...
    let (mut samples, marks) = passes(&[128 * MIB, 128 * MIB], None);
    let caps = with_xbzrle(&mut samples, 20_000, 500);
    let first = samples.iter().position(|s| s.iteration == 3).unwrap();
    samples.truncate(first + 2);
    // ...but its deltas drain it at 128 MiB/s: each pass leaves a quarter of the last.
    samples[first + 1].mem_remaining_bytes = 64 * MIB;
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
    assert!(
        f.reason.starts_with("each pass leaves 25 %"),
        "{}",
        f.reason
    );
    // Half a second to the end of this pass, then ~0.3 s of passes at a quarter (up to
    // twice that factor: the model's tolerance), and a second for the report.
    let (lo, hi) = (f.eta_min_s.unwrap(), f.eta_max_s.unwrap());
    assert_eq!((lo, hi), (0, 3));

    // The same pass draining at the wire's speed is not called hopeless while it lasts:
    // the deltas speed up as more pages hit the cache...
    samples[first + 1].mem_remaining_bytes = 112 * MIB;
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
    assert!(
        f.reason.contains("judged when it ends") && f.eta_max_s.is_none(),
        "{} {:?}",
        f.reason,
        f.eta_max_s
    );
    // ...but once it has ended leaving as much as it started with, the deltas did not help.
    let (mut samples, marks) = passes(&[128 * MIB, 128 * MIB, 128 * MIB], None);
    let caps = with_xbzrle(&mut samples, 20_000, 500);
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
}

/// Appends passes of `lengths` ms after the last one, unvalued (too short for a reading
/// of their own), with one reading in the pass that follows them.
fn sprint(samples: &mut Vec<Sample>, marks: &mut Vec<IterationMark>, lengths: &[i64]) {
    let mut t = samples.last().unwrap().at_ms + 1;
    for length in lengths {
        let iteration = marks.last().unwrap().iteration + 1;
        marks.push(IterationMark {
            iteration,
            at_ms: t,
            elapsed_ms: t as u64,
            mem_remaining_bytes: 0,
        });
        t += length;
    }
    let iteration = marks.last().unwrap().iteration + 1;
    marks.push(IterationMark {
        iteration,
        at_ms: t,
        elapsed_ms: t as u64,
        mem_remaining_bytes: 0,
    });
    let mut s = samples.last().unwrap().clone();
    (s.at_ms, s.iteration, s.mem_remaining_bytes) = (t + 100, iteration, 12 * MIB);
    // QEMU's estimate follows the set it synced last: 12 MiB at 32 MiB/s.
    s.expected_downtime_ms = Some(375);
    samples.push(s);
}

#[test]
fn passes_that_keep_getting_shorter_are_the_final_sprint() {
    let (mut samples, mut marks) = passes(&[128 * MIB, 128 * MIB, 128 * MIB], None);
    let caps = with_xbzrle(&mut samples, 90_000, 1_000);
    sprint(&mut samples, &mut marks, &[600, 250]);
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
    assert!(
        f.reason.starts_with("pass 6 took 250 ms after 600 ms"),
        "{}",
        f.reason
    );
    // 250 ms / (1 − 250/600) = 429 ms, rounded up, and a second for the pause.
    assert_eq!((f.eta_min_s, f.eta_max_s), (Some(0), Some(2)));
}

#[test]
fn short_passes_that_stop_getting_shorter_are_a_stall() {
    let (mut samples, mut marks) = passes(&[128 * MIB, 128 * MIB, 128 * MIB], None);
    let caps = with_xbzrle(&mut samples, 90_000, 1_000);
    sprint(&mut samples, &mut marks, &[400; 6]);
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    assert!(
        f.reason
            .starts_with("5 passes in a row have lasted about 400 ms"),
        "{}",
        f.reason
    );
    assert!(!f.advice.is_empty());
}

#[test]
fn a_small_working_set_gets_a_downtime_advice_it_can_apply() {
    // 32 MiB keeps coming back: 1 s of downtime (+20 %) would switch over.
    let (samples, marks) = passes(&[32 * MIB, 32 * MIB], None);
    let f = forecast(&input(&samples, &marks, None)).unwrap();
    assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
    let first = &f.advice[0];
    assert_eq!(first.action, "Raise the downtime limit to 1200 ms");
    let lever = first.lever.unwrap();
    assert_eq!(
        (lever.lever, lever.value),
        (LeverKind::DowntimeLimit, Some(1200))
    );
    assert_eq!(
        f.advice[1].action, "Switch to post-copy",
        "allowed: capabilities unknown"
    );
}

#[test]
fn shrinking_dirty_sets_converge_with_an_eta_range() {
    let (samples, marks) = passes(&[200 * MIB, 100 * MIB, 50 * MIB], None);
    let f = forecast(&input(&samples, &marks, None)).unwrap();
    assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
    assert!(f.reason.contains("each pass leaves 50 %"), "{}", f.reason);
    let (lo, hi) = (f.eta_min_s.unwrap(), f.eta_max_s.unwrap());
    assert!(lo <= hi, "{lo} ≤ {hi}");
    // 50 → 25 → 12.5 → 6.25 MiB (under 9.6 MiB = 300 ms at 32 MiB/s): ~1.5 s of passes.
    assert!(hi <= 5, "{lo}..{hi}");
    assert_eq!(f.expected_pause_ms, Some(300));
    assert!(f.advice.is_empty());
}

#[test]
fn auto_convergence_in_progress_is_a_stall_not_a_failure() {
    let (samples, marks) = passes(&[128 * MIB, 128 * MIB], Some(40));
    let caps = Capabilities {
        auto_converge: Some(AutoConverge {
            initial_pct: 20,
            increment_pct: 10,
        }),
        ..Capabilities::default()
    };
    let f = forecast(&input(&samples, &marks, Some(&caps))).unwrap();
    assert_eq!(f.verdict, Verdict::Stalled, "{}", f.reason);
    assert!(
        f.reason.contains("slowing the guest by 40 %"),
        "{}",
        f.reason
    ); // From 40 % the throttle reaches 99 % in 6 steps of 10, one every second pass, and each
    // pass sends at most the 128 MiB set at 32 MiB/s: 13 passes of 4 s at the latest.
    let (lo, hi) = (f.eta_min_s.unwrap(), f.eta_max_s.unwrap());
    assert!(lo <= 4, "only the rest of this pass is certain: {lo}");
    assert!((52..=58).contains(&hi), "the ramp's 13 passes: {hi}");
}

#[test]
fn a_dirty_set_within_the_limit_is_switching_over() {
    let (samples, marks) = passes(&[8 * MIB], None);
    let f = forecast(&input(&samples, &marks, None)).unwrap();
    assert_eq!(f.verdict, Verdict::SwitchingOver, "{}", f.reason);
}

#[test]
fn the_first_pass_converges_until_shown_otherwise() {
    let (mut samples, mut marks) = passes(&[], None);
    samples.truncate(10);
    marks.truncate(1);
    let f = forecast(&input(&samples, &marks, None)).unwrap();
    assert_eq!(f.verdict, Verdict::Converging);
    assert!(f.reason.starts_with("first pass:"), "{}", f.reason);
}

#[test]
fn a_first_pass_has_a_latest_end_only_for_a_guest_measured_quiet() {
    let (mut samples, mut marks) = passes(&[], None);
    samples.truncate(10);
    marks.truncate(1);
    let mut i = input(&samples, &marks, None);
    let f = forecast(&i).unwrap();
    assert_eq!(f.eta_min_s, Some(0), "zero pages may make the rest quick");
    assert_eq!(f.eta_max_s, None, "nothing measured");
    // The rest of the first pass at the link's rate.
    let soonest = samples.last().unwrap().mem_remaining_bytes / LINK;
    // 4 MiB/s fits the 9.6 MiB the link sends in 300 ms: the 16 s first pass leaves at most
    // 64 MiB, and the passes after it shrink by a quarter at most.
    i.measured = measured(4);
    let f = forecast(&i).unwrap();
    let latest = f.eta_max_s.expect("a range for a quiet guest");
    assert!(
        (soonest + 3..=soonest + 6).contains(&latest),
        "{soonest}..{latest}"
    );
    // Measured idle is a reading too: the first pass is all there is.
    i.measured = measured(0);
    assert_eq!(forecast(&i).unwrap().eta_max_s, Some(soonest + 2));
    // 20 MiB/s may be a 20 MiB hot set rewritten faster than it is counted: no latest.
    i.measured = measured(20);
    assert_eq!(forecast(&i).unwrap().eta_max_s, None);
}

#[test]
fn a_finished_migration_has_no_forecast() {
    let (samples, marks) = passes(&[8 * MIB], None);
    let mut i = input(&samples, &marks, None);
    i.state = MigrationState::Completed;
    assert!(forecast(&i).is_none());
}

proptest! {
    #[test]
    fn forecasts_are_coherent(sets in prop::collection::vec(1u64..400, 1..8), throttle in prop::option::of(0u32..100)) {
        let sets: Vec<u64> = sets.iter().map(|s| s * MIB).collect();
        let (samples, marks) = passes(&sets, throttle);
        let f = forecast(&input(&samples, &marks, None)).unwrap();
        if let (Some(lo), Some(hi)) = (f.eta_min_s, f.eta_max_s) {
            prop_assert!(lo <= hi);
        }
        // Every figure says how it is known, and a figure that is missing is unknown.
        prop_assert_eq!(f.expected_pause_ms.is_none(), f.expected_pause_basis == Basis::Unknown);
        prop_assert_eq!(
            f.working_set_basis,
            if f.working_set_bytes.is_some() { Basis::AtLeast } else { Basis::Unknown }
        );
        match f.verdict {
            Verdict::WillNotConverge => {
                prop_assert!(f.eta_max_s.is_none());
                prop_assert!(!f.advice.is_empty());
                prop_assert!(*sets.last().unwrap() > f.switchover_bytes.unwrap());
            }
            Verdict::Converging => {
                prop_assert!(f.advice.is_empty());
                // QEMU switches over only once the pause fits: the limit bounds it.
                if f.expected_pause_ms.is_some() {
                    prop_assert_eq!(f.expected_pause_basis, Basis::AtMost);
                }
            }
            Verdict::SwitchingOver => prop_assert!(f.eta_max_s.is_some()),
            _ => {}
        }
        for advice in &f.advice {
            if let Some(lever) = advice.lever {
                prop_assert!(lever.change().is_some());
                if lever.lever == LeverKind::DowntimeLimit {
                    prop_assert!(lever.value.unwrap() <= MAX_ADVISED_PAUSE_MS);
                }
            }
        }
    }
}

/// Seconds the synthetic link needs for the passes after the last observed one until the
/// dirty set fits the threshold (300 ms at 32 MiB/s), and then for the pause that sends it.
fn synthetic_finish_s(last_set: u64, q: f64) -> f64 {
    let threshold = LINK as f64 * 0.3;
    let (mut d, mut s) = (last_set as f64 * q, 0.0);
    while d > threshold {
        s += d / LINK as f64;
        d *= q;
    }
    s + d / LINK as f64
}

fn arbitrary_sample() -> impl Strategy<Value = Sample> {
    (
        (0i64..100_000, 0u32..12, 0u64..(1 << 31), 0u64..(1 << 31)),
        (
            0u64..(200 << 20),
            0u64..(1 << 31),
            prop::option::of(0u32..100),
        ),
        prop::option::of(0u64..100_000),
    )
        .prop_map(
            |((at_ms, iteration, total, remaining), (rate, dirty, throttle), downtime)| Sample {
                at_ms,
                elapsed_ms: at_ms.unsigned_abs(),
                iteration,
                mem_total_bytes: total,
                mem_remaining_bytes: remaining,
                data_remaining_bytes: remaining,
                transfer_rate_bytes_per_s: rate,
                dirty_rate_bytes_per_s: dirty,
                throttle_pct: throttle,
                expected_downtime_ms: downtime,
                xbzrle: (iteration % 2 == 1).then_some(XbzrleStats {
                    cache_bytes: total / 2,
                    bytes: dirty,
                    pages: rate / 4096,
                    cache_misses: remaining / 4096,
                    overflow: 0,
                }),
                ..Sample::default()
            },
        )
}

proptest! {
    /// A guest that refills the same working set every pass (its dirty rate at least the
    /// link's) is never said to converge.
    #[test]
    fn a_set_that_does_not_shrink_never_converges(
        ws in 16u64..400,
        growth in prop::collection::vec(100u64..130, 2..6),
    ) {
        let sets: Vec<u64> = growth
            .iter()
            .scan(ws * MIB, |set, g| {
                *set = *set * g / 100;
                Some(*set)
            })
            .collect();
        let (samples, marks) = passes(&sets, None);
        let f = forecast(&input(&samples, &marks, None)).unwrap();
        prop_assert_eq!(f.verdict, Verdict::WillNotConverge, "{}", f.reason);
        prop_assert!(f.eta_max_s.is_none());
    }

    /// Sets shrinking by a steady factor converge, and the ETA range holds the synthetic
    /// finish.
    #[test]
    fn shrinking_sets_converge_inside_the_eta(
        first in 64u64..400,
        q in 0.2f64..0.7,
        observed in 2usize..4,
    ) {
        let sets: Vec<u64> = (0..observed)
            .map(|i| (first as f64 * MIB as f64 * q.powi(i as i32)) as u64)
            .collect();
        let last = *sets.last().unwrap();
        prop_assume!(last as f64 * q > LINK as f64 * 0.3);
        let (samples, marks) = passes(&sets, None);
        let f = forecast(&input(&samples, &marks, None)).unwrap();
        prop_assert_eq!(f.verdict, Verdict::Converging, "{}", f.reason);
        let finish = synthetic_finish_s(last, q);
        let (lo, hi) = (f.eta_min_s.unwrap() as f64, f.eta_max_s.unwrap() as f64);
        prop_assert!(lo <= finish && finish <= hi, "{lo}..{hi} vs {finish:.2}: {}", f.reason);
    }

    /// Remaining memory falls to zero within every pass and jumps back at the next: that
    /// saw-tooth alone is never a stall.
    #[test]
    fn a_saw_tooth_is_not_a_stall(sets in prop::collection::vec(1u64..400, 1..8)) {
        let sets: Vec<u64> = sets.iter().map(|s| s * MIB).collect();
        let (samples, marks) = passes(&sets, None);
        let f = forecast(&input(&samples, &marks, None)).unwrap();
        prop_assert_ne!(f.verdict, Verdict::Stalled, "{}", f.reason);
    }

    /// Any readings at all — zeros, one sample, counters and passes going backwards after a
    /// reconnect — give a forecast or none, never a panic or a NaN.
    #[test]
    fn any_readings_are_survived(
        samples in prop::collection::vec(arbitrary_sample(), 0..12),
        marks in prop::collection::vec((0u32..12, 0i64..100_000, 0u64..(1 << 31)), 0..8),
        limit in 0u64..5000,
        bandwidth in prop::option::of(0u64..1000),
    ) {
        let marks: Vec<IterationMark> = marks
            .into_iter()
            .map(|(iteration, at_ms, remaining)| IterationMark {
                iteration,
                at_ms,
                elapsed_ms: at_ms.unsigned_abs(),
                mem_remaining_bytes: remaining,
            })
            .collect();
        let caps = Capabilities::default();
        let mut i = input(&samples, &marks, Some(&caps));
        i.downtime_limit_ms = limit;
        i.bandwidth_limit_mib_s = bandwidth;
        if let Some(f) = forecast(&i) {
            let words = format!("{} {:?}", f.reason, f.advice);
            let odd = words
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == "NaN" || w == "inf");
            prop_assert!(!odd, "{words}");
            if let (Some(lo), Some(hi)) = (f.eta_min_s, f.eta_max_s) {
                prop_assert!(lo <= hi);
            }
        }
    }
}

proptest! {
    /// The same dirty set every pass shows only a lower bound on the guest's rate: never a
    /// bandwidth lever built on it, and never called measured.
    #[test]
    fn a_saturated_set_never_yields_a_bandwidth_value(
        ws in 16u64..400,
        jitter in prop::collection::vec(96u64..104, 2..6),
        limit in 1u64..200,
        // And a measurement before it that found the whole set dirty (just as saturated).
        whole_set_measured in prop::option::of(100u64..300),
    ) {
        let sets: Vec<u64> = jitter.iter().map(|j| ws * MIB * j / 100).collect();
        let (samples, marks) = passes(&sets, None);
        let mut i = input(&samples, &marks, None);
        i.bandwidth_limit_mib_s = Some(limit);
        i.measured = whole_set_measured.and_then(|pct| measured(ws * pct / 100 + 1));
        let f = forecast(&i).unwrap();
        prop_assert_ne!(f.dirty_rate_basis, Basis::Measured, "{}", f.reason);
        prop_assert!(
            f.advice.iter().all(|a| a.lever.is_none_or(|l| l.lever != LeverKind::Bandwidth)),
            "{:?}", f.advice
        );
    }

    /// Steady short passes whose dirty set (as QEMU reports it) does not fit the limit are
    /// never "converging" nor "switching over", whatever their lengths do.
    #[test]
    fn steady_short_passes_over_the_limit_never_converge(
        lengths in prop::collection::vec(100i64..900, 8..30),
        expected in 60u64..2000,
        jitter in prop::collection::vec(97u64..103, 1..4),
        limit in 10u64..50,
    ) {
        let expected: Vec<u64> = jitter.iter().map(|j| expected * j / 100).collect();
        let (samples, marks) = hot_set(&lengths, &expected);
        let mut i = input(&samples, &marks, None);
        i.downtime_limit_ms = limit;
        let f = forecast(&i).unwrap();
        prop_assert!(
            !matches!(f.verdict, Verdict::Converging | Verdict::SwitchingOver),
            "{:?}: {}", f.verdict, f.reason
        );
    }

    /// Every downtime limit advised lets the observed dirty set (the larger of the last
    /// pass's and QEMU's) go at the observed rate.
    #[test]
    fn every_advised_downtime_fits_the_observed_set(
        sets in prop::collection::vec(1u64..64, 1..6),
        lengths in prop::collection::vec(100i64..900, 8..20),
        expected in 60u64..1500,
        hot in any::<bool>(),
        limit in 10u64..300,
    ) {
        let sets: Vec<u64> = sets.iter().map(|s| s * MIB).collect();
        let (samples, marks) = if hot { hot_set(&lengths, &[expected]) } else { passes(&sets, None) };
        let mut i = input(&samples, &marks, None);
        i.downtime_limit_ms = limit;
        let f = forecast(&i).unwrap();
        let last = samples.last().unwrap();
        let qemu = last.expected_downtime_ms.unwrap_or(0) * f.transfer_rate_bytes_per_s / 1000;
        let boundary = marks.last().map_or(0, |m| m.mem_remaining_bytes);
        let observed = qemu.max(boundary);
        for advice in &f.advice {
            if let Some(l) = advice.lever.filter(|l| l.lever == LeverKind::DowntimeLimit) {
                let fits = l.value.unwrap() * f.transfer_rate_bytes_per_s / 1000;
                prop_assert!(fits >= observed, "{} ms carries {fits} B < {observed} B: {}", l.value.unwrap(), f.reason);
            }
        }
    }
}
