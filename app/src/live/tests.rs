//! The fleet page's order of migration cards.

use super::display_order;

fn order(mut all: Vec<(&'static str, bool, i64)>) -> Vec<&'static str> {
    display_order(&mut all);
    all.into_iter().map(|(name, ..)| name).collect()
}

#[test]
fn running_migrations_come_before_finished_ones() {
    assert_eq!(
        order(vec![("done", false, 900), ("running", true, 100)]),
        ["running", "done"]
    );
}

#[test]
fn newest_first_within_running_and_within_finished() {
    assert_eq!(
        order(vec![
            ("old-done", false, 100),
            ("old-running", true, 200),
            ("new-done", false, 800),
            ("new-running", true, 700),
            ("mid-running", true, 500),
        ]),
        [
            "new-running",
            "mid-running",
            "old-running",
            "new-done",
            "old-done"
        ]
    );
}

#[test]
fn ties_keep_their_order() {
    // Same state and start: the order the live map gives them, by id.
    assert_eq!(
        order(vec![("b", true, 5), ("a", true, 5), ("c", true, 5)]),
        ["b", "a", "c"]
    );
}

#[test]
fn empty_and_single() {
    assert!(order(Vec::new()).is_empty());
    assert_eq!(order(vec![("only", false, 1)]), ["only"]);
}
