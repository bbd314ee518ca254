//! Figures as the user reads them: the right unit, and a number that is the value rounded
//! to its last digit, whatever the value.

use super::{GIB, KIB, MIB, advice_outcome, bytes, dirty_rate, duration_ms, pct, preset, rate};

/// A size or rate as written: its number, its unit in bytes, and its decimals.
fn read(text: &str) -> (f64, u64, usize) {
    let (number, unit) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("no unit in {text:?}"));
    let unit = match unit.trim_end_matches("/s") {
        "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        other => panic!("unknown unit {other:?} in {text:?}"),
    };
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
    (number.parse().unwrap(), unit, decimals)
}

/// Checks that `text` says `n` rounded to its last digit, and returns the value it says.
fn says(text: &str, n: u64) -> f64 {
    let (number, unit, decimals) = read(text);
    let shown = number * unit as f64;
    let half_step = 0.5 * unit as f64 / 10f64.powi(decimals as i32);
    assert!(
        (shown - n as f64).abs() <= half_step * (1.0 + 1e-9),
        "{n} reads {text:?}"
    );
    if unit < GIB {
        assert!(number < 1024.0, "{n} reads {text:?}: the next unit up");
    }
    shown
}

/// Values on both sides of every place where a figure changes unit or decimals.
fn around_every_edge() -> Vec<u64> {
    let edges = [
        KIB,
        MIB - KIB / 2,
        MIB,
        10 * MIB - MIB / 20,
        10 * MIB,
        GIB - MIB / 2,
        GIB - MIB / 20,
        GIB,
    ];
    let mut values: Vec<u64> = (0..2048).collect();
    for edge in edges {
        values.extend(edge.saturating_sub(1500)..edge + 1500);
    }
    // And a geometric sweep up to the largest value.
    let mut v = 1.0_f64;
    while v < u64::MAX as f64 {
        values.push(v as u64);
        v *= 1.007;
    }
    values.push(u64::MAX);
    values.sort_unstable();
    values.dedup();
    values
}

#[test]
fn bytes_in_each_unit() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1), "1 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1024), "1 KiB");
    assert_eq!(bytes(1535), "1 KiB");
    assert_eq!(bytes(1536), "2 KiB", "halves round up");
    assert_eq!(bytes(740 * KIB), "740 KiB");
    assert_eq!(bytes(MIB), "1.0 MiB");
    assert_eq!(bytes(MIB + MIB / 2), "1.5 MiB");
    assert_eq!(bytes(10 * MIB), "10 MiB");
    assert_eq!(bytes(512 * MIB), "512 MiB");
    assert_eq!(bytes(GIB), "1.00 GiB");
    assert_eq!(bytes(GIB + GIB / 2), "1.50 GiB");
    assert_eq!(bytes(1_932 * MIB + MIB / 2), "1.89 GiB");
    assert_eq!(bytes(64 * GIB), "64.00 GiB");
    assert_eq!(bytes(u64::MAX), "17179869184.00 GiB");
}

#[test]
fn bytes_never_read_as_the_next_unit_up() {
    // Short of a GiB by less than half a MiB, "1024 MiB" would be the rounded figure.
    assert_eq!(bytes(GIB - 1), "1.00 GiB");
    assert_eq!(bytes(GIB - MIB / 2), "1.00 GiB");
    assert_eq!(bytes(GIB - MIB / 2 - 1), "1023 MiB");
    assert_eq!(bytes(10 * MIB - 1), "10 MiB");
    assert_eq!(bytes(10 * MIB - MIB / 20 - 1), "9.9 MiB");
    assert_eq!(bytes(MIB - 1), "1.0 MiB");
    assert_eq!(bytes(MIB - KIB / 2 - 1), "1023 KiB");
}

#[test]
fn bytes_say_the_value_rounded_and_never_run_backwards() {
    let mut last = -1.0;
    for n in around_every_edge() {
        let text = bytes(n);
        let shown = says(&text, n);
        let (number, unit, decimals) = read(&text);
        if unit == MIB && decimals == 1 {
            assert!(number < 10.0, "{n} reads {text:?}");
        }
        assert!(shown >= last, "{n} reads {text:?}, less than before");
        last = shown;
    }
}

