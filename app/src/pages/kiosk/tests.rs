//! The board's order: what needs someone to look at it comes first.

use converge_api::{
    Forecast, Migration, MigrationState, PendingDeadline, Sample, TimeoutAction, Verdict,
};

use super::{HARD_THROTTLE_PCT, NEAR_DEADLINE_MS, attention, by_attention};
use crate::live::MigrationView;

const NOW: i64 = 1_800_000_000_000;

fn forecast(verdict: Verdict) -> Forecast {
    Forecast::new(verdict, "")
}

/// A running migration of `name`, started `started` ms ago, with `verdict`.
fn running(name: &str, started: i64, verdict: Option<Verdict>) -> MigrationView {
    let mut migration = Migration::begun(
        format!("id-{name}"),
        format!("uuid-{name}"),
        name.into(),
        "src".into(),
        MigrationState::Running,
        NOW - started,
    );
    migration.forecast = verdict.map(forecast);
    MigrationView {
        migration,
        samples: Vec::new(),
        iterations: Vec::new(),
    }
}

fn throttled(mut v: MigrationView, pct: u32) -> MigrationView {
    v.migration.last_sample = Some(Sample {
        throttle_pct: Some(pct),
        ..Sample::default()
    });
    v
}

fn deadline_in(mut v: MigrationView, ms: i64) -> MigrationView {
    v.migration.deadline = Some(PendingDeadline {
        at_ms: NOW + ms,
        kind: "completion".into(),
        action: TimeoutAction::Abort,
    });
    v
}

fn post_copy(mut v: MigrationView) -> MigrationView {
    v.migration.state = MigrationState::PostCopy;
    v
}

/// The board's order of `views`, by name.
fn board(views: &[MigrationView]) -> Vec<&str> {
    let mut tiles: Vec<(u8, i64, &str)> = views
        .iter()
        .map(|v| {
            (
                attention(v, NOW).0,
                v.migration.started_at_ms,
                v.migration.vm_name.as_str(),
            )
        })
        .collect();
    by_attention(&mut tiles);
    tiles.into_iter().map(|(.., name)| name).collect()
}

#[test]
fn each_reason_has_its_rank_and_words() {
    let cases = [
        (
            running("a", 0, Some(Verdict::WillNotConverge)),
            0,
            "will not converge",
        ),
        (running("a", 0, Some(Verdict::Stalled)), 1, "stalled"),
        (
            throttled(running("a", 0, Some(Verdict::Converging)), 60),
            2,
            "throttled",
        ),
        (
            deadline_in(running("a", 0, Some(Verdict::Converging)), 60_000),
            3,
            "near deadline",
        ),
        (
            post_copy(running("a", 0, Some(Verdict::PostCopy))),
            4,
            "post-copy",
        ),
        (
            running("a", 0, Some(Verdict::SwitchingOver)),
            5,
            "switching over",
        ),
        (running("a", 0, Some(Verdict::Converging)), 6, "converging"),
        (running("a", 0, None), 7, "starting"),
    ];
    for (view, rank, why) in cases {
        assert_eq!(attention(&view, NOW), (rank, why), "{view:?}");
    }
}

#[test]
fn the_worst_reason_wins() {
    // Will not converge, hard throttled, deadline in a minute: still "will not converge".
    let v = deadline_in(
        throttled(running("a", 0, Some(Verdict::WillNotConverge)), 99),
        60_000,
    );
    assert_eq!(attention(&v, NOW).0, 0);
    let v = throttled(running("a", 0, Some(Verdict::Stalled)), 99);
    assert_eq!(attention(&v, NOW).0, 1);
    let v = deadline_in(post_copy(running("a", 0, None)), 1_000);
    assert_eq!(attention(&v, NOW).0, 3, "a near deadline beats post-copy");
}

#[test]
fn a_light_throttle_is_not_news() {
    let v = throttled(
        running("a", 0, Some(Verdict::Converging)),
        HARD_THROTTLE_PCT - 1,
    );
    assert_eq!(attention(&v, NOW).1, "converging");
    let v = throttled(
        running("a", 0, Some(Verdict::Converging)),
        HARD_THROTTLE_PCT,
    );
    assert_eq!(attention(&v, NOW).1, "throttled");
}

#[test]
fn a_deadline_is_near_within_two_minutes_and_once_past() {
    let converging = || running("a", 0, Some(Verdict::Converging));
    assert_eq!(
        attention(&deadline_in(converging(), NEAR_DEADLINE_MS), NOW).1,
        "converging"
    );
    assert_eq!(
        attention(&deadline_in(converging(), NEAR_DEADLINE_MS - 1), NOW).1,
        "near deadline"
    );
    assert_eq!(
        attention(&deadline_in(converging(), -5_000), NOW).1,
        "near deadline"
    );
}

#[test]
fn will_not_converge_comes_before_converging() {
    let views = [
        running("calm", 500_000, Some(Verdict::Converging)),
        running("doomed", 10_000, Some(Verdict::WillNotConverge)),
    ];
    assert_eq!(board(&views), ["doomed", "calm"]);
}

#[test]
fn the_board_runs_from_most_to_least_in_need() {
    let views = [
        running("new", 1_000, None),
        running("calm", 90_000, Some(Verdict::Converging)),
        running("ending", 80_000, Some(Verdict::SwitchingOver)),
        post_copy(running("pulling", 70_000, Some(Verdict::PostCopy))),
        deadline_in(running("late", 60_000, Some(Verdict::Converging)), 30_000),
        throttled(running("slowed", 50_000, Some(Verdict::Converging)), 70),
        running("stuck", 40_000, Some(Verdict::Stalled)),
        running("doomed", 30_000, Some(Verdict::WillNotConverge)),
    ];
    assert_eq!(
        board(&views),
        [
            "doomed", "stuck", "slowed", "late", "pulling", "ending", "calm", "new"
        ]
    );
}

#[test]
fn equally_in_need_the_longest_running_comes_first() {
    let views = [
        running("recent", 10_000, Some(Verdict::Stalled)),
        running("oldest", 900_000, Some(Verdict::Stalled)),
        running("older", 300_000, Some(Verdict::Stalled)),
    ];
    assert_eq!(board(&views), ["oldest", "older", "recent"]);
}

#[test]
fn ties_keep_their_order() {
    // Same rank and start: the order they came in (the live map's, by id).
    let mut tiles = vec![(6, 5, "b"), (6, 5, "a"), (0, 9, "x"), (6, 5, "c")];
    by_attention(&mut tiles);
    let names: Vec<&str> = tiles.iter().map(|t| t.2).collect();
    assert_eq!(names, ["x", "b", "a", "c"]);
}

#[test]
fn empty_and_single_boards() {
    let mut none: Vec<(u8, i64, ())> = Vec::new();
    by_attention(&mut none);
    assert!(none.is_empty());
    let mut one = vec![(3, 1, "only")];
    by_attention(&mut one);
    assert_eq!(one, [(3, 1, "only")]);
}
