//! Policy: examples from the presets, and properties over arbitrary settings.

use converge_api::{Deadline, DowntimeSteps, Growth, MigrationSettings, TimeoutAction};
use proptest::prelude::*;

use super::*;

const HALF_GIB: u64 = 512 << 20;

fn input(now_s: i64, iteration: u32, best_dirty: Option<u64>) -> PolicyInput {
    PolicyInput {
        now_ms: 1_000_000 + now_s * 1000,
        started_at_ms: 1_000_000,
        iteration,
        mem_total_bytes: HALF_GIB,
        best_dirty,
    }
}

fn nova() -> MigrationSettings {
    crate::presets::builtin()
        .into_iter()
        .find(|p| p.name == "nova")
        .unwrap()
        .settings
}

#[test]
fn novas_timeout_scales_with_memory_and_ours_is_capped() {
    assert_eq!(completion_timeout_s(&nova(), 16 << 30), Some(12_800));
    let ours = crate::presets::builtin().remove(0).settings;
    assert_eq!(completion_timeout_s(&ours, 16 << 30), Some(3400));
    assert_eq!(completion_timeout_s(&ours, HALF_GIB), Some(400));
}

#[test]
fn novas_downtime_steps_every_75_s_per_gib() {
    let steps = nova().downtime_steps.unwrap();
    assert_eq!(step_value(&steps, 0), 50);
    assert_eq!(step_value(&steps, 1), 95);
    assert_eq!(step_value(&steps, 10), 500);
    // Half a GiB: a step every 37.5 s.
    assert_eq!(due_step(&steps, &input(37, 4, None)), 0);
    assert_eq!(due_step(&steps, &input(38, 4, None)), 1);
    assert_eq!(due_step(&steps, &input(10_000, 4, None)), 10);
}

#[test]
fn doubling_stops_at_the_maximum() {
    let steps = DowntimeSteps {
        start_ms: 100,
        max_ms: 2000,
        growth: Growth::Double,
        steps: None,
        every_s: None,
        every_s_per_gib: None,
        every_iterations: Some(1),
    };
    let values: Vec<u64> = (0..=last_step(&steps))
        .map(|k| step_value(&steps, k))
        .collect();
    assert_eq!(values, vec![100, 200, 400, 800, 1600, 2000]);
    assert_eq!(due_step(&steps, &input(0, 3, None)), 2);
}

#[test]
fn a_step_is_decided_once_with_its_reason() {
    let settings = nova();
    let mut state = PolicyState::default();
    assert!(decide(&settings, &mut state, &input(10, 2, None)).is_empty());
    let decisions = decide(&settings, &mut state, &input(40, 3, None));
    assert_eq!(
        decisions,
        vec![Decision::Lever {
            change: LeverChange::DowntimeLimit { ms: 95 },
            reason: "downtime step 1 of 10: 50 → 95 ms (40 s elapsed)".into()
        }]
    );
    assert!(decide(&settings, &mut state, &input(41, 3, None)).is_empty());
}

#[test]
fn the_completion_deadline_fires_once_with_the_formula() {
    let settings = MigrationSettings {
        deadline: Deadline {
            completion_s_per_gib: Some(800),
            completion_max_s: Some(30),
            stall_s: None,
            action: TimeoutAction::Abort,
        },
        ..MigrationSettings::default()
    };
    let mut state = PolicyState::default();
    assert!(decide(&settings, &mut state, &input(29, 5, Some(100 << 20))).is_empty());
    let pending_deadline = pending(&settings, &state, &input(29, 5, None)).unwrap();
    assert_eq!(pending_deadline.at_ms, 1_000_000 + 30_000);
    let decisions = decide(&settings, &mut state, &input(30, 5, Some(100 << 20)));
    assert_eq!(
        decisions,
        vec![Decision::Deadline {
            action: TimeoutAction::Abort,
            reason: "running for 30 s, past the completion timeout of 30 s (800 s/GiB × 0.50 GiB, capped at 30 s)".into()
        }]
    );
    assert!(decide(&settings, &mut state, &input(31, 5, None)).is_empty());
    assert!(pending(&settings, &state, &input(31, 5, None)).is_none());
}

