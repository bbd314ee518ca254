//! The fleet's state machine, driven by synthetic host reports.

use converge_api::{HostState, LiveEvent, Migration, MigrationState, MigrationUpdate, VmState};
use converge_libvirt::{DomainState, DomainSummary, JobKind, JobStats, LifecycleEvent, ParamValue};
use time::OffsetDateTime;

use super::{Change, FleetState, HistoryWrite, Refusal};
use crate::hypervisor::{
    ConnectionReport, JobEndedReport, MigrateReturnedReport, Report, SampleReport,
};

const VM: &str = "11111111-2222-3333-4444-555555555555";

fn domain(state: DomainState) -> DomainSummary {
    DomainSummary {
        name: "web1".into(),
        uuid: VM.into(),
        state,
        memory_bytes: 512 << 20,
        vcpus: 1,
        nova: None,
    }
}

fn connected(fleet: &mut FleetState, host: &str) {
    fleet.apply(
        Report::Connection(ConnectionReport {
            host: host.into(),
            connected: true,
            error: None,
            hostname: Some(host.into()),
            libvirt_version: Some("11.3.0".into()),
        }),
        0,
    );
}

/// Hosts a and b connected; the VM runs on a.
fn fleet() -> FleetState {
    let mut fleet = FleetState::new(["a", "b"], 0);
    connected(&mut fleet, "a");
    connected(&mut fleet, "b");
    fleet.apply(
        Report::Domains {
            host: "a".into(),
            domains: vec![domain(DomainState::Running)],
        },
        0,
    );
    fleet
}

fn stats(kind: JobKind, fields: &[(&str, u64)]) -> JobStats {
    JobStats {
        kind,
        params: fields
            .iter()
            .map(|(n, v)| ((*n).to_owned(), ParamValue::ULLong(*v)))
            .collect(),
    }
}

fn sample(iteration: Option<u32>, remaining: u64) -> Report {
    sample_at(iteration.unwrap_or(1), iteration.is_some(), remaining)
}

/// A reading during pass `pass`; `announced` when read at the pass's iteration event.
fn sample_at(pass: u32, announced: bool, remaining: u64) -> Report {
    Report::Sample(SampleReport {
        host: "a".into(),
        vm_uuid: VM.into(),
        vm_name: "web1".into(),
        stats: stats(
            JobKind::Unbounded,
            &[
                ("memory_total", 1000),
                ("memory_remaining", remaining),
                ("memory_iteration", u64::from(pass)),
                ("time_elapsed", 1500),
            ],
        ),
        at: OffsetDateTime::UNIX_EPOCH,
        iteration_started: announced.then_some(pass),
        levers: converge_api::Levers {
            downtime_limit_ms: Some(300),
            ..Default::default()
        },
    })
}

fn migration(id: &str) -> Migration {
    let mut m = Migration::begun(
        id.into(),
        VM.into(),
        "web1".into(),
        "a".into(),
        MigrationState::Starting,
        10,
    );
    m.destination = Some("b".into());
    m.started_by = Some("ada".into());
    m
}

fn published_migration(changes: &[Change]) -> Option<&Migration> {
    changes.iter().find_map(|c| match c {
        Change::Publish(LiveEvent::Migration(update)) => Some(&update.migration),
        _ => None,
    })
}

fn persisted(changes: &[Change]) -> bool {
    changes
        .iter()
        .any(|c| matches!(c, Change::Persist(HistoryWrite::Migration(_))))
}

