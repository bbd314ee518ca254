//! Lab benchmark (prints a table, asserts nothing): the same mixed host drained three ways,
//! through the real server and the real three-host lab.
//!
//! The host: two idle guests, `loop` (rewrites 128 MiB at 100 MiB/s: only xbzrle finishes
//! it over the link) and `fresh` (new random data as fast as it can: only post-copy, or a
//! throttle, finishes it). Every migration is limited to 32 MiB/s, the lab's emulated link.
//!
//! 1. **one at a time, `nova` preset** — what `nova host-evacuate-live` does by default:
//!    one migration after another in the host's listing order, Nova's downtime steps and
//!    completion timeout, no advice, no post-copy, one try;
//! 2. **all at once, no features** — every VM started together with nothing but pre-copy;
//! 3. **Converge's plan** — the `converge` preset and the drain's defaults: heavy moves
//!    first, two at a time out of the host, advice applied, post-copy allowed, retries.
//!
//! Each gets the same window; a baseline that cannot finish a VM runs to the window's end,
//! as an operator's script would wait. For each: total time, VMs moved, VMs left behind
//! with the reason, the largest guest pause (and whether one exceeded its downtime limit),
//! the largest throttle, and the data sent.
//!
//! Usage: `drain-bench [window_minutes]` (default 6), with the lab up (`tests/lab`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::fleet::{vm_uuid, wait_dirty_rate};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use serde_json::json;

const LINK_MIB_S: u64 = 32;
/// Name, dirtier mode, MiB, MiB/s.
const GUESTS: [(&str, &str, u32, u32); 4] = [
    ("b-fresh", "fresh", 128, 0),
    ("b-idle1", "idle", 0, 0),
    ("b-idle2", "idle", 0, 0),
    ("b-loop", "loop", 128, 100),
];
const EXTRA: &str = r#"
[dirty_rate]
every_s = 10
gap_s = 0

[[presets]]
name = "plain"
description = "Pre-copy and nothing else, no deadline (the benchmark's all-at-once baseline)."
[presets.settings.deadline]
action = "abort"
"#;

