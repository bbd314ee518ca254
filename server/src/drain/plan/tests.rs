use std::collections::HashMap;

use converge_api::{DirtyRate, DrainLimits, DrainPolicy, ItemState, Outlook};
use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_000_000;

fn host(name: &str, free_gib: u64) -> HostFacts {
    HostFacts {
        name: name.into(),
        connected: true,
        draining: None,
        free_bytes: Some(free_gib * GIB),
        reserve_bytes: GIB,
        guest_limit_bytes: None,
        guests_bytes: 0,
    }
}

fn vm(name: &str, memory_mib: u64, rate_mib_s: Option<u64>) -> VmFacts {
    VmFacts {
        uuid: format!("uuid-{name}"),
        name: name.into(),
        host: "a".into(),
        running: true,
        memory_bytes: memory_mib * MIB,
        dirty_rate: rate_mib_s.map(|r| DirtyRate {
            bytes_per_s: r * MIB,
            at_ms: NOW - 1000,
            previous_bytes_per_s: None,
            period_s: 1,
        }),
        migrating: None,
        refusal: None,
        past: PastMoves::default(),
    }
}

fn input(vms: Vec<VmFacts>, hosts: Vec<HostFacts>) -> PlanInput {
    PlanInput {
        sources: vec!["a".into()],
        destinations: hosts
            .iter()
            .map(|h| h.name.clone())
            .filter(|n| n != "a")
            .collect(),
        hosts,
        vms,
        limits: DrainLimits {
            bandwidth_mib_s: Some(32),
            ..DrainLimits::default()
        },
        policy: DrainPolicy::default(),
        preset: "converge".into(),
        adaptive: true,
        past_link: HashMap::new(),
        placements: HashMap::new(),
        order: Vec::new(),
        window_s: 3600,
        now_ms: NOW,
    }
}

fn item<'a>(drain: &'a converge_api::Drain, name: &str) -> &'a converge_api::DrainItem {
    drain
        .items
        .iter()
        .find(|i| i.vm_name == name)
        .unwrap_or_else(|| panic!("{name} is in the plan"))
}

#[test]
fn outlooks_follow_the_measured_rate_against_the_link() {
    let link = 32 * MIB;
    let policy = DrainPolicy::default();
    let (quiet, why, time) = outlook(&vm("q", 512, Some(2)), link, true, &policy);
    assert_eq!(quiet, Outlook::Converges, "{why}");
    // 512 MiB at 32 MiB/s is 16 s; a guest at 1/16 of the link adds a sixteenth.
    assert_eq!(time, Some(18 + OVERHEAD_S));
    let (busy, why, _) = outlook(&vm("b", 512, Some(100)), link, true, &policy);
    assert_eq!(busy, Outlook::NeedsPostCopy, "{why}");
    let mut rewrites = vm("x", 512, Some(100));
    rewrites.past.xbzrle_hit_pct = Some(80);
    assert_eq!(
        outlook(&rewrites, link, true, &policy).0,
        Outlook::NeedsXbzrle
    );
    let no_post_copy = DrainPolicy {
        allow_post_copy: false,
        ..policy
    };
    let (only_xbzrle, why, _) = outlook(&vm("s", 512, Some(100)), link, true, &no_post_copy);
    assert_eq!(only_xbzrle, Outlook::NeedsXbzrle, "{why}");
    let mut churns = vm("c", 512, Some(100));
    churns.past.xbzrle_hit_pct = Some(3);
    let (stall, why, time) = outlook(&churns, link, true, &no_post_copy);
    assert_eq!(stall, Outlook::LikelyToStall, "{why}");
    assert_eq!(time, None);
    assert!(why.contains("post-copy is not allowed"), "{why}");
    let (stall, why, _) = outlook(&vm("n", 512, Some(100)), link, false, &policy);
    assert_eq!(stall, Outlook::LikelyToStall, "{why}");
    let (unknown, why, _) = outlook(&vm("u", 512, None), link, true, &policy);
    assert_eq!(unknown, Outlook::Unknown, "{why}");
}

#[test]
fn a_past_move_sets_the_first_pass_to_what_it_sent() {
    let mut idle = vm("i", 2048, Some(0));
    idle.past.sent_bytes = Some(64 * MIB);
    let (_, _, time) = outlook(&idle, 32 * MIB, true, &DrainPolicy::default());
    assert_eq!(time, Some(2 + OVERHEAD_S));
}

