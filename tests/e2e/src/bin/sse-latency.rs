//! Benchmark (prints figures, asserts nothing): latency from a job-stats reading to its
//! arrival at SSE viewers, p50 and p99, with 1 and with 100 viewers.
//!
//! Source: SIMULATED. Readings enter the server's report channel exactly where a host
//! worker hands a job-stats reading over (`Report::Sample`); everything after that is the
//! real server — the fleet task, fleet state, hub, one serialization per update, SSE over
//! loopback TCP, and each viewer parsing the JSON. Libvirt's own RPC time is before the reading exists, so
//! it is not part of this figure. Usage: `sse-latency [samples] [interval_ms]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_libvirt::{JobKind, JobStats, ParamValue};
use converge_server::hypervisor::{Report, SampleReport};
use converge_testkit::SseReader;

const HOST: &str = r#"
[[hosts]]
name = "sim"
uri = "qemu+tcp://127.0.0.1:1/system"
"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let samples: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(600);
    let interval = Duration::from_millis(args.next().and_then(|a| a.parse().ok()).unwrap_or(20));
    println!("sse-latency (simulated source): {samples} readings every {interval:?} per run");
    println!(
        "{:>8} {:>9} {:>9} {:>9} {:>9}",
        "viewers", "received", "p50 ms", "p99 ms", "max ms"
    );
    for viewers in [1, 100] {
        let (received, mut latencies) = run(viewers, samples, interval).await;
        latencies.sort_unstable();
        let pick = |q: f64| {
            let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies.get(i).copied().unwrap_or_default().as_secs_f64() * 1000.0
        };
        println!(
            "{viewers:>8} {received:>9} {:>9.3} {:>9.3} {:>9.3}",
            pick(0.50),
            pick(0.99),
            pick(1.0)
        );
    }
}

/// One run: `viewers` streams, `samples` readings; returns how many deliveries arrived and
/// their latencies.
async fn run(viewers: usize, samples: u64, interval: Duration) -> (usize, Vec<Duration>) {
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), HOST).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; samples as usize + 1]));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..viewers {
        let mut reader = SseReader::open(&server.url, &admin.cookie, None)
            .await
            .reader;
        reader.patience = Duration::from_secs(30);
        let (sent, latencies) = (sent.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while let Some(event) = reader.next().await {
                if event.event != "migration" {
                    continue;
                }
                let update: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                let Some(tick) = update["sample"]["elapsed_ms"].as_u64() else {
                    continue;
                };
                let at = sent.lock().unwrap()[tick as usize];
                if let Some(at) = at {
                    latencies.lock().unwrap().push(at.elapsed());
                }
                seen += 1;
                if tick == samples {
                    break;
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for tick in 1..=samples {
        let report = reading(tick);
        sent.lock().unwrap()[tick as usize] = Some(Instant::now());
        server.state.reports.send(report).unwrap();
        tokio::time::sleep(interval).await;
    }
    let mut received = 0;
    for task in tasks {
        received += task.await.unwrap();
    }
    server.stop().await;
    let latencies = latencies.lock().unwrap().clone();
    (received, latencies)
}

/// A job-stats reading of a migration in its 4th pass; `elapsed_ms` carries the tick.
fn reading(tick: u64) -> Report {
    let fields = [
        ("operation", 5),
        ("time_elapsed", tick),
        ("memory_total", 512 << 20),
        ("memory_processed", (tick * 4) << 20),
        ("memory_remaining", 96 << 20),
        ("memory_bps", 32 << 20),
        ("memory_dirty_rate", 24_000),
        ("memory_page_size", 4096),
        ("memory_iteration", 4),
        ("downtime", 4000),
    ];
    Report::Sample(SampleReport {
        host: "sim".into(),
        vm_uuid: "00000000-0000-4000-8000-000000000001".into(),
        vm_name: "bench".into(),
        stats: JobStats {
            kind: JobKind::Unbounded,
            params: fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), ParamValue::ULLong(*v)))
                .collect(),
        },
        at: time::OffsetDateTime::now_utc(),
        iteration_started: None,
        levers: converge_api::Levers {
            downtime_limit_ms: Some(300),
            ..Default::default()
        },
    })
}
