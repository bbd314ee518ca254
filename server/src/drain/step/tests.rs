use std::collections::HashMap;

use converge_api::{
    AttemptState, DirtyRate, Drain, DrainItem, DrainLimits, DrainPolicy, DrainState, ItemState,
    LeverKind, LeverMove, MigrationState, Outlook, Verdict,
};
use proptest::prelude::*;

use super::*;

const GIB: u64 = 1 << 30;
const T0: i64 = 10_000_000;

fn item(name: &str, dest: &str) -> DrainItem {
    DrainItem {
        vm_uuid: format!("u-{name}"),
        vm_name: name.into(),
        source: "a".into(),
        destination: Some(dest.into()),
        memory_bytes: 512 * MIB,
        dirty_rate: None,
        outlook: Outlook::Converges,
        outlook_reason: String::new(),
        predicted_s: Some(20),
        predicted_start_s: Some(0),
        state: ItemState::Pending,
        attempts: 0,
        migration_id: None,
        migration_ids: Vec::new(),
        reason: None,
        ended_at_ms: None,
        expected_at_ms: None,
        attempt: AttemptState::default(),
    }
}

fn drain(items: Vec<DrainItem>, limits: DrainLimits) -> Drain {
    Drain {
        id: "d1".into(),
        hosts: vec!["a".into()],
        destinations: vec!["b".into(), "c".into()],
        state: DrainState::Running,
        created_by: "ada".into(),
        created_at_ms: T0,
        ended_at_ms: None,
        deadline_ms: T0 + 3_600_000,
        preset: "converge".into(),
        limits,
        policy: DrainPolicy::default(),
        items,
        predicted_total_s: Some(60),
        eta_at_ms: None,
        warnings: Vec::new(),
        rooms: Vec::new(),
        link_mib_s: 32,
        link_basis: "the drain's bandwidth limit".into(),
    }
}

/// A fleet where every item's VM runs on `a`, and b and c have 16 GiB of room.
fn fleet(d: &Drain, now_ms: i64) -> Snapshot {
    let vms = d
        .items
        .iter()
        .map(|i| {
            (
                i.vm_uuid.clone(),
                VmView {
                    host: "a".into(),
                    running: true,
                    dirty_rate: None,
                    migrating: None,
                },
            )
        })
        .collect();
    Snapshot {
        now_ms,
        migrations: HashMap::new(),
        restoring: Default::default(),
        vms,
        rooms: HashMap::from([("b".into(), 16 * GIB), ("c".into(), 16 * GIB)]),
    }
}

fn running(verdict: Option<Verdict>) -> MigrationView {
    MigrationView {
        state: MigrationState::Running,
        destination: Some("b".into()),
        error: None,
        verdict,
        reason: Some("the guest dirties at least 96 MiB/s".into()),
        advice: None,
        adaptive: false,
        postcopy_allowed: false,
    }
}

fn ended(state: MigrationState, error: Option<&str>) -> MigrationView {
    MigrationView {
        state,
        error: error.map(str::to_owned),
        verdict: None,
        ..running(None)
    }
}

/// Starts every start command's migration as `m-<vm>-<attempt>`.
fn start_all(d: &mut Drain, commands: &[Command], now: &Snapshot) -> Vec<String> {
    let mut ids = Vec::new();
    for c in commands {
        if let Command::Start { vm_uuid, .. } = c {
            let attempts = d
                .items
                .iter()
                .find(|i| &i.vm_uuid == vm_uuid)
                .unwrap()
                .attempts;
            let id = format!("m-{vm_uuid}-{attempts}");
            started(d, vm_uuid, Ok(id.clone()), now);
            ids.push(id);
        }
    }
    ids
}

