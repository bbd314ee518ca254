//! The audit log and presets over REST, without libvirt.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{ADMIN_PASSWORD, TENANT_PASSWORD, TestApp, request};

#[tokio::test]
async fn sign_ins_are_audited_without_recording_unknown_names() {
    let app = TestApp::new().await;
    app.post(
        "/api/login",
        None,
        Some(json!({ "username": "hunter2-typed-as-name", "password": "x" })),
    )
    .await;
    app.post(
        "/api/login",
        None,
        Some(json!({ "username": "tina", "password": "wrong" })),
    )
    .await;
    let tenant = app.login("tina", TENANT_PASSWORD).await;
    app.post("/api/logout", Some(&tenant), None).await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;

    let log = app.get("/api/audit", Some(&admin)).await.json();
    let rows: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        rows,
        vec![
            row("admin", "sign_in", "ok"),
            row("tina", "sign_out", "ok"),
            row("tina", "sign_in", "ok"),
            row("tina", "sign_in", "refused: wrong username or password"),
            row(
                "(unknown user)",
                "sign_in",
                "refused: wrong username or password"
            ),
        ],
        "newest first"
    );
    assert_eq!(log[0]["client_addr"], "127.0.0.1");
    assert!(!log.to_string().contains("hunter2"));

    // Paging: older than the second entry.
    let second = log[1]["id"].as_i64().unwrap();
    let page = app
        .get(&format!("/api/audit?limit=2&before={second}"), Some(&admin))
        .await
        .json();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["action"], "sign_in");
    assert_eq!(page[0]["actor"], "tina");
}

#[tokio::test]
async fn only_admins_read_the_audit_log() {
    let app = TestApp::new().await;
    for (user, password) in [
        ("otto", ADMIN_PASSWORD),
        ("kiosk", ADMIN_PASSWORD),
        ("tina", TENANT_PASSWORD),
    ] {
        let cookie = app.login(user, password).await;
        let reply = app.get("/api/audit", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{user}");
    }
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.get("/api/audit?limit=0", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = app.get("/api/audit?colour=blue", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn presets_are_the_builtins_plus_configured_ones() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(
        dir,
        r#"
[[presets]]
name = "night"
description = "Fast at night: no limits, abort after 10 minutes."
[presets.settings.deadline]
completion_max_s = 600
action = "abort"
"#,
    )
    .await;
    let cookie = app.login("otto", ADMIN_PASSWORD).await;
    let presets = app.get("/api/presets", Some(&cookie)).await.json();
    let names: Vec<&str> = presets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "converge",
            "converge-safe",
            "nova",
            "ovirt-minimal-downtime",
            "proxmox",
            "night"
        ]
    );
    assert_eq!(presets[0]["settings"]["adaptive"], true);
    let nova = &presets[2]["settings"];
    assert_eq!(nova["deadline"]["completion_s_per_gib"], 800);
    assert_eq!(nova["downtime_steps"]["steps"], 10);
    let kiosk = app.login("kiosk", ADMIN_PASSWORD).await;
    assert_eq!(
        app.get("/api/presets", Some(&kiosk)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn lever_requests_are_checked_before_anything_happens() {
    let app = TestApp::new().await;
    let cookie = app.login("otto", ADMIN_PASSWORD).await;
    let patch = |body: serde_json::Value| {
        request(
            Method::PATCH,
            "/api/migrations/m-none",
            Some(&cookie),
            Some(body),
        )
    };
    let reply = app
        .send(patch(json!({ "lever": "downtime_limit", "ms": 500 })))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no migration m-none");
    let reply = app.send(patch(json!({ "lever": "warp_speed" }))).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.error().contains("unknown variant `warp_speed`"),
        "{}",
        reply.error()
    );
    let reply = app.send(patch(json!({ "lever": "bandwidth" }))).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.error().contains("missing field `mib_s`"),
        "{}",
        reply.error()
    );
    // The refusal is on record as an attempt; requests that could not even be read are not.
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let log = app.get("/api/audit", Some(&admin)).await.json();
    let levers: Vec<&serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] != "sign_in")
        .collect();
    assert_eq!(levers.len(), 1, "{log}");
    assert_eq!(levers[0]["action"], "downtime_limit");
    assert_eq!(levers[0]["actor"], "otto");
    assert_eq!(levers[0]["result"], "refused: no migration m-none");
}

#[tokio::test]
async fn history_starts_empty_and_pages_are_checked() {
    let app = TestApp::new().await;
    let cookie = app.login("kiosk", ADMIN_PASSWORD).await;
    assert_eq!(
        app.get("/api/history", Some(&cookie)).await.json(),
        json!([])
    );
    let reply = app.get("/api/history?limit=1000", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let tenant = app.login("tina", TENANT_PASSWORD).await;
    assert_eq!(
        app.get("/api/history", Some(&tenant)).await.status,
        StatusCode::FORBIDDEN
    );
}