#[test]
fn a_stall_is_judged_on_the_smallest_dirty_set() {
    let settings = MigrationSettings {
        deadline: Deadline {
            stall_s: Some(20),
            action: TimeoutAction::PostCopy,
            ..Deadline::default()
        },
        ..MigrationSettings::default()
    };
    let mut state = PolicyState::default();
    // The first pass takes 60 s: never a stall.
    assert!(decide(&settings, &mut state, &input(60, 1, None)).is_empty());
    assert!(decide(&settings, &mut state, &input(65, 2, Some(200 << 20))).is_empty());
    // Shrinks by a quarter at 75 s: the clock restarts.
    assert!(decide(&settings, &mut state, &input(75, 4, Some(150 << 20))).is_empty());
    // A 2 % wobble is noise, not progress.
    assert!(decide(&settings, &mut state, &input(85, 5, Some(147 << 20))).is_empty());
    assert!(decide(&settings, &mut state, &input(94, 7, Some(147 << 20))).is_empty());
    let decisions = decide(&settings, &mut state, &input(95, 8, Some(147 << 20)));
    assert_eq!(
        decisions,
        vec![Decision::Deadline {
            action: TimeoutAction::PostCopy,
            reason: "the smallest dirty set (150 MiB) has not shrunk for 20 s".into()
        }]
    );
}

fn arb_steps() -> impl Strategy<Value = DowntimeSteps> {
    (
        1u64..5000,
        0u64..60_000,
        prop::bool::ANY,
        1u32..50,
        prop::option::of(1u64..600),
        prop::bool::ANY,
        1u32..10,
    )
        .prop_map(
            |(start, extra, linear, n, every_s, per_gib, every_it)| DowntimeSteps {
                start_ms: start,
                max_ms: start + extra,
                growth: if linear {
                    Growth::Linear
                } else {
                    Growth::Double
                },
                steps: Some(n),
                every_s: every_s.filter(|_| !per_gib),
                every_s_per_gib: every_s.filter(|_| per_gib),
                every_iterations: every_s.is_none().then_some(every_it),
            },
        )
}

proptest! {
    #[test]
    fn step_values_rise_from_start_to_max(steps in arb_steps()) {
        let last = last_step(&steps);
        prop_assert_eq!(step_value(&steps, 0), steps.start_ms);
        prop_assert_eq!(step_value(&steps, last), steps.max_ms);
        for k in 0..last {
            prop_assert!(step_value(&steps, k) <= step_value(&steps, k + 1));
        }
        prop_assert_eq!(step_value(&steps, last + 5), steps.max_ms);
    }

    #[test]
    fn due_steps_never_go_back_nor_past_the_last(
        steps in arb_steps(),
        times in prop::collection::vec(0i64..100_000, 1..40),
        mem in 1u64..(64u64 << 30),
    ) {
        let mut times = times;
        times.sort_unstable();
        let mut previous = 0;
        for (i, t) in times.iter().enumerate() {
            let reading = PolicyInput {
                now_ms: *t * 1000,
                started_at_ms: 0,
                iteration: i as u32 + 1,
                mem_total_bytes: mem,
                best_dirty: None,
            };
            let due = due_step(&steps, &reading);
            prop_assert!(due >= previous);
            prop_assert!(due <= last_step(&steps));
            previous = due;
        }
    }

    #[test]
    fn a_deadline_fires_at_most_once_and_never_early(
        per_gib in prop::option::of(1u64..2000),
        max_s in prop::option::of(10u64..5000),
        stall_s in prop::option::of(5u64..5000),
        readings in prop::collection::vec((0i64..20_000, 1u32..100, prop::option::of(0u64..(1u64 << 30))), 1..60),
    ) {
        let settings = MigrationSettings {
            deadline: Deadline { completion_s_per_gib: per_gib, completion_max_s: max_s, stall_s, action: TimeoutAction::Abort },
            ..MigrationSettings::default()
        };
        let mut readings = readings;
        readings.sort_by_key(|r| r.0);
        let mut state = PolicyState::default();
        let mut fired = 0;
        let timeout = completion_timeout_s(&settings, HALF_GIB);
        for (t, iteration, best) in readings {
            let reading = PolicyInput { now_ms: t * 1000, started_at_ms: 0, iteration, mem_total_bytes: HALF_GIB, best_dirty: best };
            for decision in decide(&settings, &mut state, &reading) {
                if let Decision::Deadline { reason, .. } = decision {
                    fired += 1;
                    if reason.starts_with("running for") {
                        prop_assert!(t as u64 >= timeout.unwrap());
                    } else {
                        prop_assert!(t as u64 >= stall_s.unwrap());
                    }
                }
            }
        }
        prop_assert!(fired <= 1);
        if let (Some(max), Some(t)) = (max_s, timeout) {
            prop_assert!(t <= max);
        }
    }
}

