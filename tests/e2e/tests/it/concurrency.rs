//! Many migrations at once, in every direction, on the real three-host lab: crossing
//! migrations keep being sampled and answer their aborts, a ring and a fan in and out of
//! one host finish with every sample on its own migration, a frozen destination leaves
//! its source sampled and is shown degraded, and starts whose client hangs up run to
//! their end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::fleet::{start_with, state, vm_uuid, wait_connected, wait_sampled, wait_until};
use converge_e2e::samples::{Recorder, Seen, gaps, now_ms, percentile};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The sampling interval of these tests, ms.
const INTERVAL_MS: i64 = 500;

async fn lab_server() -> TestServer {
    let config = HOSTS_CONFIG.replace("interval_ms = 250", &format!("interval_ms = {INTERVAL_MS}"));
    TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config).await
}

/// Host `name` as `GET /api/hosts` shows it.
async fn host(client: &Client, name: &str) -> Value {
    let hosts = client.get("/api/hosts").await;
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no host {name}: {hosts}"))
}

/// Aborts migration `id`; returns how long the request took.
async fn abort(client: &Client, id: &str) -> Duration {
    let t0 = Instant::now();
    let (status, body) = client
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    let took = t0.elapsed();
    assert_eq!(status, 202, "abort {id}: {body}");
    took
}

/// A guest rewriting 64 MiB at 20 MiB/s over a 4 MiB/s link: its migration never
/// converges, and costs little CPU.
const BUSY: (&str, u32, u32) = ("loop", 64, 20);
const SLOW_LINK: u64 = 4;

#[tokio::test(flavor = "multi_thread")]
async fn crossing_migrations_are_both_sampled_throughout_and_both_aborts_answer() {
    let lab = Lab::acquire().await;
    let (mode, mb, rate) = BUSY;
    lab.start_vm_on("x-ab", mode, mb, rate, "a").await;
    lab.start_vm_on("x-ba", mode, mb, rate, "b").await;
    let server = lab_server().await;
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let recorder = Recorder::open(&server.url, &operator.cookie).await;
    let ab_vm = vm_uuid(&operator, "x-ab", "a").await;
    let ba_vm = vm_uuid(&operator, "x-ba", "b").await;
    let settings = json!({ "bandwidth_mib_s": SLOW_LINK });
    let (ab, ba) = tokio::join!(
        start_with(&operator, &ab_vm, "b", settings.clone()),
        start_with(&operator, &ba_vm, "a", settings.clone()),
    );
    wait_sampled(&operator, &ab).await;
    wait_sampled(&operator, &ba).await;
    let from = now_ms();
    // Each host is the destination of a migration that cannot converge while it sends
    // its own.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let to = now_ms();
    for id in [&ab, &ba] {
        let detail = operator.get(&format!("/api/migrations/{id}")).await;
        assert_eq!(state(&detail), "running", "{}", detail["migration"]);
    }
    let (took_ab, took_ba) = tokio::join!(abort(&operator, &ab), abort(&operator, &ba));
    for id in [&ab, &ba] {
        wait_until(&operator, id, Duration::from_secs(60), "aborted", |d| {
            state(d) == "aborted"
        })
        .await;
    }
    assert_eq!(lab.state_on("a", "x-ab").await.as_deref(), Some("running"));
    assert_eq!(lab.state_on("b", "x-ba").await.as_deref(), Some("running"));

    let seen = recorder.samples();
    for (name, id, took) in [("a→b", &ab, took_ab), ("b→a", &ba, took_ba)] {
        let g = gaps(&seen, id, from, to);
        let max = g.iter().copied().max().unwrap_or(i64::MAX);
        println!(
            "crossing {name}: {} readings in {} s, gap p50 {} ms, p99 {} ms, max {max} ms; abort answered in {} ms",
            g.len() + 1,
            (to - from) / 1000,
            percentile(&g, 50.0),
            percentile(&g, 99.0),
            took.as_millis()
        );
        assert!(
            g.len() as i64 >= (to - from) / INTERVAL_MS / 2,
            "{name}: only {} readings",
            g.len()
        );
        assert!(
            max <= 2 * INTERVAL_MS,
            "{name}: a gap of {max} ms between readings (interval {INTERVAL_MS} ms)"
        );
        assert!(took < Duration::from_secs(2), "{name}: abort took {took:?}");
    }
    drop(recorder);
    server.stop().await;
    lab.remove_all_vms().await;
}

/// Starts every `(vm name, source, destination)` at once; returns the ids by vm name.
async fn start_all(
    client: &Client,
    moves: &[(&str, &str, &str)],
    settings: &Value,
) -> BTreeMap<String, (String, String)> {
    let mut uuids = Vec::new();
    for (name, source, destination) in moves {
        wait_connected(client, destination).await;
        uuids.push((*name, vm_uuid(client, name, source).await, *destination));
    }
    let started = futures_util::future::join_all(
        uuids
            .iter()
            .map(|(_, uuid, destination)| start_with(client, uuid, destination, settings.clone())),
    )
    .await;
    uuids
        .into_iter()
        .zip(started)
        .map(|((name, uuid, _), id)| (name.to_owned(), (id, uuid)))
        .collect()
}

