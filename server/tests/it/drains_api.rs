//! Drain requests through the real router, without libvirt: every bad value is refused with
//! the field to fix and changes nothing (no drain, no draining host, no audit row of a
//! start); a host that is not connected cannot be drained. (Plans, runs and controls are
//! tested on the lab: `tests/e2e/tests/it/drain.rs`.)

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_PASSWORD, TestApp};

/// A host whose daemon is nowhere (nothing listens on port 1): it stays disconnected.
const HOSTS: &str = r#"
[[hosts]]
name = "east"
uri = "qemu+tcp://127.0.0.1:1/system"

[[hosts]]
name = "west"
uri = "qemu+tcp://127.0.0.1:2/system"
"#;

async fn app() -> (TestApp, String) {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir, HOSTS).await;
    let otto = app.login("otto", ADMIN_PASSWORD).await;
    (app, otto)
}

#[tokio::test]
async fn bad_values_are_refused_with_the_field_to_fix_and_change_nothing() {
    let (app, otto) = app().await;
    let cases: [(Value, &str); 9] = [
        (json!({ "hosts": [] }), "name the hosts to empty"),
        (
            json!({ "hosts": ["nowhere"] }),
            "no host called \"nowhere\"",
        ),
        (
            json!({ "hosts": ["east"], "window_minutes": 0 }),
            "window_minutes",
        ),
        (
            json!({ "hosts": ["east"], "window_minutes": 100_000 }),
            "window_minutes",
        ),
        (
            json!({ "hosts": ["east"], "limits": { "total": 0 } }),
            "limits.total",
        ),
        (
            json!({ "hosts": ["east"], "limits": { "bandwidth_mib_s": 0 } }),
            "limits.bandwidth_mib_s",
        ),
        (
            json!({ "hosts": ["east"], "policy": { "max_tries": 0 } }),
            "policy.max_tries",
        ),
        (
            json!({ "hosts": ["east"], "policy": { "attempt_max_s": 5 } }),
            "policy.attempt_max_s",
        ),
        (
            json!({ "hosts": ["east"], "preset": "nope" }),
            "no preset called \"nope\"",
        ),
    ];
    for (body, field) in cases {
        let reply = app
            .post("/api/drains", Some(&otto), Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text()
        );
        assert!(reply.error().contains(field), "{body}: {}", reply.error());
    }
    // Unknown fields and wrong types are the JSON reader's 422s, as everywhere.
    for body in [
        json!({ "hosts": ["east"], "windo_minutes": 5 }),
        json!({ "hosts": ["east"], "limits": { "total": "two" } }),
    ] {
        let reply = app
            .post("/api/drains", Some(&otto), Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text()
        );
    }
    let reply = app
        .post(
            "/api/drains/d1/vms/u1",
            Some(&otto),
            Some(json!({ "action": "jump" })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );

    // Nothing was made or marked, and no start was audited.
    let drains = app.get("/api/drains", Some(&otto)).await;
    assert_eq!(drains.json(), json!([]));
    let hosts = app.get("/api/hosts", Some(&otto)).await.json();
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["draining"].is_null()),
        "{hosts}"
    );
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let audit = app.get("/api/audit?limit=500", Some(&admin)).await.json();
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drain_start"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_host_that_is_not_connected_cannot_be_drained() {
    let (app, otto) = app().await;
    let reply = app
        .post(
            "/api/drains",
            Some(&otto),
            Some(json!({ "hosts": ["east"], "dry_run": true })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
    assert!(
        reply.error().contains("host east is not connected"),
        "{}",
        reply.error()
    );
}