#[test]
fn rates_in_each_unit() {
    assert_eq!(rate(0), "0 KiB/s");
    assert_eq!(rate(511), "0 KiB/s");
    assert_eq!(rate(512), "1 KiB/s");
    assert_eq!(rate(300 * KIB), "300 KiB/s");
    assert_eq!(rate(MIB), "1.0 MiB/s");
    assert_eq!(rate(32 * MIB), "32.0 MiB/s");
    assert_eq!(rate(117 * MIB + 3 * MIB / 10), "117.3 MiB/s");
    assert_eq!(rate(GIB), "1.00 GiB/s");
    assert_eq!(rate(GIB + GIB / 4), "1.25 GiB/s");
}

#[test]
fn rates_never_read_as_the_next_unit_up() {
    assert_eq!(rate(MIB - 1), "1.0 MiB/s");
    assert_eq!(rate(MIB - KIB / 2 - 1), "1023 KiB/s");
    assert_eq!(rate(GIB - 1), "1.00 GiB/s");
    assert_eq!(rate(GIB - MIB / 20 - 1), "1023.9 MiB/s");
}

#[test]
fn rates_say_the_value_rounded_and_never_run_backwards() {
    let mut last = -1.0;
    for n in around_every_edge() {
        let text = rate(n);
        assert!(text.ends_with("/s"), "{text:?}");
        let shown = says(&text, n);
        assert!(shown >= last, "{n} B/s reads {text:?}, less than before");
        last = shown;
    }
}

/// What a duration as written stands for, ms, and the step of its last field.
fn read_duration(text: &str) -> (u64, u64) {
    let fields: Vec<&str> = text.split(' ').collect();
    match fields[..] {
        [n, "ms"] => (n.parse().unwrap(), 1),
        [s, "s"] => {
            let (whole, tenths) = s.split_once('.').unwrap();
            assert_eq!(tenths.len(), 1, "{text:?}");
            (
                whole.parse::<u64>().unwrap() * 1000 + tenths.parse::<u64>().unwrap() * 100,
                100,
            )
        }
        [m, "min", s, "s"] => {
            assert_eq!(s.len(), 2, "{text:?}");
            let s: u64 = s.parse().unwrap();
            assert!(s < 60, "{text:?}");
            (m.parse::<u64>().unwrap() * 60_000 + s * 1000, 1000)
        }
        [h, "h", m, "min"] => {
            assert_eq!(m.len(), 2, "{text:?}");
            let m: u64 = m.parse().unwrap();
            assert!(m < 60, "{text:?}");
            (h.parse::<u64>().unwrap() * 3_600_000 + m * 60_000, 60_000)
        }
        _ => panic!("cannot read {text:?}"),
    }
}

#[test]
fn durations_in_each_unit() {
    assert_eq!(duration_ms(0), "0 ms");
    assert_eq!(duration_ms(33), "33 ms");
    assert_eq!(duration_ms(999), "999 ms");
    assert_eq!(duration_ms(1000), "1.0 s");
    assert_eq!(duration_ms(4_100), "4.1 s");
    assert_eq!(duration_ms(4_199), "4.1 s");
    assert_eq!(duration_ms(59_900), "59.9 s");
    assert_eq!(duration_ms(60_000), "1 min 00 s");
    assert_eq!(duration_ms(125_000), "2 min 05 s");
    assert_eq!(duration_ms(125_999), "2 min 05 s");
    assert_eq!(duration_ms(3_599_999), "59 min 59 s");
    assert_eq!(duration_ms(3_600_000), "1 h 00 min");
    assert_eq!(duration_ms(3_720_000), "1 h 02 min");
    assert_eq!(duration_ms(100 * 3_600_000 + 59 * 60_000), "100 h 59 min");
}

