//! Migrations Converge did not start, and what others do to migrations it did, on the
//! real lab: a Nova-managed VM is not moved behind Nova's back but is watched, steered and
//! stopped like any other; the server's ceiling stops a migration someone started with
//! virsh; partial start settings keep the preset's deadline; an abort made with virsh is
//! recorded as made outside.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{state, vm_uuid, wait_connected, wait_sampled, wait_until};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use reqwest::Method;
use serde_json::{Value, json};

const NOVA_PROJECT: &str = "3c9e4a61-7f0d-4b2e-9a85-0d6c1e2f7b44";
/// The server-wide ceiling these tests run under, seconds.
const CEILING_S: u64 = 25;

fn virsh_a(args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .args(["-q", "-c", "qemu+tcp://127.0.0.1:16601/system"])
        .args(args)
        .output()
        .unwrap()
}

/// The one migration of `vm` in memory, once Converge has found it.
async fn migration_of(client: &Client, vm: &str) -> Value {
    for _ in 0..120 {
        let all = client.get("/api/migrations").await;
        if let Some(m) = all
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["vm_uuid"] == vm && m["state"] == "running")
        {
            return m.clone();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Converge never found the running migration of {vm}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_from_outside_are_watched_steered_capped_and_named() {
    let lab = Lab::acquire().await;
    lab.start_vm_in_nova_project("nv", "loop", 64, 20, NOVA_PROJECT)
        .await;
    lab.start_vm("ob", "loop", 64, 20).await;
    let config = format!("[migrations]\nmax_duration_s = {CEILING_S}\n{HOSTS_CONFIG}");
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config).await;
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    wait_connected(&operator, "b").await;
    let nova_vm = vm_uuid(&operator, "nv", "a").await;
    let vms = operator.get("/api/vms").await;
    let listed = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["uuid"] == nova_vm)
        .unwrap();
    assert_eq!(listed["nova_managed"], true, "{listed}");

    // Nova's VM: not started from Converge; the refusal says how to do it.
    let (status, body) = operator
        .post(
            "/api/migrations",
            json!({ "vm_uuid": nova_vm, "destination": "b" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "openstack server migrate --live-migration --host b {nova_vm}"
        )),
        "{error}"
    );

    // Nova (here: virsh) starts it; Converge finds it, and its levers work.
    assert!(virsh_a(&["migrate-setspeed", "nv", "4"]).status.success());
    let outside = std::thread::spawn(|| {
        virsh_a(&[
            "migrate",
            "--live",
            "--p2p",
            "nv",
            "qemu+tcp://127.0.0.1:16602/system",
            "tcp://127.0.0.1",
            "--listen-address",
            "127.0.0.1",
        ])
    });
    let found = migration_of(&operator, &nova_vm).await;
    let id = found["id"].as_str().unwrap().to_owned();
    assert!(found["started_by"].is_null(), "found, not started: {found}");
    let (status, lever) = operator
        .send(
            Method::PATCH,
            &format!("/api/migrations/{id}"),
            Some(json!({ "lever": "downtime_limit", "ms": 400 })),
        )
        .await;
    assert_eq!(status, 200, "{lever}");
    assert_eq!(lever["read_back"], 400, "{lever}");

    // It has no deadline of its own: the server's ceiling stops it, with the reason.
    let ended = wait_until(
        &operator,
        &id,
        Duration::from_secs(CEILING_S + 60),
        "ended",
        |d| !matches!(state(d), "starting" | "running"),
    )
    .await;
    assert_eq!(state(&ended), "aborted", "{}", ended["migration"]);
    let ceiling = ended["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["actor"] == "policy" && a["what"] == "abort the migration")
        .cloned()
        .unwrap_or_default();
    assert!(
        ceiling["reason"]
            .as_str()
            .is_some_and(|r| r.contains("migrations.max_duration_s")),
        "{}",
        ended["migration"]
    );
    let _ = outside.join();
    assert_eq!(lab.state_on("a", "nv").await.as_deref(), Some("running"));

    // Started here with partial settings: a patch over the preset, whose deadline stays.
    let ob = vm_uuid(&operator, "ob", "a").await;
    let (status, started) = operator
        .post(
            "/api/migrations",
            json!({ "vm_uuid": ob, "destination": "b", "preset": "converge-safe",
                    "settings": { "bandwidth_mib_s": 4 } }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let presets = operator.get("/api/presets").await;
    let safe = presets
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "converge-safe")
        .unwrap();
    assert_eq!(
        started["settings"]["deadline"],
        safe["settings"]["deadline"]
    );
    assert!(
        started["settings"]["deadline"]["completion_max_s"].is_u64(),
        "{started}"
    );
    assert_eq!(started["settings"]["bandwidth_mib_s"], 4);
    assert_eq!(started["preset"], "converge-safe");
    assert_eq!(started["settings_changed"], json!(["bandwidth_mib_s"]));
    let id = started["id"].as_str().unwrap().to_owned();
    wait_sampled(&operator, &id).await;
    // Aborted with virsh: recorded as done outside, not as a failure.
    assert!(virsh_a(&["domjobabort", "ob"]).status.success());
    let ended = wait_until(&operator, &id, Duration::from_secs(60), "ended", |d| {
        !matches!(state(d), "starting" | "running")
    })
    .await;
    assert_eq!(state(&ended), "aborted", "{}", ended["migration"]);
    let error = ended["migration"]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("aborted outside Converge"), "{error}");

    server.stop().await;
    lab.remove_all_vms().await;
}
