//! A lever's hint says, with the migration's own numbers, what the lever will do.

use converge_api::{IterationMark, LeverChange, Migration, MigrationState, Sample, XbzrleStats};

use super::{dirty_set, hint};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A running migration to `dst` whose latest sample sends `rate` and has `remaining` left.
fn migration(rate: u64, remaining: u64) -> Migration {
    let mut m = Migration::begun(
        "m1".into(),
        "11111111-2222-3333-4444-555555555555".into(),
        "web1".into(),
        "src".into(),
        MigrationState::Running,
        1_000,
    );
    m.destination = Some("dst".into());
    m.last_sample = Some(Sample {
        transfer_rate_bytes_per_s: rate,
        mem_total_bytes: 4 * GIB,
        mem_remaining_bytes: remaining,
        iteration: 3,
        ..Sample::default()
    });
    m
}

fn mark(iteration: u32, mem_remaining_bytes: u64) -> IterationMark {
    IterationMark {
        iteration,
        at_ms: i64::from(iteration) * 10_000,
        elapsed_ms: u64::from(iteration) * 10_000,
        mem_remaining_bytes,
    }
}

fn assert_says(hint: &str, words: &[&str]) {
    for w in words {
        assert!(hint.contains(w), "{hint:?} does not say {w:?}");
    }
}

#[test]
fn the_dirty_set_is_what_the_latest_pass_left() {
    let m = migration(100 * MIB, 7 * MIB);
    let marks = [mark(2, 300 * MIB), mark(3, 40 * MIB), mark(4, 90 * MIB)];
    assert_eq!(dirty_set(&m, &marks), Some(90 * MIB));
}

#[test]
fn the_dirty_set_skips_the_first_pass_and_boundaries_not_yet_measured() {
    let m = migration(100 * MIB, 7 * MIB);
    // Pass 1 begins with all of memory, not a dirty set; a boundary is announced
    // before its value (0) is known.
    let marks = [mark(1, 4 * GIB), mark(2, 120 * MIB), mark(3, 0)];
    assert_eq!(dirty_set(&m, &marks), Some(120 * MIB));
    assert_eq!(
        dirty_set(&m, &[mark(1, 4 * GIB)]),
        Some(7 * MIB),
        "the latest sample, until a pass has ended"
    );
}

#[test]
fn without_samples_or_boundaries_the_dirty_set_is_unknown() {
    let mut m = migration(0, 0);
    m.last_sample = None;
    assert_eq!(dirty_set(&m, &[]), None);
    assert_eq!(dirty_set(&m, &[mark(2, 64 * MIB)]), Some(64 * MIB));
}

#[test]
fn a_downtime_limit_that_fits_the_dirty_set_switches_over() {
    // 100 MiB/s for 300 ms carries 30 MiB; the last pass left 20 MiB.
    let h = hint(
        LeverChange::DowntimeLimit { ms: 300 },
        &migration(100 * MIB, 5 * MIB),
        Some(20 * MIB),
    );
    assert_says(
        &h,
        &[
            "fits in 300 ms",
            "at 100.0 MiB/s",
            "up to 30 MiB",
            "the last pass left 20 MiB",
            "switch over at the next pass",
            "pause the guest up to 300 ms",
        ],
    );
    assert!(!h.contains("not enough"), "{h:?}");
}

#[test]
fn a_dirty_set_of_exactly_what_fits_switches_over() {
    let h = hint(
        LeverChange::DowntimeLimit { ms: 300 },
        &migration(100 * MIB, 5 * MIB),
        Some(30 * MIB),
    );
    assert_says(&h, &["switch over at the next pass"]);
}

#[test]
fn a_downtime_limit_too_small_for_the_dirty_set_says_so() {
    let h = hint(
        LeverChange::DowntimeLimit { ms: 500 },
        &migration(32 * MIB, 5 * MIB),
        Some(64 * MIB),
    );
    assert_says(
        &h,
        &[
            "fits in 500 ms",
            "at 32.0 MiB/s",
            "up to 16 MiB",
            "the last pass left 64 MiB: not enough yet to switch over",
        ],
    );
    assert!(!h.contains("pause the guest"), "{h:?}");
}