#[test]
fn heavy_vms_go_first_and_stalling_ones_last() {
    let mut i = input(
        vec![
            vm("small", 256, Some(1)),
            vm("big", 2048, Some(1)),
            vm("busy", 512, Some(200)),
            vm("mid", 1024, Some(1)),
        ],
        vec![host("a", 16), host("b", 16), host("c", 16)],
    );
    i.adaptive = false;
    let drain = plan(&i).unwrap();
    let names: Vec<&str> = drain.items.iter().map(|i| i.vm_name.as_str()).collect();
    assert_eq!(names, ["big", "mid", "small", "busy"]);
    assert_eq!(item(&drain, "busy").outlook, Outlook::LikelyToStall);
    assert!(
        drain
            .warnings
            .iter()
            .any(|w| w.contains("Likely to stall: busy"))
    );
}

#[test]
fn the_operators_order_comes_first() {
    let mut i = input(
        vec![vm("small", 256, Some(1)), vm("big", 2048, Some(1))],
        vec![host("a", 16), host("b", 16)],
    );
    i.order = vec!["uuid-small".into()];
    let drain = plan(&i).unwrap();
    assert_eq!(drain.items[0].vm_name, "small");
}

#[test]
fn a_destination_near_its_guest_limit_gets_nothing_that_would_overcommit_it() {
    let mut full = host("b", 16);
    full.guest_limit_bytes = Some(1536 * MIB);
    full.guests_bytes = 1024 * MIB;
    let roomy = host("c", 16);
    let i = input(
        vec![vm("v1", 512, Some(1)), vm("v2", 512, Some(1))],
        vec![host("a", 16), full, roomy],
    );
    let drain = plan(&i).unwrap();
    // b has 512 MiB of room; c has 15 GiB: both go to c, the roomiest.
    assert!(
        drain
            .items
            .iter()
            .all(|i| i.destination.as_deref() == Some("c"))
    );
    let mut only_full = host("b", 16);
    only_full.guest_limit_bytes = Some(1536 * MIB);
    only_full.guests_bytes = 1024 * MIB;
    let i = input(
        vec![vm("v1", 512, Some(1)), vm("v2", 512, Some(1))],
        vec![host("a", 16), only_full],
    );
    let drain = plan(&i).unwrap();
    let placed: Vec<_> = drain
        .items
        .iter()
        .filter(|i| i.destination.is_some())
        .collect();
    assert_eq!(placed.len(), 1, "one of the two fits");
    let left = drain
        .items
        .iter()
        .find(|i| i.state == ItemState::Left)
        .unwrap();
    let why = left.reason.as_deref().unwrap();
    assert!(
        why.contains("no destination has room") && why.contains("guest limit 1.5 GiB"),
        "{why}"
    );
    assert!(
        drain
            .warnings
            .iter()
            .any(|w| w.contains("no destination has room"))
    );
}

#[test]
fn unknown_free_memory_is_no_room() {
    let mut b = host("b", 16);
    b.free_bytes = None;
    let drain = plan(&input(vec![vm("v", 512, Some(1))], vec![host("a", 16), b])).unwrap();
    assert_eq!(drain.items[0].state, ItemState::Left);
}

#[test]
fn an_operators_placement_that_does_not_fit_is_refused_with_the_numbers() {
    let mut b = host("b", 2);
    b.reserve_bytes = GIB;
    let mut i = input(
        vec![vm("big", 2048, Some(1))],
        vec![host("a", 16), b, host("c", 16)],
    );
    i.placements.insert("uuid-big".into(), "b".into());
    let err = plan(&i).unwrap_err().to_string();
    assert!(
        err.contains("does not fit on b") && err.contains("1.0 GiB of room"),
        "{err}"
    );
    i.placements.insert("uuid-big".into(), "z".into());
    let err = plan(&i).unwrap_err().to_string();
    assert!(err.contains("not one of the drain's destinations"), "{err}");
}

#[test]
fn the_simulation_respects_the_limits_and_a_short_window_is_called_out() {
    // Four 512 MiB quiet VMs at 32 MiB/s (~19 s each), two at once out of a: two rounds.
    let vms = (1..=4)
        .map(|n| vm(&format!("v{n}"), 512, Some(0)))
        .collect();
    let mut i = input(vms, vec![host("a", 16), host("b", 16), host("c", 16)]);
    i.limits.per_source = 2;
    let drain = plan(&i).unwrap();
    let one = drain.items[0].predicted_s.unwrap();
    assert_eq!(drain.predicted_total_s, Some(2 * one));
    let starts: Vec<u64> = drain
        .items
        .iter()
        .map(|i| i.predicted_start_s.unwrap())
        .collect();
    assert_eq!(starts, [0, 0, one, one]);
    i.window_s = one + 1;
    let drain = plan(&i).unwrap();
    let warning = drain
        .warnings
        .iter()
        .find(|w| w.starts_with("The window is too short"))
        .unwrap();
    assert!(warning.contains("likely left behind: v3, v4"), "{warning}");
}