fn starts(commands: &[Command]) -> Vec<&str> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Start { vm_uuid, .. } => Some(vm_uuid.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn vms_start_in_order_within_the_limits_and_quick_ones_fill_the_gaps() {
    let limits = DrainLimits {
        per_source: 2,
        per_destination: 1,
        total: 4,
        ..DrainLimits::default()
    };
    let mut d = drain(
        vec![
            item("v1", "b"),
            item("v2", "b"),
            item("v3", "c"),
            item("v4", "c"),
        ],
        limits,
    );
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    // v2 would be a second move into b: v3 goes instead (two out of a at most).
    assert_eq!(starts(&commands), ["u-v1", "u-v3"]);
    let mut now = now;
    for id in start_all(&mut d, &commands, &now) {
        now.migrations
            .insert(id, running(Some(Verdict::Converging)));
    }
    assert_eq!(d.count(ItemState::Migrating), 2);
    assert!(starts(&step(&mut d, &now)).is_empty(), "the limits hold");
    // v1 completes: v2 takes its place into b.
    let mut now = fleet(&d, T0 + 20_000);
    now.migrations
        .insert("m-u-v1-1".into(), ended(MigrationState::Completed, None));
    now.migrations
        .insert("m-u-v3-1".into(), running(Some(Verdict::Converging)));
    let commands = step(&mut d, &now);
    assert_eq!(d.items[0].state, ItemState::Moved);
    assert_eq!(starts(&commands), ["u-v2"]);
    let Command::Start {
        destination, max_s, ..
    } = &commands[0]
    else {
        unreachable!()
    };
    assert_eq!(destination, "b");
    assert_eq!(*max_s, 3600 - 20, "the rest of the window");
}

#[test]
fn a_failed_attempt_waits_for_a_quiet_reading_then_goes_again_until_its_tries_are_spent() {
    let mut d = drain(vec![item("busy", "b")], DrainLimits::default());
    d.policy.max_tries = 2;
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut now = fleet(&d, T0 + 60_000);
    now.migrations.insert(
        "m-u-busy-1".into(),
        ended(MigrationState::Aborted, Some("will not converge")),
    );
    let commands = step(&mut d, &now);
    assert_eq!(d.items[0].state, ItemState::Waiting);
    assert!(commands.contains(&Command::MeasureSoon {
        vm_uuid: "u-busy".into()
    }));
    let why = d.items[0].reason.clone().unwrap();
    assert!(why.contains("less than 16 MiB/s"), "{why}");
    // A busy reading: still waits. A reading from before the wait: ignored.
    let reading = |at_ms, mib| DirtyRate {
        bytes_per_s: mib * MIB,
        at_ms,
        previous_bytes_per_s: None,
        period_s: 1,
    };
    now.vms.get_mut("u-busy").unwrap().dirty_rate = Some(reading(T0 + 1000, 1));
    now.now_ms = T0 + 70_000;
    assert!(starts(&step(&mut d, &now)).is_empty());
    now.vms.get_mut("u-busy").unwrap().dirty_rate = Some(reading(T0 + 65_000, 90));
    assert!(starts(&step(&mut d, &now)).is_empty());
    assert_eq!(d.items[0].state, ItemState::Waiting);
    now.vms.get_mut("u-busy").unwrap().dirty_rate = Some(reading(T0 + 69_000, 3));
    let commands = step(&mut d, &now);
    assert_eq!(starts(&commands), ["u-busy"], "quiet: tried again");
    start_all(&mut d, &commands, &now);
    assert_eq!(d.items[0].attempts, 2);
    now.migrations.insert(
        "m-u-busy-2".into(),
        ended(MigrationState::Failed, Some("connection reset")),
    );
    step(&mut d, &now);
    let item = &d.items[0];
    assert_eq!(item.state, ItemState::Left);
    let why = item.reason.as_deref().unwrap();
    assert!(
        why.contains("tried 2 times")
            && why.contains("connection reset")
            && why.contains("runs on a"),
        "{why}"
    );
    assert_eq!(item.migration_ids, ["m-u-busy-1", "m-u-busy-2"]);
    assert_eq!(d.state, DrainState::Done);
    assert_eq!(d.ended_at_ms, Some(T0 + 70_000));
}

#[test]
fn a_stuck_migration_gets_the_advice_once_then_is_aborted_once() {
    let mut d = drain(vec![item("hot", "b")], DrainLimits::default());
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut stuck = running(Some(Verdict::WillNotConverge));
    stuck.advice = Some((
        LeverMove {
            lever: LeverKind::DowntimeLimit,
            value: Some(400),
        },
        "Raise the downtime limit to 400 ms".into(),
    ));
    let mut now = fleet(&d, T0 + 10_000);
    now.migrations.insert("m-u-hot-1".into(), stuck.clone());
    let commands = step(&mut d, &now);
    assert!(
        matches!(&commands[..], [Command::Lever { change: LeverChange::DowntimeLimit { ms: 400 }, reason, .. }] if reason.contains("Raise the downtime limit")),
        "{commands:?}"
    );
    // Still stuck: nothing more until the grace has passed, then one abort.
    now.now_ms += 10_000;
    assert!(step(&mut d, &now).is_empty());
    now.now_ms += STUCK_GRACE_S * 1000;
    let commands = step(&mut d, &now);
    assert!(
        matches!(&commands[..], [Command::Abort { reason, .. }] if reason.contains("with the advice applied")),
        "{commands:?}"
    );
    now.now_ms += 1000;
    assert!(step(&mut d, &now).is_empty(), "one abort only");
}

#[test]
fn post_copy_advice_is_applied_only_when_the_drain_and_the_migration_allow_it() {
    let mut d = drain(vec![item("fresh", "b")], DrainLimits::default());
    d.policy.allow_post_copy = false;
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut stuck = running(Some(Verdict::WillNotConverge));
    stuck.postcopy_allowed = true;
    stuck.advice = Some((
        LeverMove {
            lever: LeverKind::PostCopy,
            value: None,
        },
        "Switch to post-copy".into(),
    ));
    let mut now = fleet(&d, T0 + 10_000);
    now.migrations.insert("m-u-fresh-1".into(), stuck);
    assert!(step(&mut d, &now).is_empty(), "not allowed: no lever");
    now.now_ms += STUCK_GRACE_S * 1000;
    assert!(matches!(&step(&mut d, &now)[..], [Command::Abort { .. }]));
}

#[test]
fn an_adaptive_migration_is_left_to_its_own_policy_until_the_grace_is_over() {
    let mut d = drain(vec![item("v", "b")], DrainLimits::default());
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut stuck = running(Some(Verdict::WillNotConverge));
    stuck.adaptive = true;
    stuck.advice = Some((
        LeverMove {
            lever: LeverKind::DowntimeLimit,
            value: Some(400),
        },
        "Raise".into(),
    ));
    let mut now = fleet(&d, T0 + 1000);
    now.migrations.insert("m-u-v-1".into(), stuck);
    assert!(step(&mut d, &now).is_empty());
    // A converging reading resets the clock.
    now.migrations
        .insert("m-u-v-1".into(), running(Some(Verdict::Converging)));
    now.now_ms += 20_000;
    step(&mut d, &now);
    assert_eq!(d.items[0].attempt.stuck_since_ms, None);
}

#[test]
fn cancel_leaves_the_queue_where_it_is_and_aborts_what_runs() {
    let mut d = drain(
        vec![item("v1", "b"), item("v2", "c"), item("v3", "b")],
        DrainLimits {
            total: 2,
            ..DrainLimits::default()
        },
    );
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    control(&mut d, DrainState::Cancelling, T0 + 1000).unwrap();
    assert_eq!(d.items[2].state, ItemState::Left);
    let mut now = fleet(&d, T0 + 2000);
    now.migrations
        .insert("m-u-v1-1".into(), running(Some(Verdict::Converging)));
    now.migrations
        .insert("m-u-v2-1".into(), ended(MigrationState::Completed, None));
    let commands = step(&mut d, &now);
    assert!(
        matches!(&commands[..], [Command::Abort { migration_id, .. }] if migration_id == "m-u-v1-1")
    );
    assert_eq!(d.state, DrainState::Cancelling);
    assert_eq!(d.items[1].state, ItemState::Moved, "finished moves stay");
    now.migrations.insert(
        "m-u-v1-1".into(),
        ended(MigrationState::Aborted, Some("aborted on request")),
    );
    step(&mut d, &now);
    assert_eq!(d.state, DrainState::Cancelled);
    let why = d.items[0].reason.as_deref().unwrap();
    assert!(
        why.contains("cancelled") && why.contains("runs on a"),
        "{why}"
    );
    assert!(control(&mut d, DrainState::Running, T0).is_err());
}

#[test]
fn paused_starts_nothing_and_resumed_goes_on() {
    let mut d = drain(vec![item("v1", "b")], DrainLimits::default());
    control(&mut d, DrainState::Paused, T0).unwrap();
    let now = fleet(&d, T0);
    assert!(step(&mut d, &now).is_empty());
    control(&mut d, DrainState::Running, T0).unwrap();
    assert_eq!(starts(&step(&mut d, &now)), ["u-v1"]);
}

#[test]
fn the_window_ends_what_has_not_started() {
    let mut d = drain(
        vec![item("v1", "b"), item("v2", "b")],
        DrainLimits {
            per_destination: 1,
            total: 1,
            ..DrainLimits::default()
        },
    );
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut now = fleet(&d, d.deadline_ms);
    now.migrations
        .insert("m-u-v1-1".into(), running(Some(Verdict::Converging)));
    step(&mut d, &now);
    assert_eq!(d.items[1].state, ItemState::Left);
    assert_eq!(
        d.items[1].reason.as_deref(),
        Some("the window ended before its turn")
    );
    assert_eq!(d.state, DrainState::Running, "v1 still moves");
}

#[test]
fn a_full_destination_sends_the_vm_elsewhere_or_makes_it_wait() {
    let mut d = drain(vec![item("v1", "b")], DrainLimits::default());
    let mut now = fleet(&d, T0);
    now.rooms.insert("b".into(), 100 * MIB);
    let commands = step(&mut d, &now);
    assert!(matches!(&commands[..], [Command::Start { destination, .. }] if destination == "c"));
    let mut d = drain(vec![item("v1", "b")], DrainLimits::default());
    now.rooms.insert("c".into(), 0);
    assert!(step(&mut d, &now).is_empty());
    let why = d.items[0].reason.as_deref().unwrap();
    assert!(why.starts_with("waiting for room"), "{why}");
}

#[test]
fn a_lost_record_is_settled_by_where_the_vm_runs() {
    let mut d = drain(vec![item("v1", "b")], DrainLimits::default());
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    start_all(&mut d, &commands, &now);
    let mut now = fleet(&d, T0 + 5000);
    now.restoring.insert("m-u-v1-1".into());
    step(&mut d, &now);
    assert_eq!(
        d.items[0].state,
        ItemState::Migrating,
        "waits while restoring"
    );
    now.restoring.clear();
    now.vms.get_mut("u-v1").unwrap().host = "b".into();
    step(&mut d, &now);
    assert_eq!(d.items[0].state, ItemState::Moved);
    assert_eq!(d.items[0].destination.as_deref(), Some("b"));
}

#[test]
fn skip_and_forward() {
    let mut d = drain(
        vec![item("v1", "b"), item("v2", "c"), item("v3", "c")],
        DrainLimits {
            total: 1,
            ..DrainLimits::default()
        },
    );
    forward(&mut d, "u-v3").unwrap();
    let now = fleet(&d, T0);
    let commands = step(&mut d, &now);
    assert_eq!(starts(&commands), ["u-v3"]);
    start_all(&mut d, &commands, &now);
    assert!(skip(&mut d, "u-v1", T0).unwrap().is_empty());
    assert_eq!(
        d.items.iter().find(|i| i.vm_name == "v1").unwrap().state,
        ItemState::Skipped
    );
    let commands = skip(&mut d, "u-v3", T0).unwrap();
    assert!(matches!(&commands[..], [Command::Abort { .. }]));
    let mut now = fleet(&d, T0 + 1000);
    now.migrations
        .insert("m-u-v3-1".into(), ended(MigrationState::Aborted, None));
    step(&mut d, &now);
    let v3 = d.items.iter().find(|i| i.vm_name == "v3").unwrap();
    assert_eq!(v3.state, ItemState::Skipped);
    assert!(skip(&mut d, "u-v3", T0).is_err());
    assert!(forward(&mut d, "u-v1").is_err());
    assert!(skip(&mut d, "nope", T0).is_err());
}

#[test]
fn a_refused_start_leaves_the_vm_and_a_failed_one_retries() {
    let mut d = drain(
        vec![item("v1", "b"), item("v2", "c")],
        DrainLimits::default(),
    );
    let now = fleet(&d, T0);
    step(&mut d, &now);
    started(&mut d, "u-v1", Err(("Nova manages it".into(), true)), &now);
    started(
        &mut d,
        "u-v2",
        Err(("libvirt did not answer".into(), false)),
        &now,
    );
    assert_eq!(d.items[0].state, ItemState::Left);
    assert_eq!(d.items[1].state, ItemState::Waiting);
}

#[derive(Debug, Clone)]
enum Event {
    Tick(u16),
    Complete(usize),
    Fail(usize),
    Stuck(usize),
    Quiet(usize),
    Pause,
    Resume,
    Cancel,
    Skip(usize),
    Forward(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u16..120).prop_map(Event::Tick),
        (0usize..6).prop_map(Event::Complete),
        (0usize..6).prop_map(Event::Fail),
        (0usize..6).prop_map(Event::Stuck),
        (0usize..6).prop_map(Event::Quiet),
        Just(Event::Pause),
        Just(Event::Resume),
        Just(Event::Cancel),
        (0usize..6).prop_map(Event::Skip),
        (0usize..6).prop_map(Event::Forward),
    ]
}