#[test]
fn a_start_is_checked_against_the_fleet() {
    let mut f = fleet();
    assert!(matches!(
        f.plan_start("nope", "b"),
        Err(Refusal::NotFound(_))
    ));
    assert!(matches!(f.plan_start(VM, "a"), Err(Refusal::Invalid(_))));
    let err = f.plan_start(VM, "c").unwrap_err();
    assert_eq!(
        err,
        Refusal::NotFound("no host called \"c\"; hosts are: a, b".into())
    );
    let plan = f.plan_start(VM, "b").unwrap();
    assert_eq!((plan.source.as_str(), plan.vm_name.as_str()), ("a", "web1"));

    f.apply(
        Report::Connection(ConnectionReport {
            host: "b".into(),
            connected: false,
            error: Some("gone".into()),
            hostname: None,
            libvirt_version: None,
        }),
        5,
    );
    assert!(matches!(f.plan_start(VM, "b"), Err(Refusal::Conflict(_))));
    assert_eq!(f.hosts()[1].state, HostState::Disconnected);
}

#[test]
fn a_vm_cannot_be_migrated_twice_at_once() {
    let mut f = fleet();
    let changes = f.begin(migration("m1")).unwrap();
    assert!(persisted(&changes));
    assert!(matches!(f.plan_start(VM, "b"), Err(Refusal::Conflict(_))));
    assert!(matches!(
        f.begin(migration("m2")),
        Err(Refusal::Conflict(_))
    ));
}

#[test]
fn samples_run_a_started_migration_and_the_call_completes_it() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    let changes = f.apply(sample(Some(1), 900), 100);
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Running);
    assert!(persisted(&changes), "the state change is persisted");
    let changes = f.apply(sample(None, 500), 600);
    assert!(
        !persisted(&changes),
        "plain samples are not written every tick"
    );
    assert!(matches!(
        &changes[0],
        Change::Publish(LiveEvent::Migration(MigrationUpdate {
            sample: Some(_),
            ..
        }))
    ));

    // While the call is in flight, a "no job" reading does not end it.
    let changes = f.apply(
        Report::JobEnded(JobEndedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            completed: None,
            domain_gone: true,
        }),
        700,
    );
    assert!(changes.is_empty());

    let changes = f.apply(
        Report::MigrateReturned(MigrateReturnedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            result: Ok(()),
            connection_lost: false,
            cancelled: false,
        }),
        800,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Completed);
    assert_eq!(m.ended_at_ms, Some(800));
    assert_eq!(m.progress_pct, Some(100.0));

    // The job-completed event arrives afterwards and only adds the final statistics.
    let changes = f.apply(
        Report::JobCompleted {
            host: "a".into(),
            vm_uuid: VM.into(),
            stats: stats(
                JobKind::Completed,
                &[("downtime", 33), ("time_elapsed", 2700)],
            ),
        },
        900,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Completed);
    assert_eq!(m.ended_at_ms, Some(800));
    assert_eq!(m.final_stats.as_ref().unwrap().downtime_ms, Some(33));
}

#[test]
fn an_abort_request_turns_a_failed_call_into_aborted() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    assert_eq!(f.request_abort("m1").unwrap(), ("a".into(), VM.into()));
    let changes = f.apply(
        Report::MigrateReturned(MigrateReturnedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            result: Err("operation aborted: canceled by client".into()),
            connection_lost: false,
            cancelled: false,
        }),
        50,
    );
    assert_eq!(
        published_migration(&changes).unwrap().state,
        MigrationState::Aborted
    );
    assert!(matches!(f.request_abort("m1"), Err(Refusal::Conflict(_))));
    assert!(matches!(f.request_abort("zzz"), Err(Refusal::NotFound(_))));
    // The VM is free to be migrated again.
    assert!(f.plan_start(VM, "b").is_ok());
}

#[test]
fn a_failed_call_without_abort_is_a_failure_with_libvirts_reason() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    let changes = f.apply(
        Report::MigrateReturned(MigrateReturnedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            result: Err("unable to connect to server".into()),
            connection_lost: false,
            cancelled: false,
        }),
        50,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Failed);
    assert_eq!(m.error.as_deref(), Some("unable to connect to server"));
}

