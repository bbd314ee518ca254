//! Real migrations between the lab's two libvirt hosts, watched through the API and the
//! event stream.

use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{start, state, vm_uuid, wait_sampled, wait_until};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::SseReader;
use converge_testkit::lab::Lab;
use serde_json::{Value, json};

/// The Prometheus token of [`lab_server_with_metrics`].
const METRICS_TOKEN: &str = "e2e scrape token";

/// A lab server with its metrics listener; the metrics' URL.
async fn lab_server_with_metrics() -> (TestServer, String) {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(METRICS_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let server = TestServer::lab(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:9184\"\ntoken_sha256 = \"{hash}\"\n"
    ))
    .await;
    // The config's address is for the `converge` binary; a test binds a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(converge_server::metrics::serve(
        listener,
        server.state.clone(),
    ));
    (server, url)
}

/// One scrape: each series (name and labels as written) with its value.
async fn scrape(url: &str) -> Vec<(String, f64)> {
    let text = reqwest::Client::new()
        .get(url)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The value of the series that starts with `prefix`, if one does.
fn metric(scraped: &[(String, f64)], prefix: &str) -> Option<f64> {
    scraped
        .iter()
        .find(|(series, _)| series.starts_with(prefix))
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_vm_migrates_with_samples_then_final_stats() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-idle", "idle", 0, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-idle", "a").await;
    let mut stream = SseReader::open(&server.url, &admin.cookie, None)
        .await
        .reader;
    stream.patience = Duration::from_secs(60);

    let id = start(&admin, &uuid, "b", 32).await;
    let (mut samples, mut completed) = (0, None::<Value>);
    while let Some(event) = stream.next().await {
        if event.event != "migration" {
            continue;
        }
        let update: Value = serde_json::from_str(&event.data).unwrap();
        if update["migration"]["id"] != id.as_str() {
            continue;
        }
        if !update["sample"].is_null() {
            samples += 1;
        }
        let m = &update["migration"];
        if m["state"] == "completed" && !m["final_stats"].is_null() {
            completed = Some(m.clone());
            break;
        }
        assert!(
            ["starting", "running", "completed"].contains(&m["state"].as_str().unwrap()),
            "unexpected state: {m}"
        );
    }
    let m = completed.expect("a completed update with final stats");
    assert!(samples >= 2, "the stream carried {samples} samples");
    let f = &m["final_stats"];
    assert!(f["total_time_ms"].as_u64().unwrap() > 0, "{f}");
    assert!(f["data_sent_bytes"].as_u64().unwrap() > 1 << 20, "{f}");
    assert!(f["downtime_ms"].as_u64().is_some(), "{f}");
    assert_eq!(m["progress_pct"], 100.0);

    // The VM now runs on B, and keeps running.
    assert_eq!(
        lab.state_on("b", "t-idle").await.as_deref(),
        Some("running")
    );
    assert_eq!(
        lab.state_on("a", "t-idle").await,
        None,
        "undefined on the source"
    );
    let beat = lab.heartbeat("t-idle").await;
    lab.wait_heartbeat_after("t-idle", beat).await;

    let detail = admin.get(&format!("/api/migrations/{id}")).await;
    assert!(detail["samples"].as_array().unwrap().len() >= 2);
    assert!(!detail["raw_job_stats"].as_array().unwrap().is_empty());

    lab.remove_vm("t-idle").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_vm_does_not_converge_and_abort_keeps_it_on_a() {
    let lab = Lab::acquire().await;
    // Dirties 128 MiB at 100 MiB/s over a 32 MiB/s link: pre-copy cannot catch up.
    lab.start_vm("t-loop", "loop", 128, 100).await;
    let (server, metrics) = lab_server_with_metrics().await;
    let otto = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&otto, "t-loop", "a").await;
    let id = start(&otto, &uuid, "b", 32).await;

    // Bad input while it runs: a second start, a destination equal to the source.
    let (status, body) = otto
        .post(
            "/api/migrations",
            json!({ "vm_uuid": uuid, "destination": "b" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already being migrated")
    );

    let detail = wait_until(&otto, &id, Duration::from_secs(30), "reached pass 3", |d| {
        d["migration"]["last_sample"]["iteration"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    })
    .await;
    // Keep watching: within the bound it never completes, and memory is re-sent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let detail_later = otto.get(&format!("/api/migrations/{id}")).await;
    assert_eq!(
        state(&detail_later),
        "running",
        "{}",
        detail_later["migration"]
    );
    let sample = &detail_later["migration"]["last_sample"];
    assert!(
        sample["data_processed_bytes"].as_u64().unwrap()
            > sample["mem_total_bytes"].as_u64().unwrap(),
        "pages are being re-sent: {sample}"
    );
    assert!(
        sample["iteration"].as_u64() > detail["migration"]["last_sample"]["iteration"].as_u64(),
        "passes keep coming"
    );
    assert!(
        !detail_later["iterations"].as_array().unwrap().is_empty(),
        "pass boundaries recorded"
    );

    // What Prometheus sees of it: the route, the pass, the wire, a verdict.
    let scraped = scrape(&metrics).await;
    let route = r#"{vm="t-loop",source="a",destination="b""#;
    assert_eq!(metric(&scraped, "converge_migrations_running"), Some(1.0));
    assert_eq!(metric(&scraped, r#"converge_host_up{host="b"}"#), Some(1.0));
    assert!(
        metric(&scraped, &format!("converge_migration_iteration{route}")) >= Some(3.0),
        "{scraped:?}"
    );
    let wire = metric(
        &scraped,
        &format!("converge_migration_transfer_bytes_per_second{route}"),
    );
    assert!(wire.is_some_and(|w| w > 1e6), "{scraped:?}");
    assert_eq!(
        metric(
            &scraped,
            &format!("converge_migration_verdict{route},verdict=")
        ),
        Some(1.0),
        "{scraped:?}"
    );

    let (status, body) = otto
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let ended = wait_until(&otto, &id, Duration::from_secs(20), "ended", |d| {
        state(d) != "running"
    })
    .await;
    assert_eq!(state(&ended), "aborted", "{}", ended["migration"]);
    let (status, _) = otto
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 409, "aborting twice is a conflict");
    // Counted, and its live series gone.
    let scraped = scrape(&metrics).await;
    assert_eq!(
        metric(
            &scraped,
            r#"converge_migrations_finished_total{outcome="aborted"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&scraped, "converge_migrations_running"), Some(0.0));
    assert!(
        !scraped.iter().any(|(series, _)| series.contains("t-loop")),
        "{scraped:?}"
    );

    assert_eq!(
        lab.state_on("a", "t-loop").await.as_deref(),
        Some("running")
    );
    let beat = lab.heartbeat("t-loop").await;
    lab.wait_heartbeat_after("t-loop", beat).await;

    lab.remove_vm("t-loop").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_equal_to_the_source_starts_nothing() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-same", "idle", 0, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-same", "a").await;
    let (status, body) = admin
        .post(
            "/api/migrations",
            json!({ "vm_uuid": uuid, "destination": "a" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already runs on a"),
        "{body}"
    );
    let (status, body) = admin
        .post(
            "/api/migrations",
            json!({ "vm_uuid": uuid, "destination": "z" }),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(admin.get("/api/migrations").await, json!([]));
    assert_eq!(
        lab.state_on("a", "t-same").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-same").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_libvirtd_restart_is_survived_and_reported() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-restart", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-restart", "a").await;
    let mut stream = SseReader::open(&server.url, &admin.cookie, None)
        .await
        .reader;
    stream.patience = Duration::from_secs(60);
    let id = start(&admin, &uuid, "b", 32).await;
    wait_sampled(&admin, &id).await;

    lab.restart_host("a").await;

    // The stream shows host a going away and coming back.
    let (mut saw_down, mut saw_up) = (false, false);
    while let Some(event) = stream.next().await {
        if event.event != "host" {
            continue;
        }
        let host: Value = serde_json::from_str(&event.data).unwrap();
        if host["host"]["name"] == "a" {
            match host["host"]["state"].as_str() {
                Some("disconnected") => saw_down = true,
                Some("connected") if saw_down => saw_up = true,
                _ => {}
            }
        }
        if saw_up {
            break;
        }
    }
    assert!(saw_down && saw_up, "host a went down and came back");
    let hosts = admin.get("/api/hosts").await;
    assert_eq!(hosts[0]["state"], "connected", "{hosts}");

    // Whatever libvirt did with the migration, Converge reports where it stands, and
    // the guest still runs somewhere.
    let detail = wait_until(&admin, &id, Duration::from_secs(60), "settled", |d| {
        state(d) != "starting"
    })
    .await;
    if state(&detail) == "running" {
        // libvirt may have cancelled the job itself when its daemon came back (its
        // recovery of an interrupted outgoing migration), just before this abort: then
        // the abort finds no job, and either way the record must end.
        let (status, body) = admin
            .post(&format!("/api/migrations/{id}/abort"), json!({}))
            .await;
        println!("abort after the restart: {status} {body}");
        wait_until(&admin, &id, Duration::from_secs(30), "ended", |d| {
            state(d) != "running"
        })
        .await;
    }
    // The guest runs on a or b (libvirt may take a moment to resume one it paused).
    let mut places = (None, None);
    for _ in 0..60 {
        places = (
            lab.state_on("a", "t-restart").await,
            lab.state_on("b", "t-restart").await,
        );
        if places.0.as_deref() == Some("running") || places.1.as_deref() == Some("running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (on_a, on_b) = places;
    assert!(
        on_a.as_deref() == Some("running") || on_b.as_deref() == Some("running"),
        "the guest runs on a ({on_a:?}) or b ({on_b:?}); the record: {}",
        admin.get(&format!("/api/migrations/{id}")).await["migration"]
    );
    let health = admin.get("/api/health").await;
    assert_eq!(health["status"], "ok");

    lab.remove_vm("t-restart").await;
    server.stop().await;
}
