//! Shutting down loses nothing: host reports already queued are applied, the migrations
//! under way are written as they stand with their latest sample, and all of it lands on
//! disk before `serve` returns.

use converge_libvirt::{JobKind, JobStats, ParamValue};
use converge_server::hypervisor::{Report, SampleReport};
use time::OffsetDateTime;

use crate::support::{LiveServer, TestApp};

/// A reading of an outgoing migration of VM number `n`, found on host `a`, `later_ms`
/// after now, with `remaining` bytes to go.
fn sample(n: u32, later_ms: i64, remaining: u64) -> Report {
    Report::Sample(SampleReport {
        host: "a".into(),
        vm_uuid: format!("00000000-0000-0000-0000-{n:012}"),
        vm_name: format!("vm{n}"),
        stats: JobStats {
            kind: JobKind::Unbounded,
            params: [
                ("memory_total", 1 << 30),
                ("memory_remaining", remaining),
                ("memory_iteration", 1),
                ("time_elapsed", 1500),
            ]
            .iter()
            .map(|(name, v)| ((*name).to_owned(), ParamValue::ULLong(*v)))
            .collect(),
        },
        at: OffsetDateTime::now_utc() + time::Duration::milliseconds(later_ms),
        iteration_started: None,
        levers: Default::default(),
    })
}

#[tokio::test]
async fn reports_queued_at_shutdown_reach_the_database_before_serve_returns() {
    const VMS: u32 = 300;
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    // Two readings each: the history keeps the first (the second comes too soon after
    // it to be kept as it happens), and shutdown writes the second.
    for n in 0..VMS {
        app.state.reports.send(sample(n, 0, 1 << 29)).unwrap();
        app.state.reports.send(sample(n, 100, 1 << 28)).unwrap();
    }
    // At once: most reports are still queued, their writes not yet begun.
    server.stop().await;
    let on_disk: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM migrations")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(
        on_disk,
        i64::from(VMS),
        "every migration the hosts reported before the stop is on disk"
    );
    let db = app.db().await;
    let samples: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM migration_samples")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        samples,
        2 * i64::from(VMS),
        "both readings of every migration"
    );
    let summaries: Vec<String> = sqlx::query_scalar("SELECT summary_json FROM migrations")
        .fetch_all(&db)
        .await
        .unwrap();
    for summary in summaries {
        let m: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(
            m["last_sample"]["mem_remaining_bytes"],
            1u64 << 28,
            "the summary on disk ends where the live view did"
        );
    }
}