#[test]
fn a_downtime_limit_before_any_pass_has_ended() {
    let h = hint(
        LeverChange::DowntimeLimit { ms: 2_500 },
        &migration(64 * MIB, 5 * MIB),
        None,
    );
    assert_says(
        &h,
        &["fits in 2.5 s", "up to 160 MiB", "no pass has ended yet"],
    );
}

#[test]
fn a_bandwidth_cap_says_how_long_a_pass_over_the_dirty_set_takes() {
    // 100 MiB at 50 MiB/s: 2 s.
    let h = hint(
        LeverChange::Bandwidth { mib_s: 50 },
        &migration(80 * MIB, 5 * MIB),
        Some(100 * MIB),
    );
    assert_says(
        &h,
        &["At 50.0 MiB/s", "dirty set of 100 MiB", "takes about 2.0 s"],
    );
}

#[test]
fn a_bandwidth_cap_without_a_dirty_set_says_the_cap() {
    let h = hint(
        LeverChange::Bandwidth { mib_s: 2_048 },
        &migration(80 * MIB, 5 * MIB),
        None,
    );
    assert_eq!(h, "Caps the migration at 2.00 GiB/s.");
}

#[test]
fn an_absurd_bandwidth_cap_does_not_wrap_to_nothing() {
    // 2^44 MiB/s shifted into bytes used to wrap to 0: "Caps the migration at 0 KiB/s".
    let h = hint(
        LeverChange::Bandwidth { mib_s: 1 << 44 },
        &migration(80 * MIB, 5 * MIB),
        Some(100 * MIB),
    );
    assert!(h.contains("GiB/s"), "{h:?}");
    assert!(!h.contains("KiB/s"), "{h:?}");
}

#[test]
fn an_xbzrle_cache_hint_gives_the_size_hits_and_dirty_set() {
    let mut m = migration(80 * MIB, 5 * MIB);
    if let Some(s) = m.last_sample.as_mut() {
        s.xbzrle = Some(XbzrleStats {
            cache_bytes: 64 * MIB,
            pages: 750,
            cache_misses: 250,
            ..XbzrleStats::default()
        });
    }
    let h = hint(
        LeverChange::XbzrleCache { bytes: 256 * MIB },
        &m,
        Some(128 * MIB),
    );
    assert_says(
        &h,
        &[
            "A 256 MiB cache",
            "(hits now 75 %)",
            "as the dirty set (128 MiB)",
        ],
    );
}

#[test]
fn an_xbzrle_cache_hint_without_xbzrle_or_dirty_set() {
    let h = hint(
        LeverChange::XbzrleCache { bytes: GIB },
        &migration(80 * MIB, 5 * MIB),
        None,
    );
    assert_says(&h, &["A 1.00 GiB cache", "(not known yet)"]);
    assert!(!h.contains("hits now"), "{h:?}");
}

#[test]
fn post_copy_names_the_destination_and_what_is_still_missing() {
    // 512 MiB at 128 MiB/s: 4 s.
    let h = hint(
        LeverChange::PostCopy,
        &migration(128 * MIB, 512 * MIB),
        None,
    );
    assert_says(
        &h,
        &[
            "runs on dst at once",
            "fetches the 512 MiB still missing",
            "about 4.0 s at the current rate",
            "a network failure then loses it",
        ],
    );
}

#[test]
fn post_copy_without_a_rate_or_destination() {
    let mut m = migration(0, 512 * MIB);
    m.destination = None;
    let h = hint(LeverChange::PostCopy, &m, None);
    assert_says(&h, &["runs on the destination at once", "the 512 MiB"]);
    assert!(!h.contains("current rate"), "{h:?}");
}
