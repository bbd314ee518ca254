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
use serde_json::{Value, json};

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
    let ways = [
        (
            "one at a time, nova",
            json!({
                "preset": "nova",
                "limits": { "per_source": 1, "per_destination": 1, "total": 1, "bandwidth_mib_s": LINK_MIB_S },
                "policy": { "apply_advice": false, "allow_post_copy": false, "max_tries": 1 },
            }),
            true,
        ),
        (
            "all at once, no features",
            json!({
                "preset": "plain",
                "limits": { "per_source": 4, "per_destination": 4, "total": 4, "bandwidth_mib_s": LINK_MIB_S },
                "policy": { "apply_advice": false, "allow_post_copy": false, "max_tries": 1 },
            }),
            false,
        ),
        (
            "Converge's plan",
            json!({ "limits": { "bandwidth_mib_s": LINK_MIB_S } }),
            false,
        ),
    ];
    println!(
        "drain-bench: {} guests on a → b, c; {LINK_MIB_S} MiB/s per migration; window {window} min",
        GUESTS.len()
    );
    let mut rows = Vec::new();
    for (name, mut request, listing_order) in ways {
        let uuids = reset(&lab, &admin).await;
        request["hosts"] = json!(["a"]);
        request["destinations"] = json!(["b", "c"]);
        request["window_minutes"] = json!(window);
        if listing_order {
            let ordered: Vec<&String> = by_name.iter().map(|n| &uuids[n]).collect();
            request["order"] = json!(ordered);
        }
        let started = Instant::now();
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
        let total_s = (done["ended_at_ms"].as_i64().unwrap()
            - done["created_at_ms"].as_i64().unwrap()) as f64
            / 1000.0;
        let row = measure(&admin, name, &done, total_s).await;
        println!(
            "{name}: {:.0} s (waited {:.0} s)",
            total_s,
            started.elapsed().as_secs_f64()
        );
        for item in done["items"].as_array().unwrap() {
            println!(
                "    {} {} → {}: {}{}",
                item["vm_name"].as_str().unwrap_or(""),
                item["state"].as_str().unwrap_or(""),
                item["destination"].as_str().unwrap_or("-"),
                item["outlook"].as_str().unwrap_or(""),
                item["reason"]
                    .as_str()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            );
        }
        rows.push(row);
    }
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

async fn measure(admin: &Client, name: &'static str, done: &Value, total_s: f64) -> Row {
    let items = done["items"].as_array().unwrap();
    let mut row = Row {
        name,
        total_s,
        moved: items.iter().filter(|i| i["state"] == "moved").count(),
        left: items
            .iter()
            .filter(|i| i["state"] != "moved")
            .map(|i| {
                format!(
                    "{}: {}",
                    i["vm_name"].as_str().unwrap_or(""),
                    i["reason"].as_str().unwrap_or("")
                )
            })
            .collect(),
        max_pause_ms: 0,
        over_limit: Vec::new(),
        max_throttle: 0,
        sent: 0,
    };
    for item in items {
        for id in item["migration_ids"].as_array().unwrap() {
            let m = &admin
                .get(&format!("/api/migrations/{}", id.as_str().unwrap()))
                .await["migration"];
            let pause = m["final_stats"]["downtime_ms"].as_u64().unwrap_or(0);
            row.max_pause_ms = row.max_pause_ms.max(pause);
            let limit = m["levers"]["downtime_limit_ms"].as_u64().unwrap_or(300);
            if m["state"] == "completed"
                && m["final_stats"]["downtime_ms"].is_u64()
                && pause > limit
            {
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
    }
    row
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