#[test]
fn a_lost_connection_leaves_the_outcome_to_the_job_itself() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    f.apply(sample(Some(1), 900), 100);
    let changes = f.apply(
        Report::MigrateReturned(MigrateReturnedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            result: Err("End of file while reading data".into()),
            connection_lost: true,
            cancelled: false,
        }),
        200,
    );
    assert!(changes.is_empty());
    assert_eq!(f.migration("m1").unwrap().state, MigrationState::Running);
    // After reconnecting, libvirt says the last job was cancelled (the daemon restart
    // cancelled it).
    let changes = f.apply(
        Report::JobEnded(JobEndedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            completed: Some(stats(JobKind::Cancelled, &[])),
            domain_gone: false,
        }),
        300,
    );
    assert_eq!(
        published_migration(&changes).unwrap().state,
        MigrationState::Aborted
    );
}

#[test]
fn a_migration_found_running_is_adopted_and_placed() {
    let mut f = fleet();
    f.apply(
        Report::Domains {
            host: "b".into(),
            domains: vec![domain(DomainState::Paused { migrating: true })],
        },
        0,
    );
    let changes = f.apply(sample(Some(3), 400), 10_000);
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Running);
    assert_eq!(m.started_by, None);
    assert_eq!(m.destination.as_deref(), Some("b"));
    assert_eq!(
        m.started_at_ms,
        10_000 - 1500,
        "start time from libvirt's elapsed time"
    );
    let vms = f.vms();
    let incoming = vms.iter().find(|v| v.host == "b").unwrap();
    assert_eq!(incoming.state, converge_api::VmState::Incoming);
}

#[test]
fn a_migration_restored_from_the_database_keeps_its_id() {
    let mut f = fleet();
    let mut old = migration("m-old");
    old.state = MigrationState::Running;
    assert_eq!(f.restore(vec![old]), vec![("a".to_owned(), VM.to_owned())]);
    let changes = f.apply(sample(Some(5), 300), 20_000);
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.id, "m-old");
    assert_eq!(m.started_by.as_deref(), Some("ada"));
}

#[test]
fn a_restored_migration_that_ended_meanwhile_is_closed_from_libvirts_record() {
    let mut f = fleet();
    let mut old = migration("m-old");
    old.state = MigrationState::Running;
    f.restore(vec![old]);
    let changes = f.apply(
        Report::JobEnded(JobEndedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            completed: Some(stats(JobKind::Completed, &[("downtime", 12)])),
            domain_gone: false,
        }),
        30_000,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.id, "m-old");
    assert_eq!(m.state, MigrationState::Completed);
    assert_eq!(m.final_stats.as_ref().unwrap().downtime_ms, Some(12));
    assert!(persisted(&changes));
}

#[test]
fn post_copy_is_seen_from_the_lifecycle_event() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    let changes = f.apply(
        Report::Lifecycle {
            host: "a".into(),
            vm_uuid: VM.into(),
            event: LifecycleEvent::Suspended(7),
        },
        10,
    );
    assert_eq!(
        published_migration(&changes).unwrap().state,
        MigrationState::PostCopy
    );
}

#[test]
fn iteration_boundaries_ride_on_the_update() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    let boundary = |changes: &[Change]| match &changes[0] {
        Change::Publish(LiveEvent::Migration(MigrationUpdate { iteration, .. })) => *iteration,
        other => panic!("expected a migration update, got {other:?}"),
    };
    // Announced at the event, valued by the pass's first ordinary reading.
    let mark = boundary(&f.apply(sample_at(2, true, 3), 10)).unwrap();
    assert_eq!((mark.iteration, mark.mem_remaining_bytes), (2, 0));
    let mark = boundary(&f.apply(sample_at(2, false, 250), 20)).unwrap();
    assert_eq!((mark.iteration, mark.mem_remaining_bytes), (2, 250));
    assert_eq!(
        boundary(&f.apply(sample_at(2, false, 100), 30)),
        None,
        "draining changes no boundary"
    );
    assert_eq!(f.detail("m1").unwrap().iterations.len(), 1);
}

#[test]
fn unchanged_domain_lists_publish_nothing() {
    let mut f = fleet();
    let again = f.apply(
        Report::Domains {
            host: "a".into(),
            domains: vec![domain(DomainState::Running)],
        },
        0,
    );
    assert!(again.is_empty());
}

