//! Migration control against the real lab: each capability's effect in the statistics,
//! levers read back from libvirt, the deadline policy acting, and the audit trail.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{link_outrun_by, start_with, state, vm_uuid, wait_sampled, wait_until};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use reqwest::Method;
use serde_json::{Value, json};

/// Every sample the server kept for the migration.
async fn samples(client: &Client, id: &str) -> Vec<Value> {
    client.get(&format!("/api/migrations/{id}")).await["samples"]
        .as_array()
        .unwrap()
        .clone()
}

/// The audit log's rows about one migration, oldest first, as (actor, action, result).
async fn audit_of(admin: &Client, id: &str) -> Vec<(String, String, String)> {
    let log = admin.get("/api/audit?limit=500").await;
    let mut rows: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["migration_id"] == id)
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("actor"), text("action"), text("result"))
        })
        .collect();
    rows.reverse();
    rows
}

fn virsh_a(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-q", "-c", "qemu+tcp://127.0.0.1:16601/system"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn patch(client: &Client, id: &str, body: Value) -> (reqwest::StatusCode, Value) {
    client
        .send(Method::PATCH, &format!("/api/migrations/{id}"), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn xbzrle_sends_deltas_and_the_loop_vm_completes() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-xbzrle", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-xbzrle", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": 32, "capabilities": { "xbzrle_cache_bytes": 256u64 << 20 } }),
    )
    .await;
    let done = wait_until(&admin, &id, Duration::from_secs(120), "ended", |d| {
        !d["migration"]["state"]
            .as_str()
            .is_some_and(|s| ["starting", "running"].contains(&s))
    })
    .await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let pages = samples(&admin, &id)
        .await
        .iter()
        .filter_map(|s| s["xbzrle"]["pages"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(pages > 0, "xbzrle sent pages as deltas");
    assert_eq!(
        done["migration"]["levers"]["xbzrle_cache_bytes"],
        256u64 << 20,
        "the cache size read back from libvirt"
    );
    assert_eq!(
        lab.state_on("b", "t-xbzrle").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-xbzrle").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_converge_throttles_the_fresh_vm_harder_and_harder() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-fresh", "fresh", 128, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-fresh", "a").await;
    let link = link_outrun_by(&admin, &uuid, 3).await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({
            "bandwidth_mib_s": link,
            "capabilities": { "auto_converge": { "initial_pct": 20, "increment_pct": 10 } }
        }),
    )
    .await;
    let detail = wait_until(
        &admin,
        &id,
        Duration::from_secs(120),
        "throttled past 40 %",
        |d| {
            d["migration"]["last_sample"]["throttle_pct"]
                .as_u64()
                .unwrap_or(0)
                >= 40
                || state(d) == "completed"
        },
    )
    .await;
    let throttles: Vec<u64> = samples(&admin, &id)
        .await
        .iter()
        .filter_map(|s| s["throttle_pct"].as_u64())
        .filter(|t| *t > 0)
        .collect();
    assert!(
        throttles.first() < throttles.last() && throttles.last() >= Some(&40),
        "the throttle rose: {throttles:?} ({})",
        detail["migration"]["state"]
    );
    if state(&detail) != "completed" {
        let (status, _) = admin
            .post(&format!("/api/migrations/{id}/abort"), json!({}))
            .await;
        assert_eq!(status, 202);
        wait_until(&admin, &id, Duration::from_secs(30), "ended", |d| {
            state(d) != "running"
        })
        .await;
    }
    lab.remove_vm("t-fresh").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_copy_switch_on_request_completes_with_page_requests() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-postcopy", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let otto = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&otto, "t-postcopy", "a").await;
    let id = start_with(
        &otto,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": 32, "capabilities": { "postcopy": true } }),
    )
    .await;
    wait_until(&otto, &id, Duration::from_secs(60), "reached pass 2", |d| {
        d["migration"]["last_sample"]["iteration"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    let (status, body) = patch(&otto, &id, json!({ "lever": "post_copy" })).await;
    assert_eq!(status, 200, "{body}");
    let done = wait_until(&otto, &id, Duration::from_secs(90), "completed", |d| {
        state(d) == "completed"
    })
    .await;
    // Post-copy can be over between two readings; the completed job's statistics
    // count every request.
    let requests = samples(&otto, &id)
        .await
        .iter()
        .filter_map(|s| s["postcopy_requests"].as_u64())
        .chain(done["migration"]["final_stats"]["postcopy_requests"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        requests > 0,
        "the destination requested pages after the switch"
    );
    assert_eq!(
        lab.state_on("b", "t-postcopy").await.as_deref(),
        Some("running")
    );
    let beat = lab.heartbeat("t-postcopy").await;
    lab.wait_heartbeat_after("t-postcopy", beat).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let rows = audit_of(&admin, &id).await;
    assert!(
        rows.contains(&("otto".into(), "post_copy".into(), "ok".into())),
        "{rows:?}"
    );
    assert!(
        done["migration"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["what"] == "switch to post-copy")
    );
    lab.remove_vm("t-postcopy").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_connections_reach_qemu() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-multifd", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-multifd", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": 32, "capabilities": { "parallel_connections": 4 } }),
    )
    .await;
    // libvirt's job (and so a first sample) exists before it has set QEMU's capabilities
    // and issued `migrate`; memory on the move means QEMU's migration is under way.
    wait_until(&admin, &id, Duration::from_secs(60), "sent memory", |d| {
        d["migration"]["last_sample"]["mem_processed_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    let caps = virsh_a(&[
        "qemu-monitor-command",
        "t-multifd",
        "--hmp",
        "info migrate_capabilities",
    ]);
    assert!(caps.contains("multifd: on"), "{caps}");
    let params = virsh_a(&[
        "qemu-monitor-command",
        "t-multifd",
        "--hmp",
        "info migrate_parameters",
    ]);
    assert!(params.contains("multifd-channels: 4"), "{params}");
    let (status, _) = admin
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202);
    wait_until(&admin, &id, Duration::from_secs(30), "ended", |d| {
        state(d) != "running"
    })
    .await;
    lab.remove_vm("t-multifd").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_completion_deadline_aborts_with_its_reason() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-deadline", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-deadline", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": 32, "deadline": { "completion_max_s": 15, "action": "abort" } }),
    )
    .await;
    let running = wait_until(
        &admin,
        &id,
        Duration::from_secs(30),
        "showed its deadline",
        |d| !d["migration"]["deadline"].is_null(),
    )
    .await;
    let deadline = &running["migration"]["deadline"];
    assert_eq!(deadline["kind"], "completion", "{deadline}");
    assert_eq!(deadline["action"], "abort");
    let done = wait_until(&admin, &id, Duration::from_secs(45), "aborted", |d| {
        state(d) != "running"
    })
    .await;
    assert_eq!(state(&done), "aborted", "{}", done["migration"]);
    let action = done["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "policy")
        .cloned()
        .expect("the policy acted");
    assert_eq!(action["what"], "abort the migration");
    assert!(
        action["reason"]
            .as_str()
            .unwrap()
            .contains("past the completion timeout of 15 s"),
        "{action}"
    );
    let rows = audit_of(&admin, &id).await;
    assert!(
        rows.contains(&("policy".into(), "abort".into(), "ok".into())),
        "{rows:?}"
    );
    assert_eq!(
        lab.state_on("a", "t-deadline").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-deadline").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_switches_to_post_copy_and_the_migration_completes() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-stall", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-stall", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({
            "bandwidth_mib_s": 32,
            "capabilities": { "postcopy": true },
            "deadline": { "stall_s": 12, "action": "post_copy" }
        }),
    )
    .await;
    let done = wait_until(&admin, &id, Duration::from_secs(150), "completed", |d| {
        state(d) == "completed" || state(d) == "failed"
    })
    .await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let policy: Vec<&Value> = done["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["actor"] == "policy")
        .collect();
    assert_eq!(policy.len(), 1, "{policy:?}");
    assert_eq!(policy[0]["what"], "switch to post-copy");
    assert!(
        policy[0]["reason"]
            .as_str()
            .unwrap()
            .contains("has not shrunk for"),
        "{}",
        policy[0]
    );
    assert_eq!(
        lab.state_on("b", "t-stall").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-stall").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn downtime_steps_are_applied_and_read_back_from_libvirt() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-steps", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-steps", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({
            "bandwidth_mib_s": 32,
            "downtime_steps": { "start_ms": 100, "max_ms": 400, "growth": "linear", "steps": 3, "every_s": 4 }
        }),
    )
    .await;
    let first = wait_sampled(&admin, &id).await;
    assert_eq!(
        first["migration"]["levers"]["downtime_limit_ms"], 100,
        "the start value, set before the job"
    );
    let stepped = wait_until(
        &admin,
        &id,
        Duration::from_secs(40),
        "stepped to 400 ms",
        |d| d["migration"]["levers"]["downtime_limit_ms"] == 400,
    )
    .await;
    let steps: Vec<&str> = stepped["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        vec![
            "set the downtime limit to 200 ms",
            "set the downtime limit to 300 ms",
            "set the downtime limit to 400 ms"
        ]
    );
    let libvirt = virsh_a(&["migrate-getmaxdowntime", "t-steps"]);
    assert_eq!(libvirt.trim(), "400", "virsh agrees");
    let (status, _) = admin
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202);
    wait_until(&admin, &id, Duration::from_secs(30), "ended", |d| {
        state(d) != "running"
    })
    .await;
    lab.remove_vm("t-steps").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lever_call_is_audited_and_refusals_change_nothing() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-levers", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let otto = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&otto, "t-levers", "a").await;

    // Refused before start: xbzrle with parallel connections; a cache larger than the guest.
    for (settings, why) in [
        (
            json!({ "capabilities": { "xbzrle_cache_bytes": 67108864, "parallel_connections": 2 } }),
            "QEMU refuses xbzrle together with parallel connections",
        ),
        (
            json!({ "capabilities": { "xbzrle_cache_bytes": 1u64 << 30 } }),
            "larger than the guest's 512 MiB",
        ),
    ] {
        let (status, body) = otto
            .post(
                "/api/migrations",
                json!({ "vm_uuid": uuid, "destination": "b", "settings": settings }),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }
    assert_eq!(
        otto.get("/api/migrations").await,
        json!([]),
        "nothing started"
    );

    let id = start_with(&otto, &uuid, "b", json!({ "bandwidth_mib_s": 32 })).await;
    wait_sampled(&otto, &id).await;
    let (status, body) = patch(&otto, &id, json!({ "lever": "downtime_limit", "ms": 800 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_back"], 800);
    let (status, body) = patch(&otto, &id, json!({ "lever": "bandwidth", "mib_s": 48 })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["read_back"], 48);
    let (status, body) = patch(&otto, &id, json!({ "lever": "post_copy" })).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("post-copy was not allowed"),
        "{body}"
    );
    let (status, body) = patch(
        &otto,
        &id,
        json!({ "lever": "xbzrle_cache", "bytes": 67108864 }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = patch(&otto, &id, json!({ "lever": "downtime_limit", "ms": 0 })).await;
    assert_eq!(status, 422);
    assert_eq!(
        virsh_a(&["migrate-getmaxdowntime", "t-levers"]).trim(),
        "800",
        "refusals changed nothing"
    );

    let (status, _) = otto
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202);
    wait_until(&otto, &id, Duration::from_secs(30), "ended", |d| {
        state(d) != "running"
    })
    .await;
    let (status, _) = patch(&otto, &id, json!({ "lever": "downtime_limit", "ms": 500 })).await;
    assert_eq!(status, 409, "no levers on a finished migration");

    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let rows = audit_of(&admin, &id).await;
    let row = |actor: &str, action: &str, result: &str| {
        (actor.to_owned(), action.to_owned(), result.to_owned())
    };
    assert_eq!(
        rows,
        vec![
            row("otto", "start", "ok"),
            row("otto", "downtime_limit", "ok (libvirt now reports 800)"),
            row("otto", "bandwidth", "ok (libvirt now reports 48)"),
            row("otto", "post_copy", &rows[3].2),
            row("otto", "xbzrle_cache", &rows[4].2),
            row("otto", "downtime_limit", &rows[5].2),
            row("otto", "abort", "ok"),
            row("otto", "downtime_limit", &rows[7].2),
        ]
    );
    for refused in [3, 4, 5, 7] {
        assert!(
            rows[refused].2.starts_with("refused: "),
            "{:?}",
            rows[refused]
        );
    }
    lab.remove_vm("t-levers").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_survives_a_server_restart() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-history", "idle", 0, 0).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(dir.clone(), HOSTS_CONFIG).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-history", "a").await;
    let id = start_with(&admin, &uuid, "b", json!({ "bandwidth_mib_s": 16 })).await;
    wait_until(&admin, &id, Duration::from_secs(60), "completed", |d| {
        state(d) == "completed" && !d["migration"]["final_stats"].is_null()
    })
    .await;
    server.stop().await;

    let server = TestServer::start_with(dir, HOSTS_CONFIG).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    assert_eq!(
        admin.get("/api/migrations").await,
        json!([]),
        "not live any more"
    );
    let history = admin.get("/api/history").await;
    assert_eq!(history[0]["id"], id.as_str(), "{history}");
    assert_eq!(history[0]["state"], "completed");
    assert!(history[0]["final_stats"]["downtime_ms"].is_u64());
    let replay = admin.get(&format!("/api/migrations/{id}")).await;
    assert!(
        replay["samples"].as_array().unwrap().len() >= 2,
        "samples were kept"
    );
    lab.remove_vm("t-history").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_deadline_forces_switchover_and_the_guest_runs_on() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-pause", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-pause", "a").await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": 32, "deadline": { "completion_max_s": 15, "action": "pause" } }),
    )
    .await;
    let done = wait_until(&admin, &id, Duration::from_secs(90), "completed", |d| {
        state(d) == "completed" || state(d) == "failed" || state(d) == "aborted"
    })
    .await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    // The guest was paused on a to stop dirtying; it must run on b afterwards.
    let running = wait_until(
        &admin,
        &id,
        Duration::from_secs(20),
        "recorded the resume",
        |d| {
            d["migration"]["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["what"] == "resume the guest")
        },
    )
    .await;
    let whats: Vec<&str> = running["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        vec!["pause the guest to force switchover", "resume the guest"]
    );
    assert_eq!(
        lab.state_on("b", "t-pause").await.as_deref(),
        Some("running")
    );
    let beat = lab.heartbeat("t-pause").await;
    lab.wait_heartbeat_after("t-pause", beat).await;
    lab.remove_vm("t-pause").await;
    server.stop().await;
}
