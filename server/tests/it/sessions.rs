//! Sessions live in the SQLite file: they survive restarts and end when they should.

use std::sync::Arc;

use axum::http::StatusCode;
use converge_server::config::Config;
use converge_server::{Controller, auth};

use crate::support::{ADMIN_PASSWORD, ManualClock, TENANT_PASSWORD, TestApp, config_text};

#[tokio::test]
async fn a_session_survives_a_server_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let cookie = {
        let first = TestApp::in_dir(dir.clone(), "").await;
        let cookie = first.login("tina", TENANT_PASSWORD).await;
        first.state.store.close().await;
        cookie
    };
    let second = TestApp::in_dir(dir, "").await;
    let reply = second.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["username"], "tina");
}

#[tokio::test]
async fn the_idle_timeout_sets_the_cookie_lifetime() {
    let app = TestApp::new().await;
    let reply = app
        .post(
            "/api/login",
            None,
            Some(serde_json::json!({ "username": "admin", "password": ADMIN_PASSWORD })),
        )
        .await;
    // Default idle timeout: 30 minutes.
    assert!(
        reply.set_cookie().unwrap().contains("Max-Age=1800"),
        "{:?}",
        reply.set_cookie()
    );
}

#[tokio::test]
async fn a_changed_password_ends_existing_sessions() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = TestApp::in_dir(dir.clone(), "").await;
    let cookie = first.login("admin", ADMIN_PASSWORD).await;
    first.state.store.close().await;

    // Same account, new password: the operator edited the config and restarted.
    let text = config_text(dir.path(), "").replace(
        crate::support::admin_hash(),
        &auth::hash_password("a brand new password").unwrap(),
    );
    let second = TestApp::with_config(dir, Config::parse(&text).unwrap()).await;
    let reply = second.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "your session has ended; sign in again");
    // And the session is gone from the store, not just refused once.
    let reply = second.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.error(), "sign in first");
}

#[tokio::test]
async fn a_removed_user_is_signed_out() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let first = TestApp::in_dir(dir.clone(), "").await;
    let cookie = first.login("tina", TENANT_PASSWORD).await;
    first.state.store.close().await;

    let text = config_text(dir.path(), "").replace("username = \"tina\"", "username = \"tom\"");
    let second = TestApp::with_config(dir, Config::parse(&text).unwrap()).await;
    assert_eq!(
        second.get("/api/me", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_active() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = Config::parse(&config_text(
        dir.path(),
        "[session]\nabsolute_lifetime_hours = 2\n",
    ))
    .unwrap();
    let clock = ManualClock::now();
    let controller = Controller::open_with_clock(config, clock.clone())
        .await
        .unwrap();
    let app = TestApp::with_controller(dir, controller);
    let cookie = app.login("admin", ADMIN_PASSWORD).await;

    let advance = |minutes: i64| clock.advance(time::Duration::minutes(minutes));
    advance(119);
    assert_eq!(
        app.get("/api/me", Some(&cookie)).await.status,
        StatusCode::OK
    );
    advance(2);
    let reply = app.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "your session has ended; sign in again");
}
