//! Who sees what, against the real lab: nothing of the fleet or of another tenant in what
//! a tenant receives (every readable route, and the event stream during a real move), and
//! the tenant page and NOC board in Chromium. (Which status every route gives every kind
//! of caller is the in-process matrix's, `server/tests/it/authz.rs`, run by plain
//! `cargo test -p converge-server`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use converge_e2e::browser::Browser;
use converge_e2e::client::Client;
use converge_e2e::fleet;
use converge_e2e::server::{ADMIN_PASSWORD, TestServer, password_hash};
use converge_server::routes::ROUTES;
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use reqwest::Method;
use serde_json::json;

/// Host names no tenant may ever read: distinctive, so that a leak is found by search.
const EAST: &str = "compute-east-7";
const WEST: &str = "compute-west-3";
/// Tenant A's VM, in project "acme" by the config's mapping.
const ACME_VM: &str = "t-acme";
/// Tenant B's VM, in a project named by the Nova metadata in its domain XML.
const NOVA_VM: &str = "t-nova";
const NOVA_PROJECT: &str = "5f1d3a9e-0c4b-4c8e-9d2a-7b6e1f0a4c21";

fn config() -> String {
    let hash = password_hash();
    let hosts = HOSTS_CONFIG
        .replace("name = \"a\"", &format!("name = \"{EAST}\""))
        .replace("name = \"b\"", &format!("name = \"{WEST}\""));
    format!(
        r#"{hosts}
[[projects]]
name = "acme"
vms = ["{EAST}/{ACME_VM}"]

[[users]]
username = "tina"
password_hash = "{hash}"
role = "tenant"
projects = ["acme"]

[[users]]
username = "tom"
password_hash = "{hash}"
role = "tenant"
projects = ["{NOVA_PROJECT}"]
"#
    )
}