/// No sample reached a migration of another VM, and no migration appeared that was not
/// started here.
fn assert_samples_on_their_own(seen: &[Seen], started: &BTreeMap<String, (String, String)>) {
    let by_id: HashMap<&str, &str> = started
        .values()
        .map(|(id, uuid)| (id.as_str(), uuid.as_str()))
        .collect();
    for s in seen {
        let Some(uuid) = by_id.get(s.id.as_str()) else {
            panic!(
                "a sample of migration {} (vm {}), which was not started here",
                s.id, s.vm_uuid
            );
        };
        assert_eq!(
            *uuid, s.vm_uuid,
            "a sample of {} on migration {}",
            s.vm_uuid, s.id
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ring_and_a_fan_in_and_out_of_one_host_all_finish_each_with_its_own_samples() {
    let lab = Lab::acquire().await;
    for (name, host) in [("r-a", "a"), ("r-b", "b"), ("r-c", "c")] {
        lab.start_vm_on(name, "idle", 0, 0, host).await;
    }
    let server = lab_server().await;
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let recorder = Recorder::open(&server.url, &operator.cookie).await;
    let fast = json!({ "bandwidth_mib_s": 64 });

    // The ring: a → b, b → c, c → a, at once.
    let ring = [("r-a", "a", "b"), ("r-b", "b", "c"), ("r-c", "c", "a")];
    let ring_ids = start_all(&operator, &ring, &fast).await;
    for (name, (id, _)) in &ring_ids {
        let done = wait_until(&operator, id, Duration::from_secs(180), "completed", |d| {
            !matches!(state(d), "starting" | "running")
        })
        .await;
        assert_eq!(state(&done), "completed", "{name}: {}", done["migration"]);
    }
    for (name, _, destination) in ring {
        assert_eq!(
            lab.state_on(destination, name).await.as_deref(),
            Some("running"),
            "{name} runs on {destination}"
        );
    }
    for (name, ..) in ring {
        lab.remove_vm(name).await;
    }

    // The fan: three out of a, two into a, at once; one of them aborted as asked.
    let fan = [
        ("f-1", "a", "b"),
        ("f-2", "a", "c"),
        ("f-3", "a", "b"),
        ("g-1", "b", "a"),
        ("g-2", "c", "a"),
    ];
    for (name, source, _) in fan {
        lab.start_vm_on(name, "idle", 0, 0, source).await;
    }
    // f-3 runs slow enough to be aborted while it runs.
    let mut fan_ids = start_all(&operator, &fan[..2], &fast).await;
    let slow = json!({ "bandwidth_mib_s": 1 });
    let (rest, f3) = tokio::join!(
        start_all(&operator, &fan[3..], &fast),
        start_all(&operator, &fan[2..3], &slow),
    );
    fan_ids.extend(rest);
    fan_ids.extend(f3);
    let f3_id = fan_ids["f-3"].0.clone();
    wait_sampled(&operator, &f3_id).await;
    abort(&operator, &f3_id).await;
    for (name, _, destination) in fan {
        let id = &fan_ids[name].0;
        let done = wait_until(&operator, id, Duration::from_secs(180), "ended", |d| {
            !matches!(state(d), "starting" | "running")
        })
        .await;
        let (expected, lands) = if name == "f-3" {
            ("aborted", "a")
        } else {
            ("completed", destination)
        };
        assert_eq!(state(&done), expected, "{name}: {}", done["migration"]);
        assert_eq!(
            lab.state_on(lands, name).await.as_deref(),
            Some("running"),
            "{name} runs on {lands}"
        );
    }

    let mut started = ring_ids;
    started.extend(fan_ids);
    let seen = recorder.samples();
    assert!(
        seen.len() >= started.len(),
        "every migration was sampled: {seen:?}"
    );
    assert_samples_on_their_own(&seen, &started);
    let in_memory = operator.get("/api/migrations").await;
    assert_eq!(
        in_memory.as_array().map(Vec::len),
        Some(started.len()),
        "only the migrations started here: {in_memory}"
    );
    drop(recorder);
    server.stop().await;
    lab.remove_all_vms().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_destination_is_shown_degraded_and_its_source_keeps_sampling() {
    let lab = Lab::acquire().await;
    let (mode, mb, rate) = BUSY;
    lab.start_vm_on("fz", mode, mb, rate, "a").await;
    let server = lab_server().await;
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let recorder = Recorder::open(&server.url, &operator.cookie).await;
    let uuid = vm_uuid(&operator, "fz", "a").await;
    let id = start_with(
        &operator,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": SLOW_LINK }),
    )
    .await;
    wait_sampled(&operator, &id).await;

    lab.freeze_host("b").await;
    let frozen_at = Instant::now();
    let from = now_ms();
    // Shown degraded (or, once the connection's keepalive gives up, disconnected).
    let shown_after = loop {
        let b = host(&operator, "b").await;
        if !b["degraded"].is_null() || b["state"] == "disconnected" {
            break frozen_at.elapsed();
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(15),
            "host b still looks fine 15 s after its libvirtd froze: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let degraded_text = recorder
        .hosts
        .lock()
        .unwrap()
        .iter()
        .find_map(|h| h["degraded"].as_str().map(str::to_owned));
    println!(
        "frozen destination: shown degraded after {} ms: {degraded_text:?}",
        shown_after.as_millis()
    );
    assert!(
        degraded_text.is_some_and(|t| t.starts_with("degraded: libvirt has not answered")),
        "the host event says which call hangs"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to = now_ms();
    let took = abort(&operator, &id).await;
    let g = gaps(&recorder.samples(), &id, from, to);
    let max = g.iter().copied().max().unwrap_or(i64::MAX);
    println!(
        "frozen destination: source readings gap p50 {} ms, max {max} ms; abort answered in {} ms",
        percentile(&g, 50.0),
        took.as_millis()
    );
    assert!(
        max <= 2 * INTERVAL_MS,
        "the source's readings stalled: a {max} ms gap"
    );
    assert!(took < Duration::from_secs(2), "abort took {took:?}");

    lab.thaw_host("b").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = host(&operator, "b").await;
        if b["degraded"].is_null() && b["state"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "host b did not recover: {b}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_until(&operator, &id, Duration::from_secs(90), "aborted", |d| {
        state(d) == "aborted"
    })
    .await;
    assert_eq!(lab.state_on("a", "fz").await.as_deref(), Some("running"));
    drop(recorder);
    server.stop().await;
    lab.remove_all_vms().await;
}

/// Sends a start request over a socket of its own and hangs up `after` it, before any
/// answer.
async fn start_and_hang_up(
    base: &str,
    cookie: &str,
    vm_uuid: &str,
    destination: &str,
    after: Duration,
) {
    let addr = base.trim_start_matches("http://");
    let body = json!({ "vm_uuid": vm_uuid, "destination": destination, "preset": "converge-safe" })
        .to_string();
    let request = format!(
        "POST /api/migrations HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(after).await;
    drop(socket);
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_whose_client_hangs_up_run_to_their_end() {
    let lab = Lab::acquire().await;
    let vms = [("hu-1", "b"), ("hu-2", "c"), ("hu-3", "b")];
    for (name, _) in vms {
        lab.start_vm_on(name, "idle", 0, 0, "a").await;
    }
    let server = lab_server().await;
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    for host in ["b", "c"] {
        wait_connected(&operator, host).await;
    }
    let mut targets = Vec::new();
    for (name, destination) in vms {
        targets.push((vm_uuid(&operator, name, "a").await, destination));
    }
    // 51 requests, 17 per VM, all at once; each client hangs up before the answer, at
    // a different moment (0 to 150 ms after sending): some before the server has done
    // anything (then nothing happens), some in the middle of the start's writes and calls.
    let requests = targets
        .iter()
        .cycle()
        .take(51)
        .enumerate()
        .map(|(i, (uuid, destination))| {
            let after = Duration::from_millis(3 * i as u64);
            start_and_hang_up(&server.url, &operator.cookie, uuid, destination, after)
        });
    futures_util::future::join_all(requests).await;

    // Whatever began ran to its end: no migration is left starting, every one that began
    // completed, and each VM runs where its migration (if any) put it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let migrations = loop {
        let migrations = operator.get("/api/migrations").await;
        let list = migrations.as_array().unwrap().clone();
        let settled = list
            .iter()
            .all(|m| !matches!(m["state"].as_str(), Some("starting" | "running")));
        if settled {
            break list;
        }
        assert!(Instant::now() < deadline, "not settled: {migrations}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !migrations.is_empty(),
        "no start got as far as its first write: the test proved nothing"
    );
    println!(
        "hung-up starts: {} of {} VMs' migrations began and ran to their end",
        migrations.len(),
        vms.len()
    );
    for ((name, destination), (uuid, _)) in vms.iter().zip(&targets) {
        match migrations.iter().find(|m| m["vm_uuid"] == uuid.as_str()) {
            Some(m) => {
                assert_eq!(m["state"], "completed", "{m}");
                assert_eq!(
                    lab.state_on(destination, name).await.as_deref(),
                    Some("running")
                );
            }
            None => assert_eq!(lab.state_on("a", name).await.as_deref(), Some("running")),
        }
    }
    // No VM is left marked as migrating, and no audit row is left pending.
    let listed = operator.get("/api/vms").await;
    for vm in listed.as_array().unwrap() {
        assert!(vm["migration_id"].is_null(), "{vm}");
    }
    let audit = admin.get("/api/audit?limit=500").await;
    let starts: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "start")
        .collect();
    assert!(starts.len() >= vms.len(), "{audit}");
    for entry in &starts {
        assert_ne!(entry["result"], "pending", "{entry}");
    }
    server.stop().await;
    lab.remove_all_vms().await;
}
