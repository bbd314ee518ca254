//! The fleet task: a report that panics while being applied is noted, and the task goes on.

use std::sync::Arc;

use converge_libvirt::{JobKind, JobStats, ParamValue};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::{Fleet, FleetState};
use crate::clock::SystemClock;
use crate::hub::Hub;
use crate::hypervisor::{Report, SampleReport};

const VM: &str = "11111111-2222-3333-4444-555555555555";

/// A reading of VM's outgoing migration with `remaining` bytes left.
fn sample(remaining: u64) -> Report {
    Report::Sample(SampleReport {
        host: "a".into(),
        vm_uuid: VM.into(),
        vm_name: "web1".into(),
        stats: JobStats {
            kind: JobKind::Unbounded,
            params: [
                ("memory_total", 1000),
                ("memory_remaining", remaining),
                ("memory_iteration", 1),
                ("time_elapsed", 1500),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), ParamValue::ULLong(*v)))
            .collect(),
        },
        at: OffsetDateTime::now_utc(),
        iteration_started: None,
        levers: Default::default(),
    })
}

#[tokio::test]
async fn a_report_that_panics_is_noted_and_the_next_ones_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("f.db"))
        .await
        .unwrap();
    let (fleet, queues) = Fleet::new(
        FleetState::new(["a", "b"], 0),
        Arc::new(Hub::new(64)),
        Arc::new(SystemClock),
    );
    tokio::spawn(super::write_history(queues.history, store));
    let (reports, incoming) = mpsc::unbounded_channel();
    let never = tokio_util::sync::CancellationToken::new();
    // A sample with 666 bytes left stands for any report the code cannot handle.
    let task = tokio::spawn(
        fleet
            .clone()
            .run_with(incoming, never, |state, report, now_ms| {
                if let Report::Sample(SampleReport { stats, .. }) = &report
                    && stats
                        .params
                        .iter()
                        .any(|(_, v)| *v == ParamValue::ULLong(666))
                {
                    panic!("injected: this report cannot be applied");
                }
                state.apply(report, now_ms)
            }),
    );
    for remaining in [900, 666, 500] {
        reports.send(sample(remaining)).unwrap();
    }
    drop(reports);
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the fleet task ends when its senders do")
        .expect("and it did not die of the panic");

    let migrations = fleet.read().migrations();
    assert_eq!(migrations.len(), 1, "{migrations:?}");
    let migration = &migrations[0];
    let noted = migration
        .actions
        .iter()
        .find(|a| a.what == "a report was not processed")
        .expect("the failed report is noted on its migration");
    assert_eq!(noted.result, "internal error");
    let last = migration.last_sample.as_ref().expect("a sample");
    assert_eq!(
        last.mem_remaining_bytes, 500,
        "the report after the panic was applied"
    );
}

#[tokio::test]
async fn a_flush_returns_once_every_queued_write_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("f.db"))
        .await
        .unwrap();
    let (fleet, queues) = Fleet::new(
        FleetState::new(["a", "b"], 0),
        Arc::new(Hub::new(64)),
        Arc::new(SystemClock),
    );
    let writer = tokio::spawn(super::write_history(queues.history, store.clone()));
    let begin = |n: i64| {
        let migration = converge_api::Migration::begun(
            format!("m{n}"),
            format!("vm-{n}"),
            format!("web{n}"),
            "a".into(),
            converge_api::MigrationState::Running,
            n,
        );
        fleet.update(|state, _| state.begin(migration)).unwrap();
    };
    for n in 0..50 {
        begin(n);
    }
    fleet.flush().await;
    let stored = store.active_migrations().await.unwrap();
    assert_eq!(
        stored.len(),
        50,
        "every write queued before the flush is done"
    );

    // Closing: what was queued before lands, then the writer ends.
    for n in 50..80 {
        begin(n);
    }
    fleet.close_history();
    tokio::time::timeout(std::time::Duration::from_secs(10), writer)
        .await
        .expect("the writer ends once closed")
        .unwrap();
    assert_eq!(store.active_migrations().await.unwrap().len(), 80);
}

#[tokio::test]
async fn reports_queued_before_the_stop_are_applied_and_then_the_loop_ends() {
    let (fleet, _queues) = Fleet::new(
        FleetState::new(["a", "b"], 0),
        Arc::new(Hub::new(64)),
        Arc::new(SystemClock),
    );
    let (reports, incoming) = mpsc::unbounded_channel();
    for remaining in [900, 800, 700] {
        reports.send(sample(remaining)).unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    // The senders stay open (as the server's own does): only the stop ends the loop.
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        fleet.clone().run(incoming, stop),
    )
    .await
    .expect("the loop ends at the stop");
    let migrations = fleet.read().migrations();
    let last = migrations[0].last_sample.as_ref().expect("a sample");
    assert_eq!(
        last.mem_remaining_bytes, 700,
        "every queued report was applied"
    );
    drop(reports);
}