/// A wall screen's session: an admin makes a token, the screen signs in with it.
async fn kiosk_cookie(base: &str, admin: &Client) -> String {
    let (status, created) = admin
        .post("/api/kiosk-tokens", json!({ "label": "NOC wall" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let reply = reqwest::Client::new()
        .post(format!("{base}/api/kiosk/session"))
        .json(&json!({ "token": created["secret"] }))
        .send()
        .await
        .expect("kiosk sign-in");
    assert_eq!(reply.status(), 200);
    reply.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

/// Reads an SSE stream into a shared string until dropped.
fn record_stream(base: &str, cookie: &str) -> (Arc<Mutex<String>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    let request = reqwest::Client::new()
        .get(format!("{base}/api/events"))
        .header("cookie", cookie);
    let task = tokio::spawn(async move {
        let mut reply = request.send().await.expect("events");
        assert_eq!(reply.status(), 200);
        while let Ok(Some(chunk)) = reply.chunk().await {
            sink.lock()
                .expect("sink")
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    (seen, task)
}

fn assert_mentions_none(who: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{who} was shown \"{secret}\":\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_see_only_their_own_on_every_route_and_stream() {
    let lab = Lab::acquire().await;
    lab.start_vm(ACME_VM, "idle", 0, 0).await;
    lab.start_vm_in_nova_project(NOVA_VM, "idle", 0, 0, NOVA_PROJECT)
        .await;
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config()).await;
    let base = server.url.clone();
    let admin = Client::login(&base, "admin", ADMIN_PASSWORD).await;
    let operator = Client::login(&base, "otto", ADMIN_PASSWORD).await;
    let tina = Client::login(&base, "tina", ADMIN_PASSWORD).await;
    let tom = Client::login(&base, "tom", ADMIN_PASSWORD).await;
    let kiosk = kiosk_cookie(&base, &admin).await;

    let acme_uuid = fleet::vm_uuid(&operator, ACME_VM, EAST).await;
    let nova_uuid = fleet::vm_uuid(&operator, NOVA_VM, EAST).await;
    let hostname = operator.get("/api/hosts").await[0]["hostname"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Both ways of owning a VM work on real libvirt: the config's mapping and Nova's XML.
    let mine = tina.get("/api/tenant/vms").await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["name"], ACME_VM);
    assert_eq!(mine[0]["project"], "acme");
    let theirs = tom.get("/api/tenant/vms").await;
    assert_eq!(theirs.as_array().map(Vec::len), Some(1), "{theirs}");
    assert_eq!(theirs[0]["name"], NOVA_VM);
    assert_eq!(theirs[0]["project"], NOVA_PROJECT);

    // A live move of tenant A's VM, watched by both tenants and the kiosk.
    let (tina_events, tina_task) = record_stream(&base, &tina.cookie);
    let (tom_events, tom_task) = record_stream(&base, &tom.cookie);
    let (kiosk_events, kiosk_task) = record_stream(&base, &kiosk);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = fleet::start(&operator, &acme_uuid, WEST, 64).await;
    fleet::wait_until(&operator, &id, Duration::from_secs(120), "completed", |d| {
        fleet::state(d) == "completed"
    })
    .await;
    // The VM shows up on the destination, and its tenant hears of the finished move.
    assert_eq!(fleet::vm_uuid(&operator, ACME_VM, WEST).await, acme_uuid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tina_events.lock().unwrap().contains("\"Moved\"") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in [tina_task, tom_task, kiosk_task] {
        task.abort();
    }
    let tina_events = tina_events.lock().unwrap().clone();
    let tom_events = tom_events.lock().unwrap().clone();
    let kiosk_events = kiosk_events.lock().unwrap().clone();
    assert!(
        tina_events.contains("event: tenant_vm")
            && tina_events.contains("Being moved for maintenance"),
        "tenant A never heard of the move while it ran:\n{tina_events}"
    );
    assert!(tina_events.contains("\"Moved\""), "{tina_events}");
    for name in ["event: migration", "event: host", "event: vms"] {
        assert!(!tina_events.contains(name), "tenant A got an {name}");
        assert!(!tom_events.contains(name), "tenant B got an {name}");
    }
    assert!(
        kiosk_events.contains("event: migration") && kiosk_events.contains(ACME_VM),
        "the kiosk should see the fleet's migrations"
    );

    // Every route a tenant can read, with real ids filled in (the finished move's, tenant
    // A's VM's): whatever the status, every body a tenant gets is kept for the leak check.
    let http = reqwest::Client::new();
    let mut seen_by: HashMap<&str, String> = HashMap::new();
    let readable = ROUTES
        .iter()
        .filter(|r| r.method == "GET" && r.path != "/events");
    for route in readable {
        let path = route
            .path
            .replace("{id}", &id)
            .replace("{uuid}", &acme_uuid);
        for (who, client) in [("tenant A", &tina), ("tenant B", &tom)] {
            let reply = http
                .get(format!("{base}/api{path}"))
                .header("cookie", &client.cookie)
                .send()
                .await
                .expect("request");
            let status = reply.status().as_u16();
            let body = reply.text().await.unwrap_or_default();
            seen_by.entry(who).or_default().push_str(&body);
            if route.path == "/tenant/vms/{uuid}" {
                let expected = if who == "tenant A" { 200 } else { 404 };
                assert_eq!(status, expected, "{who} reading tenant A's VM: {body}");
            }
        }
    }

    // Nothing of the fleet, the operators or the other tenant reached a tenant.
    let mut fleet_secrets = vec![EAST, WEST, "otto", "127.0.0.1", "qemu+tcp"];
    if hostname.len() >= 4 {
        fleet_secrets.push(&hostname);
    }
    let tina_all = format!("{}{tina_events}", seen_by["tenant A"]);
    let tom_all = format!("{}{tom_events}", seen_by["tenant B"]);
    assert!(tina_all.contains(ACME_VM) && tom_all.contains(NOVA_VM));
    assert_mentions_none("tenant A", &tina_all, &fleet_secrets);
    assert_mentions_none("tenant A", &tina_all, &[NOVA_VM, &nova_uuid, NOVA_PROJECT]);
    assert_mentions_none("tenant B", &tom_all, &fleet_secrets);
    assert_mentions_none("tenant B", &tom_all, &[ACME_VM, &acme_uuid, "acme"]);

    server.stop().await;
    lab.remove_vm(ACME_VM).await;
    lab.remove_vm(NOVA_VM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_page_and_the_noc_board_in_chromium() {
    let lab = Lab::acquire().await;
    // `loop` at 100 MiB/s over a 32 MiB/s link: a move that stays live to look at.
    lab.start_vm(ACME_VM, "loop", 128, 100).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::start_with(dir.clone(), &config()).await;
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = fleet::vm_uuid(&operator, ACME_VM, EAST).await;
    let id = fleet::start(&operator, &uuid, WEST, 32).await;
    fleet::wait_sampled(&operator, &id).await;

    // The tenant: their VM, the move in words, no host, no control.
    let browser = Browser::start(&server.url).await;
    browser.goto("/").await;
    browser.fill("input[name=username]", "tina").await;
    browser.fill("input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.login-card button[type=submit]").await;
    browser
        .wait_for_text(
            "li[data-vm=t-acme] [data-testid=move-headline]",
            "Being moved for maintenance",
        )
        .await;
    let detail = browser
        .wait_for_text("li[data-vm=t-acme] [data-testid=move-detail]", "% moved")
        .await;
    println!("tenant sees: {detail}");
    let page = browser.find("main").await.text().await.unwrap();
    assert_mentions_none("the tenant page", &page, &[EAST, WEST, "otto", "Abort"]);
    let buttons = browser
        .client
        .execute(
            "return [...document.querySelectorAll('main button')].map(b => b.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        buttons,
        json!(["Past moves"]),
        "a tenant has nothing to press but history"
    );
    let shot = browser.screenshot("tenant-page").await;
    println!("screenshot: {}", shot.display());
    browser.click("button.sign-out").await;
    browser.find("input[name=username]").await;

    // The NOC board, from the link an admin made.
    let (status, created) = admin
        .post("/api/kiosk-tokens", json!({ "label": "NOC wall" }))
        .await;
    assert_eq!(status, 201);
    let token_id = created["token"]["id"].as_i64().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    browser.goto(created["path"].as_str().unwrap()).await;
    browser
        .wait_for_text("[data-testid=kiosk-running]", "1 migration running")
        .await;
    // The token is read once and taken out of the address bar (and the history).
    let address = browser
        .client
        .execute("return location.href;", vec![])
        .await
        .unwrap();
    let address = address.as_str().unwrap();
    assert!(
        !address.contains(&secret) && !address.contains("token"),
        "the kiosk token stays in the address bar: {address}"
    );
    assert!(address.ends_with("/kiosk"), "{address}");
    browser.find("[data-testid=tile][data-vm=t-acme]").await;
    browser
        .wait_for_text("[data-testid=kiosk-bandwidth]", "MiB/s")
        .await;
    // The forecast gives up on this one within a few passes; the tile says so (in
    // capitals, as WebDriver reads the rendered text).
    browser
        .wait_for_text_within(
            "[data-testid=tile-why]",
            "WILL NOT CONVERGE",
            Duration::from_secs(120),
        )
        .await;
    let shot = browser.screenshot("kiosk-board").await;
    println!("screenshot: {}", shot.display());
    let controls = browser
        .client
        .execute(
            "return document.querySelectorAll('.kiosk button, .kiosk input, .kiosk a').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(controls, json!(0), "the board has no controls");

    // The server goes away: the board says since when; it comes back: the board recovers.
    server.stop().await;
    let banner = browser
        .wait_for_text_within(
            "[data-testid=kiosk-offline]",
            "Disconnected since",
            Duration::from_secs(20),
        )
        .await;
    println!("board: {banner}");
    let shot = browser.screenshot("kiosk-disconnected").await;
    println!("screenshot: {}", shot.display());
    let server = TestServer::start_at(dir.clone(), &config(), addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = browser
            .client
            .execute(
                "return document.querySelector('[data-testid=kiosk-offline]') === null \
                 && document.querySelector('[data-testid=tile][data-vm=t-acme]') !== null;",
                vec![],
            )
            .await
            .unwrap();
        if gone == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the board did not recover within 30 s of the server's return"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Revoked: the board drops within seconds and says why.
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let (status, _) = admin
        .send(
            Method::DELETE,
            &format!("/api/kiosk-tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    browser
        .wait_for_text_within(
            "[data-testid=kiosk-refused]",
            "not valid",
            Duration::from_secs(20),
        )
        .await;

    let operator = Client::login(&server.url, "otto", ADMIN_PASSWORD).await;
    let (status, body) = operator
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert!(status.is_success(), "abort: {body}");
    browser.close().await;
    server.stop().await;
    lab.remove_vm(ACME_VM).await;
}
