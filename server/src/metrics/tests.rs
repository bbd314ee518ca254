use std::collections::{HashMap, HashSet};

use converge_api::{
    DirtyRate, Forecast, Host, HostState, Migration, MigrationState, PendingDeadline, Sample,
    TimeoutAction, Verdict,
};

use super::{Fleet, render, token_matches};

const NOW: i64 = 1_000_000;
const MIB: u64 = 1 << 20;
/// A VM name an operator could choose, with everything the format must escape.
const ODD_NAME: &str = "web \"blue\"\\2\nnew";

fn host(name: &str, state: HostState, vms: usize) -> Host {
    Host {
        name: name.into(),
        state,
        since_ms: 0,
        error: None,
        hostname: None,
        libvirt_version: None,
        vm_count: vms,
        degraded: None,
        draining: None,
    }
}

fn running(vm: &str, verdict: Option<Verdict>) -> Migration {
    let mut m = Migration::begun(
        format!("id-{vm}"),
        format!("uuid-{vm}"),
        vm.into(),
        "a".into(),
        MigrationState::Running,
        NOW - 42_500,
    );
    m.destination = Some("b".into());
    m.progress_pct = Some(63.0);
    m.last_sample = Some(Sample {
        iteration: 4,
        transfer_rate_bytes_per_s: 32 * MIB,
        dirty_rate_bytes_per_s: 100 * MIB,
        mem_remaining_bytes: 120 * MIB,
        expected_downtime_ms: Some(3_750),
        throttle_pct: Some(20),
        ..Sample::default()
    });
    m.deadline = Some(PendingDeadline {
        at_ms: NOW + 90_000,
        kind: "completion".into(),
        action: TimeoutAction::Abort,
    });
    m.forecast = verdict.map(|verdict| Forecast {
        transfer_rate_bytes_per_s: 32 * MIB,
        eta_max_s: Some(75),
        ..Forecast::new(verdict, "")
    });
    m
}

/// A series (name and labels, in order) and its value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Parses the exposition text strictly enough to catch a malformed line: every sample
/// belongs to a family declared (HELP, then TYPE) before it, label values are quoted and
/// escaped, values are numbers. Returns (name, labels) → value.
fn parse(text: &str) -> Samples {
    let mut declared = HashSet::new();
    let mut helped = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            assert!(declared.insert(name.to_owned()), "declared twice: {name}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
        };
        assert!(declared.contains(name), "sample before its TYPE: {line}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        let fresh = samples.insert((name.to_owned(), labels), value).is_none();
        assert!(fresh, "the same series twice: {line}");
    }
    samples
}

fn parse_labels(mut rest: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escaped char").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    labels
}

fn route(vm: &str) -> Vec<(String, String)> {
    vec![
        ("vm".into(), vm.into()),
        ("source".into(), "a".into()),
        ("destination".into(), "b".into()),
    ]
}

