//! Hosts, VMs and migrations over REST, without a libvirt daemon: scope, validation, and
//! a host that cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{ADMIN_PASSWORD, TENANT_PASSWORD, TestApp};

/// A server configured with one host whose daemon is not there (nothing listens on
/// port 1), and one more.
async fn app_with_unreachable_hosts() -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    TestApp::in_dir(
        dir,
        r#"
[sampler]
max_reconnect_backoff_s = 1

[[hosts]]
name = "a"
uri = "qemu+tcp://127.0.0.1:1/system"

[[hosts]]
name = "b"
uri = "qemu+tcp://127.0.0.1:2/system"
"#,
    )
    .await
}

#[tokio::test]
async fn an_unreachable_host_is_reported_disconnected_with_the_reason() {
    let app = app_with_unreachable_hosts().await;
    let cookie = app.login("admin", ADMIN_PASSWORD).await;
    let mut hosts = serde_json::Value::Null;
    for _ in 0..100 {
        hosts = app.get("/api/hosts", Some(&cookie)).await.json();
        if hosts[0]["state"] == "disconnected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hosts[0]["name"], "a");
    assert_eq!(hosts[0]["state"], "disconnected", "{hosts}");
    let error = hosts[0]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("connect"), "{error}");
    app.state.shutdown.cancel();
}

#[tokio::test]
async fn kiosks_see_hosts_and_tenants_do_not() {
    let app = app_with_unreachable_hosts().await;
    let kiosk = app.login("kiosk", ADMIN_PASSWORD).await;
    let tenant = app.login("tina", TENANT_PASSWORD).await;
    assert_eq!(
        app.get("/api/hosts", Some(&kiosk)).await.status,
        StatusCode::OK
    );
    let reply = app.get("/api/hosts", Some(&tenant)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "your role does not allow this");
    // The fleet's lists are not a tenant's: they have /api/tenant/vms.
    for path in ["/api/vms", "/api/migrations", "/api/history"] {
        assert_eq!(
            app.get(path, Some(&tenant)).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert_eq!(
        app.get("/api/tenant/vms", Some(&tenant)).await.json(),
        json!([])
    );
    app.state.shutdown.cancel();
}

#[tokio::test]
async fn only_operators_and_admins_start_or_abort() {
    let app = app_with_unreachable_hosts().await;
    let body = json!({ "vm_uuid": "x", "destination": "b" });
    for (user, password) in [("kiosk", ADMIN_PASSWORD), ("tina", TENANT_PASSWORD)] {
        let cookie = app.login(user, password).await;
        let reply = app
            .post("/api/migrations", Some(&cookie), Some(body.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{user}");
        let reply = app
            .post("/api/migrations/m1/abort", Some(&cookie), None)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{user}");
    }
    app.state.shutdown.cancel();
}

#[tokio::test]
async fn bad_start_requests_are_refused_and_start_nothing() {
    let app = app_with_unreachable_hosts().await;
    let cookie = app.login("otto", ADMIN_PASSWORD).await;
    let cases = [
        (
            json!({ "vm_uuid": "00000000-0000-0000-0000-000000000000", "destination": "b" }),
            StatusCode::NOT_FOUND,
            "no running VM with UUID",
        ),
        (
            json!({ "vm_uuid": "x", "destination": "b", "preset": "nope" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no preset called \"nope\"; presets are: converge, converge-safe, nova",
        ),
        (
            json!({ "vm_uuid": "x", "destination": "b", "settings": { "bandwidth_mib_s": -5 } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bandwidth_mib_s",
        ),
        (
            json!({ "vm_uuid": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `destination`",
        ),
        (
            json!({ "vm_uuid": "x", "destination": "b", "capabilities": ["magic"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `capabilities`",
        ),
    ];
    for (body, status, message) in cases {
        let reply = app
            .post("/api/migrations", Some(&cookie), Some(body.clone()))
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.error().contains(message), "{body}: {}", reply.error());
    }
    let reply = app
        .post("/api/migrations/nope/abort", Some(&cookie), None)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/migrations", Some(&cookie)).await.json(),
        json!([])
    );
    app.state.shutdown.cancel();
}

#[tokio::test]
async fn an_unknown_migration_is_a_404() {
    let app = app_with_unreachable_hosts().await;
    let cookie = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.get("/api/migrations/m-nope", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no migration m-nope");
    app.state.shutdown.cancel();
}
