//! Host drains on the real lab: a mixed host emptied into two others within limits, a
//! drain that survives its server being killed, pause, resume and cancel, placement that
//! never overcommits a destination, and a busy guest retried in its quiet spell.

use std::time::Duration;

use converge_e2e::browser::Browser;
use converge_e2e::client::Client;
use converge_e2e::fleet::{link_outrun_by, vm_uuid, wait_dirty_rate};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer, config_text, password_hash};
use converge_e2e::{converge_binary, workspace_root};
use converge_testkit::lab::{HOSTS, HOSTS_CONFIG, Lab};
use converge_testkit::process::ServerProcess;
use serde_json::{Value, json};

/// The background measurement often enough for a drain to see a guest go quiet.
const MEASURE_OFTEN: &str = "\n[dirty_rate]\nevery_s = 10\ngap_s = 0\n";

/// The drain's current state.
async fn drain(client: &Client, id: &str) -> Value {
    client.get(&format!("/api/drains/{id}")).await
}

/// The drain's item for VM `name`.
fn item<'a>(drain: &'a Value, name: &str) -> &'a Value {
    drain["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["vm_name"] == name)
        .unwrap_or_else(|| panic!("{name} is in the drain: {drain}"))
}

/// Polls drain `id` until `done` holds (within `timeout`), printing each change of its
/// items' states; returns the drain.
async fn wait_drain(
    client: &Client,
    id: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_seen = String::new();
    loop {
        let d = drain(client, id).await;
        let states: Vec<String> = d["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        format!(
                            "{}={}",
                            i["vm_name"].as_str().unwrap_or("?"),
                            i["state"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = format!("{} [{}]", d["state"], states.join(" "));
        if line != last_seen {
            println!("drain {id}: {line}");
            last_seen = line;
        }
        if done(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drain {id} never {what} within {timeout:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn over(d: &Value) -> bool {
    ["done", "cancelled"].contains(&d["state"].as_str().unwrap_or_default())
}

/// Where the lab runs `name` (running), on every host: each VM must run exactly once.
async fn running_on(lab: &Lab, name: &str) -> Vec<&'static str> {
    let mut hosts = Vec::new();
    for host in HOSTS {
        if lab.state_on(host, name).await.as_deref() == Some("running") {
            hosts.push(host);
        }
    }
    hosts
}

/// Every migration a drain started is in the history, ended.
async fn assert_recorded(client: &Client, d: &Value) {
    let history = client.get("/api/history?limit=500").await;
    for item in d["items"].as_array().unwrap() {
        for id in item["migration_ids"].as_array().unwrap() {
            let found = history
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == *id)
                .unwrap_or_else(|| {
                    panic!("migration {id} of {} is in the history", item["vm_name"])
                });
            assert!(
                ["completed", "failed", "aborted"]
                    .contains(&found["state"].as_str().unwrap_or_default()),
                "{id} ended: {found}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_host_is_emptied_and_the_guest_that_cannot_go_is_left_with_its_reason() {
    let lab = Lab::acquire().await;
    lab.start_vm("d-idle1", "idle", 0, 0).await;
    lab.start_vm("d-idle2", "idle", 0, 0).await;
    // Rewrites 128 MiB at 100 MiB/s: only xbzrle finishes it over the link.
    lab.start_vm("d-loop", "loop", 128, 100).await;
    // New random data as fast as it can: nothing finishes it but post-copy.
    lab.start_vm("d-fresh", "fresh", 128, 0).await;
    let hash = password_hash();
    let server = TestServer::lab(&format!(
        r#"{MEASURE_OFTEN}
[[projects]]
name = "blue"
vms = ["a/d-idle2"]

[[users]]
username = "tina"
password_hash = "{hash}"
role = "tenant"
projects = ["blue"]
"#
    ))
    .await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let tina = Client::login(&server.url, "tina", ADMIN_PASSWORD).await;
    let kiosk = Client::login(&server.url, "kiosk", ADMIN_PASSWORD).await;
    let mut uuids = Vec::new();
    for name in ["d-idle1", "d-idle2", "d-loop", "d-fresh"] {
        let uuid = vm_uuid(&admin, name, "a").await;
        wait_dirty_rate(&admin, &uuid, 0).await;
        uuids.push(uuid);
    }
    // A link the fresh guest outruns three times over, at most 32 MiB/s.
    let link = link_outrun_by(&admin, &uuids[3], 3).await.min(32);
    let mut request = json!({
        "hosts": ["a"],
        "destinations": ["b", "c"],
        "window_minutes": 3,
        "limits": { "per_source": 2, "per_destination": 2, "total": 2, "bandwidth_mib_s": link },
        "policy": { "allow_post_copy": false, "max_tries": 1, "apply_advice": true },
        "dry_run": true,
    });
    let (status, plan) = admin.post("/api/drains", request.clone()).await;
    assert_eq!(status, 200, "{plan}");
    for i in plan["items"].as_array().unwrap() {
        println!(
            "plan: {} → {} {} ({} s): {}",
            i["vm_name"], i["destination"], i["outlook"], i["predicted_s"], i["outlook_reason"]
        );
    }
    println!(
        "plan: total {} s; warnings {}",
        plan["predicted_total_s"], plan["warnings"]
    );
    assert_eq!(item(&plan, "d-idle1")["outlook"], "converges");
    assert_eq!(
        item(&plan, "d-fresh")["outlook"],
        "needs_xbzrle",
        "adaptive, post-copy not allowed"
    );
    // The heavy moves first: the two busy guests before the quick idle ones.
    let order: Vec<&str> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["vm_name"].as_str().unwrap())
        .collect();
    assert!(
        order[2..].iter().all(|n| n.starts_with("d-idle")),
        "{order:?}"
    );
    assert!(plan["id"] == "", "a dry run starts nothing");
    assert!(admin.get("/api/hosts").await[0]["draining"].is_null());

    // Started as an operator does it: on the maintenance page, from the plan it shows.
    let browser = Browser::start(&server.url).await;
    browser.goto("/maintenance").await;
    browser.fill("input[name=username]", "admin").await;
    browser.fill("input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.login-card button[type=submit]").await;
    browser.wait_for_path("/maintenance").await;
    browser.click("input[data-pick=host][value=a]").await;
    browser.click("input[data-pick=dest][value=b]").await;
    browser.click("input[data-pick=dest][value=c]").await;
    for (field, value) in [
        ("window", "3".to_owned()),
        ("tries", "1".into()),
        ("per-source", "2".into()),
        ("per-destination", "2".into()),
        ("total", "2".into()),
        ("bandwidth", link.to_string()),
    ] {
        browser
            .fill(&format!("input[data-testid={field}]"), &value)
            .await;
    }
    browser.click("input[data-testid=allow-post-copy]").await;
    browser.click("button[data-testid=preview]").await;
    browser.wait_for_text("[data-testid=plan]", "d-fresh").await;
    let shot = browser.screenshot("maintenance-plan").await;
    println!("screenshot: {}", shot.display());
    browser.click("button[data-testid=start-drain]").await;
    browser
        .wait_for_text("[data-testid=drain-state]", "RUNNING")
        .await;
    let drains = admin.get("/api/drains").await;
    let started = drains[0].clone();
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["policy"]["allow_post_copy"], false, "{started}");
    assert_eq!(started["limits"]["bandwidth_mib_s"], link, "{started}");
    request["dry_run"] = json!(false);
    let hosts = admin.get("/api/hosts").await;
    assert_eq!(hosts[0]["name"], "a");
    assert_eq!(hosts[0]["draining"], id.as_str(), "{hosts}");
    let (status, again) = admin.post("/api/drains", request.clone()).await;
    assert_eq!(status, 409, "one drain per host: {again}");
    // The kiosk sees it; the tenant sees only that its VM is scheduled, in words.
    let on_kiosk = kiosk.get("/api/drains").await;
    assert!(
        on_kiosk
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str())
    );
    let notice = tina.get("/api/tenant/vms").await;
    println!("tenant: {notice}");
    let scheduled = notice[0]["scheduled"]
        .as_str()
        .unwrap_or_else(|| panic!("{notice}"));
    assert!(
        scheduled.starts_with("Scheduled to be moved for maintenance"),
        "{scheduled}"
    );
    let tenant_text = notice.to_string();
    for secret in ["\"a\"", "\"b\"", "\"c\"", &id, "d-loop", "d-fresh"] {
        assert!(
            !tenant_text.contains(secret),
            "a tenant was shown {secret}: {tenant_text}"
        );
    }

    // The page follows it live; the wall board shows its progress.
    browser.wait_for_text("[data-testid=queue]", "moving").await;
    let shot = browser.screenshot("maintenance-drain").await;
    println!("screenshot: {}", shot.display());
    browser.click("button.sign-out").await;
    browser.fill("input[name=username]", "kiosk").await;
    browser.fill("input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.login-card button[type=submit]").await;
    browser
        .wait_for_text("[data-testid=kiosk-drain-moved]", "/4")
        .await;
    let shot = browser.screenshot("kiosk-drain").await;
    println!("screenshot: {}", shot.display());
    browser.close().await;

    // Once an idle guest has landed, moving it back into the draining host is refused.
    let moved = wait_drain(
        &admin,
        &id,
        Duration::from_secs(120),
        "moved an idle guest",
        |d| item(d, "d-idle1")["state"] == "moved",
    )
    .await;
    let (status, refused) = admin
        .post(
            "/api/migrations",
            json!({ "vm_uuid": uuids[0], "destination": "a" }),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("being drained"),
        "{refused}"
    );
    println!("into a: {}", refused["error"]);
    assert_eq!(moved["state"], "running");

    let done = wait_drain(&admin, &id, Duration::from_secs(200), "ended", over).await;
    println!("{}", serde_json::to_string_pretty(&done["items"]).unwrap());
    assert_eq!(done["state"], "done");
    for name in ["d-idle1", "d-idle2", "d-loop"] {
        let i = item(&done, name);
        assert_eq!(i["state"], "moved", "{i}");
        let dest = i["destination"].as_str().unwrap();
        assert_eq!(
            running_on(&lab, name).await,
            [dest],
            "{name} runs once, on {dest}"
        );
    }
    let fresh = item(&done, "d-fresh");
    match fresh["state"].as_str().unwrap() {
        "left" => {
            let why = fresh["reason"].as_str().unwrap();
            assert!(
                why.contains("runs on a") || why.contains("window ended"),
                "{why}"
            );
            assert_eq!(running_on(&lab, "d-fresh").await, ["a"]);
        }
        "moved" => {
            let dest = fresh["destination"].as_str().unwrap();
            assert_eq!(running_on(&lab, "d-fresh").await, [dest]);
        }
        other => panic!("d-fresh ended {other}: {fresh}"),
    }
    assert!(
        admin.get("/api/hosts").await[0]["draining"].is_null(),
        "the host is free again"
    );
    assert_recorded(&admin, &done).await;
    let after = tina.get("/api/tenant/vms").await;
    assert!(after[0]["scheduled"].is_null(), "{after}");
    assert_eq!(after[0]["latest_move"]["headline"], "Moved", "{after}");
    let audit = admin.get("/api/audit?limit=500").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drain_start" && e["actor"] == "admin")
    );

    for name in ["d-idle1", "d-idle2", "d-loop", "d-fresh"] {
        lab.remove_vm(name).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_goes_on_to_the_same_end_after_its_server_is_killed() {
    let lab = Lab::acquire().await;
    for name in ["k-1", "k-2", "k-3"] {
        lab.start_vm(name, "idle", 0, 0).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(
        &workspace_root().join("dist"),
        &dir.path().join("converge.db"),
        &format!("{HOSTS_CONFIG}{MEASURE_OFTEN}"),
    );
    let binary = converge_binary();
    let first = ServerProcess::start(&binary, &config, dir.path(), "info");
    let admin = Client::login(&first.url, "admin", ADMIN_PASSWORD).await;
    for name in ["k-1", "k-2", "k-3"] {
        vm_uuid(&admin, name, "a").await;
    }
    let (status, started) = admin
        .post(
            "/api/drains",
            json!({
                "hosts": ["a"], "destinations": ["b", "c"], "window_minutes": 10,
                "limits": { "total": 1, "bandwidth_mib_s": 8 },
            }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    // Killed while the second VM moves.
    let mid = wait_drain(
        &admin,
        &id,
        Duration::from_secs(90),
        "moved one and began the next",
        |d| {
            d["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["state"] == "moved")
                .count()
                == 1
                && d["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["state"] == "migrating" && i["migration_id"].is_string())
        },
    )
    .await;
    let moving = mid["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "migrating")
        .unwrap()
        .clone();
    // Its record on disk (written just after the answer above) before the kill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill();

    let second = ServerProcess::start(&binary, &config, dir.path(), "info");
    let admin = Client::login(&second.url, "admin", ADMIN_PASSWORD).await;
    let hosts = admin.get("/api/hosts").await;
    assert_eq!(
        hosts[0]["draining"],
        id.as_str(),
        "still draining after the restart: {hosts}"
    );
    let done = wait_drain(&admin, &id, Duration::from_secs(150), "ended", over).await;
    assert_eq!(done["state"], "done", "{done}");
    for i in done["items"].as_array().unwrap() {
        assert_eq!(i["state"], "moved", "{i}");
        let name = i["vm_name"].as_str().unwrap();
        assert_eq!(
            running_on(&lab, name).await,
            [i["destination"].as_str().unwrap()]
        );
    }
    // The move under way at the kill was taken back, not started again.
    let resumed = item(&done, moving["vm_name"].as_str().unwrap());
    assert_eq!(
        resumed["migration_ids"],
        json!([moving["migration_id"]]),
        "{resumed}"
    );
    assert_recorded(&admin, &done).await;
    second.stop();
    for name in ["k-1", "k-2", "k-3"] {
        lab.remove_vm(name).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_pause_resume_and_cancel_do_what_they_say() {
    let lab = Lab::acquire().await;
    for name in ["p-1", "p-2", "p-3"] {
        lab.start_vm(name, "idle", 0, 0).await;
    }
    // c may hold 400 MiB of guests: none of these 512 MiB guests fits.
    let config = format!(
        "{}{MEASURE_OFTEN}",
        HOSTS_CONFIG.replace("name = \"c\"", "name = \"c\"\nmax_guest_memory_mib = 400")
    );
    let server =
        TestServer::start_with(std::sync::Arc::new(tempfile::tempdir().unwrap()), &config).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let otto = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let mut uuids = Vec::new();
    for name in ["p-1", "p-2", "p-3"] {
        uuids.push(vm_uuid(&admin, name, "a").await);
    }
    let limits = json!({ "total": 1, "bandwidth_mib_s": 4 });
    let (status, plan) = otto
        .post(
            "/api/drains",
            json!({ "hosts": ["a"], "limits": limits, "dry_run": true }),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["destination"] == "b"),
        "{plan}"
    );
    let c_room = plan["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "c")
        .unwrap();
    assert_eq!(c_room["guest_limit_bytes"], 400u64 << 20, "{c_room}");
    let warnings = plan["warnings"].to_string();
    assert!(
        warnings.contains("c receives nothing: 400 MiB of room"),
        "the plan says why: {warnings}"
    );
    // Placed on c by hand: refused with the numbers, and nothing starts.
    let (status, refused) = otto
        .post(
            "/api/drains",
            json!({ "hosts": ["a"], "limits": limits,
                    "placements": [{ "vm_uuid": uuids[0], "destination": "c" }] }),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("does not fit on c"),
        "{refused}"
    );
    assert!(
        admin
            .get("/api/drains")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, bad) = otto
        .post(
            "/api/drains",
            json!({ "hosts": ["a"], "window_minutes": 0 }),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("window_minutes"));

    let (status, started) = otto
        .post(
            "/api/drains",
            json!({ "hosts": ["a"], "destinations": ["b"], "limits": limits,
                    "order": [uuids[0], uuids[1], uuids[2]] }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let (status, paused) = otto
        .post(&format!("/api/drains/{id}/pause"), json!({}))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    // The first move finishes; nothing new starts while paused.
    let d = wait_drain(
        &otto,
        &id,
        Duration::from_secs(90),
        "moved the first",
        |d| item(d, "p-1")["state"] == "moved",
    )
    .await;
    assert_eq!(
        item(&d, "p-1")["attempts"],
        1,
        "it had started before the pause"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = drain(&otto, &id).await;
    assert_eq!(item(&d, "p-2")["state"], "pending", "paused: {d}");
    let (status, _) = otto
        .post(&format!("/api/drains/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    wait_drain(
        &otto,
        &id,
        Duration::from_secs(30),
        "started the second",
        |d| item(d, "p-2")["migration_id"].is_string(),
    )
    .await;
    let (status, cancelled) = otto
        .post(&format!("/api/drains/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let d = wait_drain(&otto, &id, Duration::from_secs(60), "ended", over).await;
    assert_eq!(d["state"], "cancelled");
    assert_eq!(item(&d, "p-1")["state"], "moved", "finished moves stay");
    for name in ["p-2", "p-3"] {
        let i = item(&d, name);
        assert_eq!(i["state"], "left", "{i}");
        assert!(i["reason"].as_str().unwrap().contains("cancelled"), "{i}");
        assert_eq!(running_on(&lab, name).await, ["a"], "{name} stays on a");
    }
    assert_eq!(running_on(&lab, "p-1").await, ["b"]);
    let (status, late) = otto
        .post(&format!("/api/drains/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 404, "an ended drain changes no more: {late}");
    let audit = admin.get("/api/audit?limit=500").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["actor"] == "otto" && e["action"].as_str().unwrap_or("").starts_with("drain_")
        })
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["drain_start", "drain_pause", "drain_resume", "drain_cancel"] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    for name in ["p-1", "p-2", "p-3"] {
        lab.remove_vm(name).await;
    }
    server.stop().await;
}

/// A guest busy for 45 s, then idle for 40 s: the drain's first attempt does not converge
/// and is aborted; the VM is moved once the background measurement finds it quiet.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_guest_is_retried_and_moves_in_its_quiet_spell() {
    let lab = Lab::acquire().await;
    lab.remove_vm("r-phases").await;
    lab.run_with(
        &["start-vm", "r-phases", "phases", "128", "100", "a"],
        &[
            ("LAB_DIRTY_BUSY_S", "45"),
            ("LAB_DIRTY_IDLE_S", "40"),
            ("LAB_VM_MEMORY_MIB", "256"),
        ],
    )
    .await;
    let server = TestServer::lab(MEASURE_OFTEN).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "r-phases", "a").await;
    let busy = wait_dirty_rate(&admin, &uuid, 0).await;
    println!("busy: {} MiB/s", busy >> 20);
    // Not adaptive, no advice applied: nothing but a quiet spell can finish it.
    let (status, started) = admin
        .post(
            "/api/drains",
            json!({
                "hosts": ["a"], "destinations": ["b"], "window_minutes": 5,
                "preset": "converge-safe",
                "limits": { "bandwidth_mib_s": 32 },
                "policy": { "apply_advice": false, "max_tries": 3 },
            }),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let waiting = wait_drain(
        &admin,
        &id,
        Duration::from_secs(90),
        "gave up on the first attempt",
        |d| item(d, "r-phases")["state"] == "waiting",
    )
    .await;
    println!("waiting: {}", item(&waiting, "r-phases")["reason"]);
    let done = wait_drain(&admin, &id, Duration::from_secs(120), "ended", over).await;
    let i = item(&done, "r-phases");
    assert_eq!(i["state"], "moved", "{i}");
    assert_eq!(i["attempts"], 2, "{i}");
    assert_eq!(running_on(&lab, "r-phases").await, ["b"]);
    let first = admin
        .get(&format!(
            "/api/migrations/{}",
            i["migration_ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        first["migration"]["state"], "aborted",
        "{}",
        first["migration"]
    );
    assert!(
        first["migration"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"] == "drain"),
        "the drain aborted it: {}",
        first["migration"]["actions"]
    );
    assert_recorded(&admin, &done).await;
    lab.remove_vm("r-phases").await;
    server.stop().await;
}
