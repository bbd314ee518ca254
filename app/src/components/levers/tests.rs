//! The deadline countdown shown on cards and the board.

use converge_api::{Migration, MigrationState, PendingDeadline, TimeoutAction};

use super::countdown;
use crate::live::MigrationView;

const NOW: i64 = 1_800_000_000_000;

fn with_deadline(deadline: Option<(i64, &str, TimeoutAction)>) -> MigrationView {
    let mut migration = Migration::begun(
        "m1".into(),
        "uuid".into(),
        "web1".into(),
        "src".into(),
        MigrationState::Running,
        NOW - 60_000,
    );
    migration.deadline = deadline.map(|(in_ms, kind, action)| PendingDeadline {
        at_ms: NOW + in_ms,
        kind: kind.into(),
        action,
    });
    MigrationView {
        migration,
        samples: Vec::new(),
        iterations: Vec::new(),
    }
}

#[test]
fn says_what_happens_when_and_which_deadline() {
    let cases = [
        (
            (192_000, "completion", TimeoutAction::Abort),
            "aborts in 3 min 12 s (completion timeout)",
        ),
        (
            (4_500, "stall", TimeoutAction::PostCopy),
            "switches to post-copy in 4.5 s (stall timeout)",
        ),
        (
            (7_200_000, "completion", TimeoutAction::Pause),
            "pauses the guest in 2 h 00 min (completion timeout)",
        ),
    ];
    for (deadline, text) in cases {
        assert_eq!(
            countdown(&with_deadline(Some(deadline)), NOW).as_deref(),
            Some(text)
        );
    }
}

#[test]
fn a_deadline_already_past_counts_down_to_zero_not_below() {
    let v = with_deadline(Some((-3_000, "completion", TimeoutAction::Abort)));
    assert_eq!(
        countdown(&v, NOW).as_deref(),
        Some("aborts in 0 ms (completion timeout)")
    );
}

#[test]
fn no_deadline_no_countdown() {
    assert_eq!(countdown(&with_deadline(None), NOW), None);
}