#[test]
fn a_duration_short_of_a_minute_never_reads_sixty_seconds() {
    assert_eq!(duration_ms(59_950), "59.9 s");
    assert_eq!(duration_ms(59_999), "59.9 s");
}

#[test]
fn durations_round_down_in_every_unit_and_never_run_backwards() {
    let mut values: Vec<u64> = (0..3000).collect();
    for edge in [60_000, 3_600_000, 86_400_000] {
        values.extend(edge - 2000..edge + 2000);
    }
    let mut v = 1.0_f64;
    while v < 1e15 {
        values.push(v as u64);
        v *= 1.01;
    }
    values.sort_unstable();
    let mut last = 0;
    for ms in values {
        let text = duration_ms(ms);
        let (shown, step) = read_duration(&text);
        assert!(shown <= ms && ms < shown + step, "{ms} ms reads {text:?}");
        assert!(shown >= last, "{ms} ms reads {text:?}, less than before");
        last = shown;
    }
    // The largest value still reads as hours and minutes.
    read_duration(&duration_ms(u64::MAX));
}

#[test]
fn percentages_round_to_whole_percent() {
    assert_eq!(pct(0.0), "0 %");
    assert_eq!(pct(0.4), "0 %");
    assert_eq!(pct(0.5), "1 %");
    assert_eq!(pct(63.4), "63 %");
    assert_eq!(pct(63.5), "64 %");
    assert_eq!(pct(99.4), "99 %");
}

#[test]
fn only_all_of_it_reads_a_hundred_percent() {
    // A 4 GiB guest with a 16 MiB dirty set is 99.6 % there, and not done.
    assert_eq!(pct(99.5), "99 %");
    assert_eq!(pct(99.6), "99 %");
    assert_eq!(pct(99.999), "99 %");
    assert_eq!(pct(100.0), "100 %");
}

#[test]
fn the_preset_names_what_the_start_changed() {
    let changed = vec!["bandwidth_mib_s".to_owned(), "deadline.stall_s".to_owned()];
    assert_eq!(
        preset(Some("converge"), Some(&changed)),
        "converge, changed: bandwidth_mib_s, deadline.stall_s"
    );
    assert_eq!(preset(Some("nova"), Some(&[])), "nova");
    assert_eq!(preset(Some("nova"), None), "nova");
    assert_eq!(preset(None, None), "–");
}

#[test]
fn a_dirty_rate_reading_says_its_trend_and_age() {
    let r = |bytes_per_s, previous_bytes_per_s| converge_api::DirtyRate {
        bytes_per_s,
        at_ms: 1_000_000,
        previous_bytes_per_s,
        period_s: 1,
    };
    assert_eq!(
        dirty_rate(&r(12 * MIB, None), 1_030_000),
        "12.0 MiB/s 30 s ago"
    );
    assert_eq!(
        dirty_rate(&r(12 * MIB, Some(6 * MIB)), 1_000_000 + 185_000),
        "12.0 MiB/s ↑ 3 min ago"
    );
    assert_eq!(
        dirty_rate(&r(6 * MIB, Some(12 * MIB)), 1_000_000),
        "6.0 MiB/s ↓ 0 s ago"
    );
    assert_eq!(
        dirty_rate(&r(11 * MIB, Some(12 * MIB)), 1_000_000),
        "11.0 MiB/s 0 s ago"
    );
}

#[test]
fn only_applied_advice_has_an_outcome() {
    let mut r = converge_api::AdviceRecord {
        action: "Raise the downtime limit to 300 ms".into(),
        lever: None,
        first_at_ms: 0,
        last_at_ms: 0,
        applied_at_ms: None,
        applied_by: None,
        outcome: None,
    };
    assert_eq!(advice_outcome(&r), None);
    r.applied_at_ms = Some(1);
    r.applied_by = Some("ada".into());
    r.outcome = Some("completed 2 s later".into());
    assert_eq!(
        advice_outcome(&r).as_deref(),
        Some("Raise the downtime limit to 300 ms: applied by ada → completed 2 s later")
    );
}
