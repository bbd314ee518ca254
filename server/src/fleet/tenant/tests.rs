//! Tenant wording: what it says, and what it never says.

use converge_api::{Basis, FinalStats, Forecast, Sample};

use super::*;

fn running() -> Migration {
    let mut m = Migration::begun(
        "m1".into(),
        "uuid-1".into(),
        "web-1".into(),
        "compute-07".into(),
        MigrationState::Running,
        1_000,
    );
    m.destination = Some("compute-09".into());
    m.started_by = Some("otto-operator".into());
    m.progress_pct = Some(63.4);
    m.levers.downtime_limit_ms = Some(300);
    m.last_sample = Some(Sample {
        throttle_pct: Some(20),
        iteration: 3,
        ..Sample::default()
    });
    m.forecast = Some(Forecast {
        eta_min_s: Some(40),
        eta_max_s: Some(110),
        expected_pause_ms: Some(300),
        expected_pause_basis: Basis::AtMost,
        ..Forecast::new(
            Verdict::Converging,
            "each pass leaves 40 % of the one before (host compute-07)",
        )
    });
    m
}

fn vm() -> Vm {
    Vm {
        uuid: "uuid-1".into(),
        name: "web-1".into(),
        host: "compute-07".into(),
        state: VmState::Running,
        memory_bytes: 1 << 30,
        vcpus: 2,
        migration_id: Some("m1".into()),
        project: Some("acme".into()),
        nova_managed: false,
        dirty_rate: None,
    }
}

#[test]
fn a_running_move_reads_like_the_status_page_promises() {
    let t = tenant_move(&running());
    assert_eq!(t.headline, "Being moved for maintenance");
    assert_eq!(
        t.detail,
        "63 % moved, expect a pause under 300 ms, CPU slowed 20 % right now."
    );
    assert_eq!(t.outlook.as_deref(), Some("On track, under 2 min left."));
    assert_eq!(t.progress_pct, Some(63));
    assert_eq!((t.pause_ms, t.slowdown_pct), (Some(300), Some(20)));
}

#[test]
fn a_finished_move_says_what_the_vm_went_through() {
    let mut m = running();
    m.state = MigrationState::Completed;
    m.ended_at_ms = Some(60_000);
    m.max_throttle_pct = Some(35);
    m.final_stats = Some(FinalStats {
        downtime_ms: Some(24),
        ..FinalStats::default()
    });
    let t = tenant_move(&m);
    assert_eq!(t.headline, "Moved");
    assert_eq!(
        t.detail,
        "It was paused for 24 ms and its CPU slowed by up to 35 % while it moved."
    );
    assert_eq!(t.progress_pct, None);
    assert_eq!((t.pause_ms, t.slowdown_pct), (Some(24), Some(35)));
}

#[test]
fn a_hopeless_move_promises_no_pause() {
    let mut m = running();
    if let Some(f) = m.forecast.as_mut() {
        f.verdict = Verdict::WillNotConverge;
    }
    let t = tenant_move(&m);
    assert_eq!(t.pause_ms, None);
    assert!(!t.detail.contains("pause"), "{}", t.detail);
    assert!(
        t.outlook
            .as_deref()
            .unwrap()
            .contains("operators have been told"),
        "{:?}",
        t.outlook
    );
}

#[test]
fn nothing_of_the_fleet_reaches_a_tenant() {
    let json = serde_json::to_string(&tenant_vm(&vm(), Some(&running()), None).unwrap()).unwrap();
    for secret in [
        "compute-07",
        "compute-09",
        "otto-operator",
        "each pass leaves",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn a_vm_of_no_project_has_no_tenant_view() {
    let mut vm = vm();
    vm.project = None;
    assert!(tenant_vm(&vm, None, None).is_none());
}

#[test]
fn spans_are_rounded_for_people() {
    assert_eq!(span(0, 0), "about 1 s");
    assert_eq!(span(3, 8), "3–8 s");
    assert_eq!(span(20, 70), "under 2 min");
    assert_eq!(span(130, 170), "2–3 min");
    assert_eq!(span(125, 130), "2–3 min");
    assert_eq!(span(30, 59), "30–59 s");
}

#[test]
fn the_first_pass_promises_nothing_yet() {
    let mut m = running();
    if let Some(s) = m.last_sample.as_mut() {
        s.iteration = 1;
    }
    let outlook = tenant_move(&m).outlook.unwrap();
    assert!(
        outlook.starts_with("Copying its memory the first time"),
        "{outlook}"
    );
}