proptest! {
    /// Whatever happens to its migrations and whatever operators do, a drain never runs
    /// more than its limits, never runs two moves of one VM, ends every VM moved or with
    /// a reason, and once over stays over.
    #[test]
    fn a_drain_keeps_its_limits_and_ends_every_vm_with_a_place_or_a_reason(
        events in prop::collection::vec(event(), 1..80),
    ) {
        let limits = DrainLimits { per_source: 2, per_destination: 1, total: 2, ..DrainLimits::default() };
        let dests = ["b", "c"];
        let items = (0..6).map(|n| item(&format!("v{n}"), dests[n % 2])).collect();
        let mut d = drain(items, limits);
        d.policy.max_tries = 2;
        let mut now = fleet(&d, T0);
        for e in events {
            let ids: Vec<Option<String>> = d.items.iter().map(|i| i.migration_id.clone()).collect();
            let by_name = |n: usize| ids.get(n).cloned().flatten();
            match e {
                Event::Tick(s) => now.now_ms += i64::from(s) * 1000,
                Event::Complete(n) => if let Some(id) = by_name(n) {
                    now.migrations.insert(id, ended(MigrationState::Completed, None));
                },
                Event::Fail(n) => if let Some(id) = by_name(n) {
                    now.migrations.insert(id, ended(MigrationState::Failed, Some("failed")));
                },
                Event::Stuck(n) => if let Some(id) = by_name(n) {
                    now.migrations.insert(id, running(Some(Verdict::WillNotConverge)));
                },
                Event::Quiet(n) => if let Some(i) = d.items.get(n) {
                    now.vms.get_mut(&i.vm_uuid).unwrap().dirty_rate = Some(DirtyRate {
                        bytes_per_s: MIB, at_ms: now.now_ms, previous_bytes_per_s: None, period_s: 1,
                    });
                },
                Event::Pause => { let _ = control(&mut d, DrainState::Paused, now.now_ms); }
                Event::Resume => { let _ = control(&mut d, DrainState::Running, now.now_ms); }
                Event::Cancel => { let _ = control(&mut d, DrainState::Cancelling, now.now_ms); }
                Event::Skip(n) => if let Some(u) = d.items.get(n).map(|i| i.vm_uuid.clone()) {
                    let _ = skip(&mut d, &u, now.now_ms);
                },
                Event::Forward(n) => if let Some(u) = d.items.get(n).map(|i| i.vm_uuid.clone()) {
                    let _ = forward(&mut d, &u);
                },
            }
            let was_over = !d.state.is_active();
            let before = d.clone();
            let commands = step(&mut d, &now);
            if was_over {
                prop_assert_eq!(&d, &before, "an ended drain does not change");
                prop_assert!(commands.is_empty());
            }
            start_all(&mut d, &commands, &now);
            let moving: Vec<&DrainItem> = d.items.iter().filter(|i| i.state == ItemState::Migrating).collect();
            prop_assert!(moving.len() <= 2);
            for dest in dests {
                prop_assert!(moving.iter().filter(|i| i.destination.as_deref() == Some(dest)).count() <= 1);
            }
            if d.state == DrainState::Paused {
                prop_assert!(starts(&commands).is_empty());
            }
            for i in &d.items {
                match i.state {
                    ItemState::Moved => prop_assert!(i.destination.is_some()),
                    ItemState::Left | ItemState::Skipped => prop_assert!(i.reason.is_some()),
                    _ => {}
                }
                prop_assert!(i.attempts <= 2, "{} tried {} times", i.vm_name, i.attempts);
            }
            if !d.state.is_active() {
                prop_assert!(d.items.iter().all(|i| i.state.is_final()), "{:?}", d.items);
            }
        }
    }
}