mod adaptive {
    use converge_api::{
        Advice, Basis, Forecast, LeverChange, Migration, MigrationSettings, MigrationState, Sample,
        TimeoutAction, Verdict, XbzrleStats,
    };

    use crate::policy::{Decision, PolicyState, StartFacts, adapt, adapt_start};

    const MIB: u64 = 1 << 20;

    fn adaptive(postcopy: bool, link_mib_s: u64) -> MigrationSettings {
        let mut s = MigrationSettings {
            adaptive: true,
            bandwidth_mib_s: Some(link_mib_s),
            ..MigrationSettings::default()
        };
        s.capabilities.postcopy = postcopy;
        s
    }

    fn facts(dirty_mib_s: Option<u64>, history: &[Migration]) -> StartFacts<'_> {
        StartFacts {
            memory_bytes: 512 * MIB,
            dirty_rate: dirty_mib_s.map(|r| r * MIB),
            history,
        }
    }

    #[test]
    fn a_guest_too_quiet_for_a_set_that_would_not_fit_gets_nothing() {
        // 0 MiB/s (no sampled page changed), and 4 MiB/s: a hot set of twice that, 8 MiB,
        // fits in 300 ms at 32 MiB/s (9.6 MiB).
        for rate in [0, 4] {
            let (s, why) = adapt_start(&adaptive(false, 32), &facts(Some(rate), &[]));
            assert_eq!(
                s.capabilities,
                converge_api::Capabilities::default(),
                "{rate}"
            );
            assert!(
                why.ends_with("pre-copy alone converges, no capability needed"),
                "{why}"
            );
        }
        // Without a link only a reading of 0 says so.
        let mut unlimited = adaptive(false, 32);
        unlimited.bandwidth_mib_s = None;
        let (s, _) = adapt_start(&unlimited, &facts(Some(0), &[]));
        assert_eq!(s.capabilities.xbzrle_cache_bytes, None);
        let (s, _) = adapt_start(&unlimited, &facts(Some(4), &[]));
        assert_eq!(s.capabilities.xbzrle_cache_bytes, Some(64 * MIB));
        // A lower downtime limit fits less: 4 MiB/s × 2 > 32 MiB/s × 100 ms.
        let mut tight = adaptive(false, 32);
        tight.downtime_limit_ms = Some(100);
        let (s, _) = adapt_start(&tight, &facts(Some(4), &[]));
        assert_eq!(s.capabilities.xbzrle_cache_bytes, Some(64 * MIB));
    }

    #[test]
    fn a_quiet_guest_gets_only_a_small_xbzrle_cache() {
        // The lab's 16 MiB hot set rewritten at 200 MiB/s read 8 MiB/s: twice that does not
        // fit in 300 ms at 32 MiB/s.
        let (s, why) = adapt_start(&adaptive(false, 32), &facts(Some(8), &[]));
        assert_eq!(
            s.capabilities,
            converge_api::Capabilities {
                xbzrle_cache_bytes: Some(64 * MIB),
                ..converge_api::Capabilities::default()
            }
        );
        assert_eq!(
            why,
            "dirty rate measured 8 MiB/s against a 32 MiB/s link: pre-copy alone should converge; a 64 MiB xbzrle cache in case it keeps rewriting a small hot set"
        );
    }

    #[test]
    fn a_busy_guest_gets_xbzrle_and_a_way_out() {
        let (s, why) = adapt_start(&adaptive(false, 32), &facts(Some(100), &[]));
        assert_eq!(s.capabilities.xbzrle_cache_bytes, Some(256 * MIB));
        assert!(s.capabilities.postcopy);
        assert!(
            why.contains("xbzrle with a 256 MiB cache, post-copy allowed"),
            "{why}"
        );
        assert!(converge_api::refusal(&converge_api::lint(&s, 512 * MIB)).is_none());
    }

    #[test]
    fn xbzrle_that_missed_last_time_is_not_tried_again() {
        let mut last = Migration::begun(
            "m0".into(),
            "u".into(),
            "vm".into(),
            "a".into(),
            MigrationState::Completed,
            0,
        );
        last.last_sample = Some(Sample {
            xbzrle: Some(XbzrleStats {
                pages: 5,
                cache_misses: 95,
                ..XbzrleStats::default()
            }),
            ..Sample::default()
        });
        let history = [last];
        let (s, why) = adapt_start(&adaptive(false, 32), &facts(Some(300), &history));
        assert_eq!(s.capabilities.xbzrle_cache_bytes, None);
        assert!(
            why.contains("last time it found only 5 % of pages in its cache"),
            "{why}"
        );
        // Nor for a quiet guest, which then gets nothing at all.
        let (s, why) = adapt_start(&adaptive(false, 32), &facts(Some(4), &history));
        assert_eq!(s.capabilities, converge_api::Capabilities::default());
        assert!(
            why.ends_with("pre-copy alone converges, no capability needed"),
            "{why}"
        );
    }

    fn hopeless(downtime_ms: Option<u64>) -> Forecast {
        Forecast {
            transfer_rate_bytes_per_s: 32 * MIB,
            dirty_rate_bytes_per_s: Some(96 * MIB),
            dirty_rate_basis: Basis::AtLeast,
            working_set_bytes: Some(128 * MIB),
            working_set_basis: Basis::AtLeast,
            switchover_bytes: Some(10 * MIB),
            expected_pause_ms: Some(4000),
            expected_pause_basis: Basis::AtLeast,
            advice: downtime_ms
                .map(|ms| Advice {
                    lever: Some(LeverChange::DowntimeLimit { ms }.into()),
                    action: String::new(),
                    effect: String::new(),
                })
                .into_iter()
                .collect(),
            ..Forecast::new(
                Verdict::WillNotConverge,
                "the guest dirties at least 96.0 MiB/s",
            )
        }
    }

    #[test]
    fn it_raises_downtime_first_then_switches_to_post_copy() {
        let settings = adaptive(true, 32);
        let mut state = PolicyState::default();
        let first = adapt(&settings, &mut state, Some(&hopeless(Some(1200))), 3);
        assert!(
            matches!(&first[..], [Decision::Lever { change: LeverChange::DowntimeLimit { ms: 1200 }, reason }] if reason.contains("alone lets it switch over")),
            "{first:?}"
        );
        let second = adapt(&settings, &mut state, Some(&hopeless(Some(1200))), 4);
        assert!(
            matches!(
                &second[..],
                [Decision::Deadline {
                    action: TimeoutAction::PostCopy,
                    ..
                }]
            ),
            "{second:?}"
        );
        assert!(
            adapt(&settings, &mut state, Some(&hopeless(None)), 5).is_empty(),
            "done after post-copy"
        );
    }

    #[test]
    fn without_post_copy_it_gives_up_early_with_the_reason() {
        let settings = adaptive(false, 32);
        let mut state = PolicyState::default();
        assert!(adapt(&settings, &mut state, Some(&hopeless(None)), 3).is_empty());
        assert!(adapt(&settings, &mut state, Some(&hopeless(None)), 4).is_empty());
        let last = adapt(&settings, &mut state, Some(&hopeless(None)), 5);
        match &last[..] {
            [
                Decision::Deadline {
                    action: TimeoutAction::Abort,
                    reason,
                },
            ] => {
                assert!(
                    reason.contains("96.0 MiB/s") && reason.contains("No lever is left"),
                    "{reason}"
                );
            }
            other => panic!("expected an abort, got {other:?}"),
        }
    }

    #[test]
    fn a_static_preset_never_adapts() {
        let mut settings = adaptive(true, 32);
        settings.adaptive = false;
        let mut state = PolicyState::default();
        assert!(adapt(&settings, &mut state, Some(&hopeless(Some(500))), 3).is_empty());
    }
}
