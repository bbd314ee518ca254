//! Shutting down loses nothing: host reports already queued are applied and their
//! history lands on disk before `serve` returns.

use converge_libvirt::{JobKind, JobStats, ParamValue};
use converge_server::hypervisor::{Report, SampleReport};
use time::OffsetDateTime;

use crate::support::{LiveServer, TestApp};

/// A first reading of an outgoing migration of VM number `n`, found on host `a`.
fn first_sample(n: u32) -> Report {
    Report::Sample(SampleReport {
        host: "a".into(),
        vm_uuid: format!("00000000-0000-0000-0000-{n:012}"),
        vm_name: format!("vm{n}"),
        stats: JobStats {
            kind: JobKind::Unbounded,
            params: [
                ("memory_total", 1 << 30),
                ("memory_remaining", 1 << 29),
                ("memory_iteration", 1),
                ("time_elapsed", 1500),
            ]
            .iter()
            .map(|(name, v)| ((*name).to_owned(), ParamValue::ULLong(*v)))
            .collect(),
        },
        at: OffsetDateTime::now_utc(),
        iteration_started: None,
        levers: Default::default(),
    })
}

#[tokio::test]
async fn reports_queued_at_shutdown_reach_the_database_before_serve_returns() {
    const VMS: u32 = 300;
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    for n in 0..VMS {
        app.state.reports.send(first_sample(n)).unwrap();
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
}
