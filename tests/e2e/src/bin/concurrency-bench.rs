//! Lab benchmark (prints a table, asserts nothing): N migrations at once across the
//! three lab hosts, through the real server, for N = 1, 4, 8 (or the Ns given).
//!
//! Guests are idle (under TCG an idle guest costs little CPU; CPU is not the limit here)
//! and migrate round-robin a → b → c → a at 2 MiB/s, slow enough to stay in their first
//! pass for the whole window. For each N: the achieved sampling interval (gaps between a
//! migration's readings as the live stream delivered them, all migrations pooled), p50 and
//! p99, and the abort latency (each migration aborted at once, all together; time to the
//! answer), p50 and p99. Usage: `concurrency-bench [window_s] [N…]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::fleet::{start_with, state, vm_uuid, wait_connected, wait_sampled, wait_until};
use converge_e2e::samples::{Recorder, gaps, now_ms, percentile};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS, HOSTS_CONFIG, Lab};
use serde_json::json;

const INTERVAL_MS: i64 = 500;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let window = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(15));
    let mut ns: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    if ns.is_empty() {
        ns = vec![1, 4, 8];
    }
    let lab = Lab::acquire().await;
    let config = HOSTS_CONFIG.replace("interval_ms = 250", &format!("interval_ms = {INTERVAL_MS}"));
    println!(
        "concurrency-bench: idle guests, 2 MiB/s each, sampling every {INTERVAL_MS} ms, {} s window",
        window.as_secs()
    );
    println!(
        "{:>3} {:>9} {:>13} {:>13} {:>12} {:>14} {:>14}",
        "N",
        "readings",
        "interval p50",
        "interval p99",
        "interval max",
        "abort p50 ms",
        "abort p99 ms"
    );
    for n in ns {
        let placed: Vec<(String, &str, &str)> = (0..n)
            .map(|i| {
                let source = HOSTS[i % HOSTS.len()];
                let destination = HOSTS[(i + 1) % HOSTS.len()];
                (format!("bench-{i}"), source, destination)
            })
            .collect();
        for (name, source, _) in &placed {
            lab.start_vm_on(name, "idle", 0, 0, source).await;
        }
        let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config).await;
        let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
        for host in HOSTS {
            wait_connected(&operator, host).await;
        }
        let recorder = Recorder::open(&server.url, &operator.cookie).await;
        let mut uuids = Vec::new();
        for (name, source, destination) in &placed {
            uuids.push((vm_uuid(&operator, name, source).await, *destination));
        }
        let slow = json!({ "bandwidth_mib_s": 2 });
        let ids = futures_util::future::join_all(
            uuids
                .iter()
                .map(|(uuid, destination)| start_with(&operator, uuid, destination, slow.clone())),
        )
        .await;
        for id in &ids {
            wait_sampled(&operator, id).await;
        }
        let from = now_ms();
        tokio::time::sleep(window).await;
        let to = now_ms();
        let aborts = futures_util::future::join_all(ids.iter().map(|id| {
            let operator = &operator;
            async move {
                let t0 = Instant::now();
                let (status, _) = operator
                    .post(&format!("/api/migrations/{id}/abort"), json!({}))
                    .await;
                (status, i64::try_from(t0.elapsed().as_millis()).unwrap())
            }
        }))
        .await;
        let seen = recorder.samples();
        let mut all_gaps = Vec::new();
        let mut readings = 0;
        for id in &ids {
            let g = gaps(&seen, id, from, to);
            readings += g.len() + 1;
            all_gaps.extend(g);
        }
        let abort_ms: Vec<i64> = aborts
            .iter()
            .filter(|(status, _)| status.as_u16() == 202)
            .map(|(_, ms)| *ms)
            .collect();
        let refused = aborts.len() - abort_ms.len();
        println!(
            "{n:>3} {readings:>9} {:>10} ms {:>10} ms {:>9} ms {:>14} {:>14}{}",
            percentile(&all_gaps, 50.0),
            percentile(&all_gaps, 99.0),
            all_gaps.iter().max().copied().unwrap_or(0),
            percentile(&abort_ms, 50.0),
            percentile(&abort_ms, 99.0),
            if refused > 0 {
                format!("  ({refused} aborts refused: the migration had ended)")
            } else {
                String::new()
            }
        );
        for id in &ids {
            wait_until(&operator, id, Duration::from_secs(120), "ended", |d| {
                !matches!(state(d), "starting" | "running")
            })
            .await;
        }
        drop(recorder);
        server.stop().await;
        lab.remove_all_vms().await;
    }
}
