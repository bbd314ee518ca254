//! Lab benchmark (prints a table, asserts nothing): each configuration on each workload,
//! through the real server and the real two-host lab.
//!
//! Workloads: `loop` (rewrites 128 MiB at 100 MiB/s) and `fresh` (new random data into a
//! 128 MiB ring, as fast as it can). The lab's link is emulated by a 32 MiB/s bandwidth
//! limit on every run (presets leave bandwidth unlimited, and loopback is far faster
//! than a real link). A run that has not ended within the bound is stopped and reported
//! as not completed. Usage: `preset-matrix [bound_s] [config…]`; configs are preset
//! names, or `nothing`, `xbzrle`, `auto-converge`, `both` (static capabilities).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::fleet::{start_with, state, vm_uuid};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use serde_json::{Value, json};

const LINK_MIB_S: u64 = 32;
const WORKLOADS: [(&str, &str, u32, u32); 2] =
    [("loop", "loop", 128, 100), ("fresh", "fresh", 128, 0)];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bound = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(150));
    let mut configs: Vec<String> = args.collect();
    if configs.is_empty() {
        configs = ["converge", "nova", "ovirt-minimal-downtime", "proxmox"]
            .map(String::from)
            .to_vec();
    }
    let mut results: Vec<Outcome> = Vec::new();
    let lab = Lab::acquire().await;
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), HOSTS_CONFIG).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let presets = admin.get("/api/presets").await;
    println!(
        "preset-matrix: link {LINK_MIB_S} MiB/s, bound {} s per run",
        bound.as_secs()
    );
    println!(
        "{:<7} {:<24} {:<22} {:>9} {:>10} {:>10} {:>11}",
        "load", "config", "outcome", "time s", "throttle", "pause ms", "sent MiB"
    );
    for (load, mode, mb, rate) in WORKLOADS {
        for config in &configs {
            let name = format!("bench-{load}");
            lab.start_vm(&name, mode, mb, rate).await;
            let uuid = vm_uuid(&admin, &name, "a").await;
            let settings = settings_for(config, &presets);
            let started = Instant::now();
            let requested_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let id = start_with(&admin, &uuid, "b", settings).await;
            let detail = follow(&admin, &id, bound).await;
            let elapsed = started.elapsed().as_secs_f64();
            let m = &detail["migration"];
            let samples = detail["samples"].as_array().cloned().unwrap_or_default();
            let throttle = samples
                .iter()
                .filter_map(|s| s["throttle_pct"].as_u64())
                .max()
                .unwrap_or(0);
            let outcome = match state(&detail) {
                "completed" => "completed".to_owned(),
                "running" => format!("not done in {} s", bound.as_secs()),
                other => format!("{other} by policy"),
            };
            let sent = m["final_stats"]["data_sent_bytes"]
                .as_u64()
                .or_else(|| m["last_sample"]["data_processed_bytes"].as_u64())
                .unwrap_or(0);
            println!(
                "{:<7} {:<24} {:<22} {:>9.1} {:>9}% {:>10} {:>11}",
                load,
                config,
                outcome,
                elapsed,
                throttle,
                m["final_stats"]["downtime_ms"]
                    .as_u64()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                sent >> 20
            );
            if let Some(at) = m["started_at_ms"].as_i64() {
                println!(
                    "        libvirt migration started {} ms after the request",
                    at - requested_ms
                );
            }
            // What the policy did and why, so a number in the table can be explained.
            for action in m["actions"].as_array().into_iter().flatten() {
                if action["actor"] == "policy" {
                    println!(
                        "        policy: {}: {}",
                        action["what"].as_str().unwrap_or_default(),
                        action["reason"].as_str().unwrap_or_default()
                    );
                }
            }
            results.push(Outcome {
                load,
                config: config.clone(),
                completed: state(&detail) == "completed",
                seconds: elapsed,
                throttle,
            });
            if state(&detail) == "running" {
                let _ = admin
                    .post(&format!("/api/migrations/{id}/abort"), json!({}))
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            lab.remove_vm(&name).await;
        }
    }
    server.stop().await;
    report_target(&results);
}

/// One run's result.
struct Outcome {
    load: &'static str,
    config: String,
    completed: bool,
    seconds: f64,
    throttle: u64,
}

/// The adaptive preset's target: complete every workload within 1.1× the best static
/// configuration's time, with no more throttle than that configuration.
fn report_target(results: &[Outcome]) {
    for (load, ..) in WORKLOADS {
        let best = results
            .iter()
            .filter(|r| {
                r.load == load
                    && r.completed
                    && ["nothing", "xbzrle", "auto-converge", "both"].contains(&r.config.as_str())
            })
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let adaptive = results
            .iter()
            .find(|r| r.load == load && r.config == "converge");
        match (adaptive, best) {
            (Some(a), Some(b)) => {
                let met = a.completed && a.seconds <= 1.1 * b.seconds && a.throttle <= b.throttle;
                println!(
                    "target {load}: adaptive {} in {:.1} s at {}% throttle; best static {} {:.1} s at {}% → {:.2}× the time: {}",
                    if a.completed {
                        "completed"
                    } else {
                        "did not complete"
                    },
                    a.seconds,
                    a.throttle,
                    b.config,
                    b.seconds,
                    b.throttle,
                    a.seconds / b.seconds,
                    if met { "MET" } else { "MISSED" }
                );
            }
            (Some(_), None) => {
                println!("target {load}: no static configuration in this run completed")
            }
            _ => {}
        }
    }
}

/// A preset's settings (or a static configuration) on the emulated link.
fn settings_for(config: &str, presets: &Value) -> Value {
    let xbzrle = json!({ "xbzrle_cache_bytes": 256u64 << 20 });
    let auto = json!({ "auto_converge": { "initial_pct": 20, "increment_pct": 10 } });
    let mut settings = match config {
        "nothing" => json!({}),
        "xbzrle" => json!({ "capabilities": xbzrle }),
        "auto-converge" => json!({ "capabilities": auto }),
        "both" => json!({ "capabilities": {
            "xbzrle_cache_bytes": 256u64 << 20,
            "auto_converge": { "initial_pct": 20, "increment_pct": 10 }
        } }),
        preset => presets
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == preset)
            .unwrap_or_else(|| panic!("no preset {preset}"))["settings"]
            .clone(),
    };
    settings["bandwidth_mib_s"] = json!(LINK_MIB_S);
    settings
}

/// Polls until the migration ends or the bound passes; returns its detail.
async fn follow(admin: &Client, id: &str, bound: Duration) -> Value {
    let until = Instant::now() + bound;
    loop {
        let detail = admin.get(&format!("/api/migrations/{id}")).await;
        let done = !["starting", "running", "post_copy"].contains(&state(&detail));
        // A completed migration is followed until its final statistics arrive too.
        if done && (state(&detail) != "completed" || !detail["migration"]["final_stats"].is_null())
        {
            return detail;
        }
        if Instant::now() >= until {
            return detail;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