#[test]
fn a_vm_belongs_to_its_uuids_project_else_novas_else_its_hosts_name() {
    use crate::config::ProjectConfig;
    let report = |host: &str, domains: Vec<DomainSummary>| Report::Domains {
        host: host.into(),
        domains,
    };
    let vm = |uuid: &str, name: &str, nova: Option<&str>| DomainSummary {
        uuid: uuid.into(),
        name: name.into(),
        nova: nova.map(|project| converge_libvirt::NovaInstance {
            project: Some(project.into()),
            name: None,
        }),
        ..domain(DomainState::Running)
    };
    const NOVA_VM: &str = "99999999-2222-3333-4444-555555555555";
    const PINNED: &str = "88888888-2222-3333-4444-555555555555";
    const NAMESAKE: &str = "77777777-2222-3333-4444-555555555555";
    const UNOWNED: &str = "00000000-2222-3333-4444-555555555555";
    let mut fleet = FleetState::new(["a", "b"], 0).with_projects(&[ProjectConfig {
        name: "acme".into(),
        // "web1" on host a; and "db1" on a, which Nova says is another project's.
        vms: vec!["a/web1".into(), "a/db1".into(), PINNED.to_uppercase()],
    }]);
    connected(&mut fleet, "a");
    connected(&mut fleet, "b");
    fleet.apply(
        report(
            "a",
            vec![
                vm(VM, "web1", None),
                vm(NOVA_VM, "db1", Some("nova-project-uuid")),
                vm(PINNED, "pinned", Some("ignored: the UUID was named")),
                vm(UNOWNED, "batch1", None),
            ],
        ),
        0,
    );
    // Host b has its own "web1": the name names a's only.
    fleet.apply(report("b", vec![vm(NAMESAKE, "web1", None)]), 0);

    let project = |fleet: &FleetState, uuid: &str| fleet.vm(uuid).and_then(|vm| vm.project);
    assert_eq!(
        project(&fleet, VM).as_deref(),
        Some("acme"),
        "named on its host"
    );
    assert_eq!(
        project(&fleet, NOVA_VM).as_deref(),
        Some("nova-project-uuid"),
        "a name does not override Nova's metadata"
    );
    assert_eq!(
        project(&fleet, PINNED).as_deref(),
        Some("acme"),
        "a UUID does"
    );
    assert_eq!(project(&fleet, NAMESAKE), None, "another host's namesake");
    assert_eq!(project(&fleet, UNOWNED), None);
    let acme: Vec<String> = fleet
        .vms_in(&["acme".to_owned()])
        .into_iter()
        .map(|vm| vm.uuid)
        .collect();
    assert_eq!(acme.len(), 2, "{acme:?}");
    assert_eq!(fleet.project_of(VM), Some("acme"));

    // web1 moves to b (beside b's namesake, renamed there): it stays acme's.
    fleet.apply(report("a", vec![]), 0);
    fleet.apply(
        report(
            "b",
            vec![vm(NAMESAKE, "web1-old", None), vm(VM, "web1", None)],
        ),
        0,
    );
    assert_eq!(
        project(&fleet, VM).as_deref(),
        Some("acme"),
        "kept after a move"
    );
    assert_eq!(project(&fleet, NAMESAKE), None);
}

#[test]
fn an_unchanged_tenant_view_is_not_sent_again() {
    let mut fleet = fleet();
    let view = converge_api::TenantVm {
        uuid: VM.into(),
        name: "web1".into(),
        project: "acme".into(),
        state: VmState::Running,
        latest_move: None,
        scheduled: None,
    };
    assert!(fleet.tenant_view_changed(&view), "the first view goes out");
    assert!(
        !fleet.tenant_view_changed(&view),
        "the same view again does not"
    );
    let paused = converge_api::TenantVm {
        state: VmState::Paused,
        ..view.clone()
    };
    assert!(fleet.tenant_view_changed(&paused), "a change goes out");
    assert!(
        fleet.tenant_view_changed(&view),
        "and so does changing back"
    );
}