fn get(samples: &Samples, name: &str, labels: Vec<(String, String)>) -> f64 {
    *samples
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

#[test]
fn the_fleet_and_its_running_migrations_are_exposed() {
    let mut degraded = host("a", HostState::Connected, 3);
    degraded.degraded = Some("degraded: libvirt has not answered virDomainGetState for 4 s".into());
    let hosts = [degraded, host("b", HostState::Disconnected, 0)];
    let mut done = running("old", Some(Verdict::Converging));
    done.state = MigrationState::Completed;
    let mut post = running("db", None);
    post.state = MigrationState::PostCopy;
    let migrations = [
        running(ODD_NAME, Some(Verdict::WillNotConverge)),
        done,
        post,
        running("quiet", None),
    ];
    let finished = [("completed".to_owned(), 3), ("aborted".to_owned(), 1)];
    let dirty_rates = [(
        "idle-db".to_owned(),
        "a".to_owned(),
        DirtyRate {
            bytes_per_s: 12 * MIB,
            at_ms: NOW - 30_000,
            previous_bytes_per_s: None,
            period_s: 1,
        },
    )];
    let fleet = Fleet {
        hosts: &hosts,
        migrations: &migrations,
        dirty_rates: &dirty_rates,
        drains: &[],
    };
    let text = render(&fleet, &finished, NOW);
    let s = parse(&text);

    let host_label = |h: &str| vec![("host".to_owned(), h.to_owned())];
    assert_eq!(get(&s, "converge_host_up", host_label("a")), 1.0);
    assert_eq!(get(&s, "converge_host_up", host_label("b")), 0.0);
    assert_eq!(get(&s, "converge_host_vms", host_label("a")), 3.0);
    assert_eq!(get(&s, "converge_host_degraded", host_label("a")), 1.0);
    assert_eq!(get(&s, "converge_host_degraded", host_label("b")), 0.0);
    let vm = vec![
        ("vm".to_owned(), "idle-db".to_owned()),
        ("host".to_owned(), "a".to_owned()),
    ];
    assert_eq!(
        get(&s, "converge_vm_dirty_rate_bytes", vm.clone()),
        (12 * MIB) as f64
    );
    assert_eq!(get(&s, "converge_vm_dirty_rate_age_seconds", vm), 30.0);
    assert_eq!(get(&s, "converge_migrations_running", vec![]), 3.0);
    let outcome = |o: &str| vec![("outcome".to_owned(), o.to_owned())];
    assert_eq!(
        get(
            &s,
            "converge_migrations_finished_total",
            outcome("completed")
        ),
        3.0
    );
    assert_eq!(
        get(&s, "converge_migrations_finished_total", outcome("aborted")),
        1.0
    );
    assert_eq!(
        get(&s, "converge_migrations_finished_total", outcome("failed")),
        0.0
    );

    let odd = route(ODD_NAME);
    for (name, value) in [
        ("converge_migration_elapsed_seconds", 42.5),
        ("converge_migration_iteration", 4.0),
        (
            "converge_migration_transfer_bytes_per_second",
            (32 * MIB) as f64,
        ),
        (
            "converge_migration_dirty_bytes_per_second",
            (100 * MIB) as f64,
        ),
        ("converge_migration_remaining_bytes", (120 * MIB) as f64),
        ("converge_migration_progress_ratio", 0.63),
        ("converge_migration_expected_downtime_seconds", 3.75),
        ("converge_migration_throttle_ratio", 0.2),
        ("converge_migration_eta_max_seconds", 75.0),
        ("converge_migration_deadline_seconds", 90.0),
    ] {
        assert_eq!(get(&s, name, odd.clone()), value, "{name}");
    }
    let verdict = |vm: &str, v: &str| {
        let mut labels = route(vm);
        labels.push(("verdict".into(), v.into()));
        labels
    };
    assert_eq!(
        get(
            &s,
            "converge_migration_verdict",
            verdict(ODD_NAME, "will_not_converge")
        ),
        1.0
    );
    assert_eq!(
        get(&s, "converge_migration_verdict", verdict("db", "post_copy")),
        1.0
    );
    // No forecast yet: no verdict series, rather than a made-up one.
    assert!(
        !s.keys()
            .any(|(n, l)| n == "converge_migration_verdict" && l[0].1 == "quiet")
    );
    // A finished migration is in the counters only.
    assert!(!text.contains("\"old\""), "{text}");
}

#[test]
fn an_empty_fleet_still_declares_every_family() {
    let empty = Fleet {
        hosts: &[],
        migrations: &[],
        dirty_rates: &[],
        drains: &[],
    };
    let text = render(&empty, &[], NOW);
    let s = parse(&text);
    assert_eq!(get(&s, "converge_migrations_running", vec![]), 0.0);
    for name in [
        "converge_host_up",
        "converge_migration_verdict",
        "converge_migration_transfer_bytes_per_second",
        "converge_vm_dirty_rate_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
    }
}

#[test]
fn only_the_token_with_the_configured_hash_is_let_in() {
    // SHA-256("abc"), the FIPS 180-2 test vector.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert!(token_matches("abc", abc));
    assert!(!token_matches("abd", abc));
    assert!(!token_matches("abc ", abc));
    assert!(!token_matches("", abc));
    assert!(!token_matches("abc", &abc[..63]));
    assert!(!token_matches("abc", &abc.to_uppercase()));
}

#[test]
fn a_drain_shows_its_state_its_vms_by_state_and_its_eta() {
    let item = |name: &str, state: &str| {
        serde_json::json!({
            "vm_uuid": format!("u-{name}"), "vm_name": name, "source": "a", "destination": "b",
            "memory_bytes": 1u64 << 29, "dirty_rate": null, "outlook": "converges",
            "outlook_reason": "", "predicted_s": 20, "predicted_start_s": 0, "state": state,
            "attempts": 1, "migration_id": null, "migration_ids": [], "reason": null,
            "ended_at_ms": null, "expected_at_ms": null,
        })
    };
    let drain: converge_api::Drain = serde_json::from_value(serde_json::json!({
        "id": "d1", "hosts": ["a"], "destinations": ["b"], "state": "running",
        "created_by": "ada", "created_at_ms": NOW - 60_000, "ended_at_ms": null,
        "deadline_ms": NOW + 3_600_000, "preset": "converge",
        "limits": {}, "policy": {},
        "items": [item("v1", "moved"), item("v2", "moved"), item("v3", "waiting"), item("v4", "pending")],
        "predicted_total_s": 120, "eta_at_ms": NOW + 90_000, "warnings": [], "rooms": [],
        "link_mib_s": 32, "link_basis": "the drain's bandwidth limit",
    }))
    .unwrap();
    let mut draining = host("a", HostState::Connected, 4);
    draining.draining = Some("d1".into());
    let hosts = [draining, host("b", HostState::Connected, 0)];
    let fleet = Fleet {
        hosts: &hosts,
        migrations: &[],
        dirty_rates: &[],
        drains: std::slice::from_ref(&drain),
    };
    let s = parse(&render(&fleet, &[], NOW));
    let host_label = |h: &str| vec![("host".to_owned(), h.to_owned())];
    assert_eq!(get(&s, "converge_host_draining", host_label("a")), 1.0);
    assert_eq!(get(&s, "converge_host_draining", host_label("b")), 0.0);
    let info = vec![
        ("drain".to_owned(), "d1".to_owned()),
        ("hosts".to_owned(), "a".to_owned()),
        ("state".to_owned(), "running".to_owned()),
    ];
    assert_eq!(get(&s, "converge_drain_info", info), 1.0);
    let vms = |state: &str| {
        vec![
            ("drain".to_owned(), "d1".to_owned()),
            ("state".to_owned(), state.to_owned()),
        ]
    };
    assert_eq!(get(&s, "converge_drain_vms", vms("moved")), 2.0);
    assert_eq!(get(&s, "converge_drain_vms", vms("waiting")), 1.0);
    assert_eq!(get(&s, "converge_drain_vms", vms("left")), 0.0);
    let eta = vec![("drain".to_owned(), "d1".to_owned())];
    assert_eq!(get(&s, "converge_drain_eta_seconds", eta), 90.0);
}