#[tokio::main]
async fn main() {
    let window: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    let lab = Lab::acquire().await;
    let config = format!("{HOSTS_CONFIG}{EXTRA}");
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let by_name: Vec<String> = GUESTS.iter().map(|g| g.0.to_owned()).collect();
    println!(
        "drain-bench: {} guests on a → b, c; {LINK_MIB_S} MiB/s per migration; window {window} min",
        GUESTS.len()
    );
    let window_d = Duration::from_secs(window * 60);
    let mut rows = Vec::new();
    // 1. What `nova host-evacuate-live` does by default: each instance's live migration,
    //    one at a time (`max_concurrent_live_migrations = 1`), in the host's listing
    //    order, with Nova's settings, each waited for until it ends (Nova's completion
    //    timeout, 800 s/GiB) — here at most until the window ends.
    let uuids = reset(&lab, &admin).await;
    let order: Vec<(String, String)> = by_name
        .iter()
        .map(|n| (n.clone(), uuids[n].clone()))
        .collect();
    rows.push(
        baseline(
            &admin,
            "one at a time, nova",
            &order,
            "nova",
            false,
            window_d,
        )
        .await,
    );
    // 2. Everything at once, pre-copy and nothing else, waited for.
    let uuids = reset(&lab, &admin).await;
    let order: Vec<(String, String)> = by_name
        .iter()
        .map(|n| (n.clone(), uuids[n].clone()))
        .collect();
    rows.push(
        baseline(
            &admin,
            "all at once, no features",
            &order,
            "plain",
            true,
            window_d,
        )
        .await,
    );
    // 3. A drain with the defaults.
    reset(&lab, &admin).await;
    let request = json!({
        "hosts": ["a"], "destinations": ["b", "c"], "window_minutes": window,
        "limits": { "bandwidth_mib_s": LINK_MIB_S },
    });
    let (status, drain) = admin.post("/api/drains", request).await;
    assert_eq!(status, 201, "{drain}");
    let id = drain["id"].as_str().unwrap().to_owned();
    let done = loop {
        let d = admin.get(&format!("/api/drains/{id}")).await;
        if ["done", "cancelled"].contains(&d["state"].as_str().unwrap_or("")) {
            break d;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let total_s = (done["ended_at_ms"].as_i64().unwrap() - done["created_at_ms"].as_i64().unwrap())
        as f64
        / 1000.0;
    println!("Converge's plan: {total_s:.0} s");
    for item in done["items"].as_array().unwrap() {
        println!(
            "    {} {} → {} ({}, predicted {} s){}",
            item["vm_name"].as_str().unwrap_or(""),
            item["state"].as_str().unwrap_or(""),
            item["destination"].as_str().unwrap_or("-"),
            item["outlook"].as_str().unwrap_or(""),
            item["predicted_s"],
            item["reason"]
                .as_str()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }
    println!("    predicted total {} s", done["predicted_total_s"]);
    let items = done["items"].as_array().unwrap();
    let ids: Vec<String> = items
        .iter()
        .flat_map(|i| {
            i["migration_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
        })
        .collect();
    let left: Vec<String> = items
        .iter()
        .filter(|i| i["state"] != "moved")
        .map(|i| {
            format!(
                "{}: {}",
                i["vm_name"].as_str().unwrap_or(""),
                i["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    let moved = items.iter().filter(|i| i["state"] == "moved").count();
    rows.push(measure(&admin, "Converge's plan", &ids, moved, left, total_s).await);
    println!();
    println!(
        "| drain | total s | moved | left behind | largest pause ms | over its limit | largest throttle | data sent MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {}/{} | {} | {} | {} | {} % | {} |",
            r.name,
            r.total_s,
            r.moved,
            GUESTS.len(),
            if r.left.is_empty() {
                "none".to_owned()
            } else {
                r.left.join("; ")
            },
            r.max_pause_ms,
            if r.over_limit.is_empty() {
                "none".to_owned()
            } else {
                r.over_limit.join(", ")
            },
            r.max_throttle,
            r.sent >> 20
        );
    }
    let best_baseline = rows[..2]
        .iter()
        .map(|r| r.total_s)
        .fold(f64::INFINITY, f64::min);
    let ours = &rows[2];
    println!(
        "Converge / better baseline: {:.2} (target ≤ 0.70); VMs left without a reason: {}",
        ours.total_s / best_baseline,
        ours.left.iter().filter(|l| l.ends_with(": ")).count()
    );
    server.stop().await;
    for (name, ..) in GUESTS {
        lab.remove_vm(name).await;
    }
}

/// The figures of one drain.
struct Row {
    name: &'static str,
    total_s: f64,
    moved: usize,
    left: Vec<String>,
    max_pause_ms: u64,
    over_limit: Vec<String>,
    max_throttle: u64,
    sent: u64,
}

async fn measure(
    admin: &Client,
    name: &'static str,
    ids: &[String],
    moved: usize,
    left: Vec<String>,
    total_s: f64,
) -> Row {
    let mut row = Row {
        name,
        total_s,
        moved,
        left,
        max_pause_ms: 0,
        over_limit: Vec::new(),
        max_throttle: 0,
        sent: 0,
    };
    for id in ids {
        let m = &admin.get(&format!("/api/migrations/{id}")).await["migration"];
        let pause = m["final_stats"]["downtime_ms"].as_u64().unwrap_or(0);
        row.max_pause_ms = row.max_pause_ms.max(pause);
        let limit = m["levers"]["downtime_limit_ms"].as_u64().unwrap_or(300);
        if m["state"] == "completed" && m["final_stats"]["downtime_ms"].is_u64() && pause > limit {
            row.over_limit.push(format!(
                "{} {pause} ms > {limit} ms",
                m["vm_name"].as_str().unwrap_or("")
            ));
        }
        row.max_throttle = row
            .max_throttle
            .max(m["max_throttle_pct"].as_u64().unwrap_or(0));
        row.sent += m["final_stats"]["data_sent_bytes"]
            .as_u64()
            .or_else(|| m["last_sample"]["data_processed_bytes"].as_u64())
            .unwrap_or(0);
    }
    row
}

/// A baseline: each VM's migration started from `preset` (one after another, or all at
/// once), each waited for until it ends or the window does (then aborted).
async fn baseline(
    admin: &Client,
    name: &'static str,
    vms: &[(String, String)],
    preset: &str,
    all_at_once: bool,
    window: Duration,
) -> Row {
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut left = Vec::new();
    let mut moved = 0;
    let start = |n: usize, uuid: &str| {
        let dest = if n.is_multiple_of(2) { "b" } else { "c" };
        json!({ "vm_uuid": uuid, "destination": dest, "preset": preset,
                "settings": { "bandwidth_mib_s": LINK_MIB_S } })
    };
    let batches: Vec<Vec<usize>> = if all_at_once {
        vec![(0..vms.len()).collect()]
    } else {
        (0..vms.len()).map(|n| vec![n]).collect()
    };
    for batch in batches {
        let mut running = Vec::new();
        for n in batch {
            let (vm, uuid) = &vms[n];
            if started.elapsed() >= window {
                left.push(format!("{vm}: the window ended before its turn"));
                continue;
            }
            let (status, m) = admin.post("/api/migrations", start(n, uuid)).await;
            assert_eq!(status, 201, "{m}");
            let id = m["id"].as_str().unwrap().to_owned();
            ids.push(id.clone());
            running.push((vm.clone(), id));
        }
        for (vm, id) in running {
            let m = loop {
                let m = admin.get(&format!("/api/migrations/{id}")).await["migration"].clone();
                let active = ["starting", "running", "post_copy"]
                    .contains(&m["state"].as_str().unwrap_or(""));
                if !active {
                    break m;
                }
                if started.elapsed() >= window {
                    let _ = admin
                        .post(&format!("/api/migrations/{id}/abort"), json!({}))
                        .await;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    break admin.get(&format!("/api/migrations/{id}")).await["migration"].clone();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            if m["state"] == "completed" {
                moved += 1;
            } else if started.elapsed() >= window {
                left.push(format!(
                    "{vm}: not done when the window ended (aborted then)"
                ));
            } else {
                left.push(format!(
                    "{vm}: {} ({})",
                    m["state"].as_str().unwrap_or(""),
                    m["error"].as_str().unwrap_or("")
                ));
            }
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    println!("{name}: {total_s:.0} s, {moved} moved");
    for l in &left {
        println!("    left: {l}");
    }
    measure(admin, name, &ids, moved, left, total_s).await
}

/// Every guest freshly booted on a, measured at work; their UUIDs by name.
async fn reset(lab: &Lab, admin: &Client) -> std::collections::HashMap<String, String> {
    let mut uuids = std::collections::HashMap::new();
    for (name, mode, mb, rate) in GUESTS {
        lab.start_vm(name, mode, mb, rate).await;
    }
    let booted = converge_testkit::now_ms();
    for (name, ..) in GUESTS {
        let uuid = vm_uuid(admin, name, "a").await;
        wait_dirty_rate(admin, &uuid, booted).await;
        uuids.insert(name.to_owned(), uuid);
    }
    uuids
}