mod hostile_numbers {
    //! libvirt's numbers are its word, and a broken or hostile daemon can say anything:
    //! every field of every reading at any value, in any order, must go through the
    //! sampler, the fleet, the forecast, the policy and the tenants' projection without
    //! an overflow (tests build with overflow checks on, so one would panic here).

    use super::*;
    use proptest::prelude::*;

    const FIELDS: &[&str] = &[
        "time_elapsed",
        "data_total",
        "data_processed",
        "data_remaining",
        "memory_total",
        "memory_processed",
        "memory_remaining",
        "memory_bps",
        "memory_dirty_rate",
        "memory_page_size",
        "memory_iteration",
        "memory_constant",
        "memory_normal",
        "memory_normal_bytes",
        "downtime",
        "setup_time",
        "auto_converge_throttle",
        "compression_cache",
        "compression_bytes",
        "compression_pages",
        "compression_cache_misses",
        "compression_overflow",
        "memory_postcopy_requests",
    ];

    fn extreme() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(u64::from(u32::MAX)),
            Just(i64::MAX as u64),
            any::<u64>(),
            0u64..10_000,
        ]
    }

    fn reading() -> impl Strategy<Value = (Vec<u64>, Option<u32>, Option<u64>)> {
        (
            proptest::collection::vec(extreme(), FIELDS.len()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(extreme()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_readings_are_applied_without_overflow(readings in proptest::collection::vec(reading(), 1..12)) {
            let mut fleet = fleet();
            fleet.begin(migration("m1")).unwrap();
            for (i, (values, announced, limit)) in readings.into_iter().enumerate() {
                let params = FIELDS
                    .iter()
                    .zip(values)
                    .map(|(n, v)| ((*n).to_owned(), ParamValue::ULLong(v)))
                    .collect();
                let report = Report::Sample(SampleReport {
                    host: "a".into(),
                    vm_uuid: VM.into(),
                    vm_name: "web1".into(),
                    stats: JobStats { kind: JobKind::Unbounded, params },
                    at: OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(i as i64 * 500),
                    iteration_started: announced,
                    levers: converge_api::Levers {
                        downtime_limit_ms: limit,
                        bandwidth_mib_s: limit,
                        ..Default::default()
                    },
                });
                let changes = fleet.apply(report, i as i64 * 500);
                for change in &changes {
                    if let Change::Publish(event) = change {
                        let _ = crate::fleet::tenant::events_for(&fleet, event);
                    }
                }
            }
            prop_assert!(fleet.detail("m1").is_some());
            let _ = fleet.migrations();
        }
    }
}

fn acts(changes: &[Change]) -> Vec<&crate::fleet::Act> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Act(act) => Some(act),
            _ => None,
        })
        .collect()
}

#[test]
fn the_ceiling_aborts_a_migration_found_running_once_it_has_run_too_long() {
    let mut fleet = fleet().with_ceiling(super::Ceiling {
        max_ms: 60_000,
        action: converge_api::TimeoutAction::Abort,
    });
    // Found by sampling (started with virsh): no settings, so no deadline of its own.
    // It began 1.5 s before the first reading at t = 10 s, so at t = 8.5 s.
    let found = fleet.apply(sample(None, 900), 10_000);
    assert!(acts(&found).is_empty(), "not yet: {found:?}");
    let before = fleet.apply(sample(None, 800), 68_400);
    assert!(acts(&before).is_empty(), "59.9 s is under the ceiling");
    let at = fleet.apply(sample(None, 700), 68_600);
    let acted = acts(&at);
    assert_eq!(acted.len(), 1, "{at:?}");
    assert_eq!(acted[0].kind, crate::fleet::ActKind::Abort);
    assert_eq!(acted[0].actor, "policy");
    assert!(
        acted[0].reason.contains("migrations.max_duration_s") && acted[0].reason.contains("60 s"),
        "{}",
        acted[0].reason
    );
    // Once: the abort is under way.
    let later = fleet.apply(sample(None, 600), 75_000);
    assert!(acts(&later).is_empty());
}