#[test]
fn a_link_budget_is_shared_by_the_moves_on_a_link() {
    let mut i = input(Vec::new(), vec![host("a", 16), host("b", 16)]);
    i.limits = DrainLimits {
        bandwidth_mib_s: Some(100),
        link_budget_mib_s: Some(100),
        per_source: 4,
        per_destination: 4,
        total: 4,
    };
    assert_eq!(link_speed(&i).0, 25 * MIB);
    i.limits.link_budget_mib_s = None;
    i.limits.bandwidth_mib_s = None;
    i.past_link.insert("a".into(), 80 * MIB);
    let (speed, basis) = link_speed(&i);
    assert_eq!(speed, 80 * MIB);
    assert!(basis.contains("past migrations from a"), "{basis}");
    i.past_link.clear();
    let (speed, basis) = link_speed(&i);
    assert_eq!(speed, ASSUMED_LINK_MIB_S * MIB);
    assert!(basis.starts_with("assumed"));
}

#[test]
fn vms_that_cannot_be_moved_live_are_left_with_the_reason() {
    let mut off = vm("off", 512, None);
    off.running = false;
    let mut nova = vm("nova", 512, Some(1));
    nova.refusal = Some("Nova manages it".into());
    let mut moving = vm("moving", 512, Some(1));
    moving.migrating = Some("m1".into());
    let drain = plan(&input(
        vec![off, nova, moving],
        vec![host("a", 16), host("b", 16)],
    ))
    .unwrap();
    assert_eq!(item(&drain, "off").state, ItemState::Left);
    assert!(
        item(&drain, "off")
            .reason
            .as_deref()
            .unwrap()
            .contains("not running")
    );
    assert_eq!(
        item(&drain, "nova").reason.as_deref(),
        Some("Nova manages it")
    );
    let moving = item(&drain, "moving");
    assert_eq!(moving.state, ItemState::Migrating);
    assert_eq!(moving.migration_id.as_deref(), Some("m1"));
}

proptest! {
    /// Whatever the VMs and hosts, no destination is given more than its room, and every
    /// VM is placed or left with a reason.
    #[test]
    fn placement_never_overcommits_a_destination(
        sizes in prop::collection::vec(64u64..4096, 0..24),
        rates in prop::collection::vec(prop::option::of(0u64..300), 24),
        rooms in prop::collection::vec((0u64..12, prop::option::of(0u64..8192), 0u64..4096), 1..4),
        reserve_mib in 0u64..2048,
    ) {
        let hosts: Vec<HostFacts> = std::iter::once(host("a", 64))
            .chain(rooms.iter().enumerate().map(|(n, (free_gib, limit_mib, used_mib))| HostFacts {
                name: format!("d{n}"),
                connected: true,
                draining: None,
                free_bytes: Some(free_gib * GIB),
                reserve_bytes: reserve_mib * MIB,
                guest_limit_bytes: limit_mib.map(|l| l * MIB),
                guests_bytes: used_mib * MIB,
            }))
            .collect();
        let vms: Vec<VmFacts> = sizes
            .iter()
            .enumerate()
            .map(|(n, mib)| vm(&format!("v{n}"), *mib, rates[n]))
            .collect();
        let i = input(vms, hosts.clone());
        let drain = plan(&i).unwrap();
        prop_assert_eq!(drain.items.len(), sizes.len());
        for h in hosts.iter().skip(1) {
            let given: u64 = drain
                .items
                .iter()
                .filter(|i| i.destination.as_deref() == Some(h.name.as_str()))
                .map(|i| i.memory_bytes)
                .sum();
            let free = h.free_bytes.unwrap_or(0).saturating_sub(h.reserve_bytes);
            prop_assert!(given <= free, "{} got {given} with {free} free", h.name);
            if let Some(limit) = h.guest_limit_bytes {
                prop_assert!(given + h.guests_bytes <= limit.max(h.guests_bytes) || given == 0);
            }
        }
        for item in &drain.items {
            prop_assert!(item.destination.is_some() || item.reason.is_some(), "{item:?}");
        }
    }
}