#[test]
fn a_ceiling_of_post_copy_aborts_a_migration_that_may_not_switch() {
    let mut fleet = fleet().with_ceiling(super::Ceiling {
        max_ms: 1_000,
        action: converge_api::TimeoutAction::PostCopy,
    });
    let changes = fleet.apply(sample(None, 900), 10_000);
    let acted = acts(&changes);
    assert_eq!(acted.len(), 1, "{changes:?}");
    assert_eq!(acted[0].kind, crate::fleet::ActKind::Abort);
    assert!(
        acted[0].reason.contains("post-copy was not allowed"),
        "{}",
        acted[0].reason
    );
}

#[test]
fn an_abort_nobody_here_asked_for_is_recorded_as_done_outside() {
    // Started here, cancelled by `virsh domjobabort`: the call says the job was aborted.
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    let changes = f.apply(
        Report::MigrateReturned(MigrateReturnedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            result: Err("operation aborted: migration out job: canceled by client".into()),
            connection_lost: false,
            cancelled: true,
        }),
        500,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Aborted);
    assert!(
        m.error
            .as_deref()
            .is_some_and(|e| e.starts_with("aborted outside Converge")),
        "{:?}",
        m.error
    );

    // Found running (started with virsh), then cancelled: the last job says so.
    let mut f = fleet();
    f.apply(sample(None, 900), 1_000);
    let changes = f.apply(
        Report::JobEnded(JobEndedReport {
            host: "a".into(),
            vm_uuid: VM.into(),
            completed: Some(stats(JobKind::Cancelled, &[])),
            domain_gone: false,
        }),
        2_000,
    );
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::Aborted);
    assert_eq!(m.error.as_deref(), Some("aborted outside Converge"));
}

#[test]
fn a_switch_to_post_copy_is_named_outside_only_when_converge_did_not_ask() {
    let postcopy = || Report::Lifecycle {
        host: "a".into(),
        vm_uuid: VM.into(),
        event: LifecycleEvent::Suspended(super::SUSPENDED_POSTCOPY),
    };
    let mut f = fleet();
    f.apply(sample(None, 900), 1_000);
    let changes = f.apply(postcopy(), 2_000);
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::PostCopy);
    let outside = m.actions.iter().find(|a| a.actor == "outside Converge");
    assert_eq!(
        outside.map(|a| a.what.as_str()),
        Some("switched to post-copy")
    );

    let mut f = fleet();
    f.apply(sample(None, 900), 1_000);
    let id = f.migrations()[0].id.clone();
    f.note_request(
        &id,
        crate::fleet::ActKind::Lever(converge_api::LeverChange::PostCopy),
    );
    let changes = f.apply(postcopy(), 2_000);
    let m = published_migration(&changes).unwrap();
    assert_eq!(m.state, MigrationState::PostCopy);
    assert!(
        m.actions.iter().all(|a| a.actor != "outside Converge"),
        "{:?}",
        m.actions
    );
}

#[test]
fn a_vm_mid_migration_is_one_tenant_vm_where_it_runs() {
    let mut f = FleetState::new(["a", "b"], 0).with_projects(&[crate::config::ProjectConfig {
        name: "acme".into(),
        vms: vec![VM.into()],
    }]);
    connected(&mut f, "a");
    connected(&mut f, "b");
    // Listed on b (paused, incoming) before a: b's list arrives first.
    f.apply(
        Report::Domains {
            host: "b".into(),
            domains: vec![domain(DomainState::Paused { migrating: true })],
        },
        0,
    );
    f.apply(
        Report::Domains {
            host: "a".into(),
            domains: vec![domain(DomainState::Running)],
        },
        0,
    );
    f.apply(sample(Some(1), 400), 1_000);
    assert_eq!(f.vms().len(), 2, "the fleet page shows both copies");
    let mine = f.vms_in(&["acme".to_owned()]);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].host, "a");
    assert_eq!(f.vm(VM).map(|vm| vm.host).as_deref(), Some("a"));
}

#[test]
fn a_dirty_rate_is_measured_only_while_the_vm_does_not_migrate() {
    let mut f = fleet();
    // Due at once (never measured), then not again until `every` has passed.
    assert_eq!(f.begin_measurement("a", 60_000, 1_000).as_deref(), Some(VM));
    assert!(
        f.begin_measurement("a", 60_000, 1_000).is_none(),
        "one at a time per host"
    );
    let changes = f.end_measurement(VM, Some(40 << 20), 1, 2_000);
    let Some(Change::Publish(LiveEvent::Vms(update))) = changes.first() else {
        panic!("the reading is published with the VM list: {changes:?}");
    };
    let reading = update.vms[0].dirty_rate.unwrap();
    assert_eq!((reading.bytes_per_s, reading.at_ms), (40 << 20, 2_000));
    assert!(
        f.begin_measurement("a", 60_000, 30_000).is_none(),
        "not due yet"
    );
    assert_eq!(
        f.fresh_dirty_rate(VM, 30_000).map(|r| r.bytes_per_s),
        Some(40 << 20)
    );
    assert!(
        f.fresh_dirty_rate(VM, 2_000 + super::FRESH_DIRTY_RATE_MS + 1)
            .is_none(),
        "too old to stand for the guest now"
    );

    // Due again; while it is measured a start is refused, so the two never overlap.
    assert_eq!(
        f.begin_measurement("a", 60_000, 61_000).as_deref(),
        Some(VM)
    );
    assert!(matches!(
        f.begin(migration("m1")),
        Err(Refusal::Conflict(_))
    ));
    f.end_measurement(VM, Some(50 << 20), 1, 62_000);
    let reading = f.vm(VM).unwrap().dirty_rate.unwrap();
    assert_eq!(reading.previous_bytes_per_s, Some(40 << 20), "the trend");

    // A migration's record keeps the reading from before it; a migrating VM is not due.
    f.begin(migration("m1")).unwrap();
    assert_eq!(
        f.migrations["m1"]
            .measured_dirty_rate
            .map(|r| r.bytes_per_s),
        Some(50 << 20)
    );
    assert!(f.begin_measurement("a", 60_000, 200_000).is_none());
}

#[test]
fn a_reading_taken_while_a_migration_began_is_dropped() {
    let mut f = fleet();
    assert!(f.begin_measurement("a", 60_000, 1_000).is_some());
    // The start raced the measurement (it waits, but only so long): the migration wins.
    f.measuring.clear();
    f.begin(migration("m1")).unwrap();
    f.measuring.insert(VM.into(), "a".into());
    assert!(f.end_measurement(VM, Some(1 << 30), 1, 2_000).is_empty());
    assert!(f.vm(VM).unwrap().dirty_rate.is_none());
}

#[test]
fn a_reading_that_arrives_after_the_end_is_not_a_new_migration() {
    let mut f = fleet();
    f.begin(migration("m1")).unwrap();
    f.apply(sample(Some(1), 900), 100);
    // The job completes (its event is applied first)...
    f.apply(
        Report::JobCompleted {
            host: "a".into(),
            vm_uuid: VM.into(),
            stats: stats(JobKind::Completed, &[("time_elapsed", 1500)]),
        },
        1_600,
    );
    assert!(!f.migrations["m1"].migration.state.is_active());
    // ...then the sampler's last reading of it, taken just before: not "found running".
    let changes = f.apply(sample(None, 10), 1_700);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(f.migrations.len(), 1, "no second record of the same job");
    // A new job of the same VM well after the end is adopted as before.
    f.apply(sample(Some(1), 900), 10_000);
    assert_eq!(f.migrations.len(), 2);
}
