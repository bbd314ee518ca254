//! Hardening, round two: what a flood, a slow client or a rebinding page can and cannot
//! do. Each test here failed on the server before these limits existed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use converge_api::{LiveEvent, Resync};
use converge_server::Controller;
use converge_server::config::Config;
use converge_server::hub::Audience;
use converge_testkit::SseReader;
use futures_util::future::join_all;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    ADMIN_PASSWORD, LiveServer, ManualClock, Reply, TENANT_PASSWORD, TestApp, config_text,
    http_login,
};

/// An app whose config has `extra` inserted at the top of `[server]` (or any other
/// section text given with its header).
async fn app_with(server_settings: &str, extra: &str) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = config_text(dir.path(), extra)
        .replace("[server]\n", &format!("[server]\n{server_settings}"));
    TestApp::with_config(dir, Config::parse(&text).unwrap()).await
}

async fn sign_in(app: &TestApp, username: &str, password: &str, from: Option<&str>) -> Reply {
    let body = json!({ "username": username, "password": password });
    let headers: Vec<(&str, &str)> = from.map(|a| ("x-forwarded-for", a)).into_iter().collect();
    app.send_with(Method::POST, "/api/login", None, Some(body), &headers)
        .await
}

fn count(replies: &[Reply], status: StatusCode) -> usize {
    replies.iter().filter(|r| r.status == status).count()
}

#[tokio::test]
async fn concurrent_wrong_passwords_are_checked_no_more_than_the_limit() {
    // The test config allows 3 failures per username (and 6 per address).
    let app = TestApp::new().await;
    let replies = join_all((0..200).map(|n| {
        let app = &app;
        async move { sign_in(app, "admin", &format!("wrong-{n}"), None).await }
    }))
    .await;
    assert_eq!(
        count(&replies, StatusCode::UNAUTHORIZED),
        3,
        "exactly the limit were checked; the first version checked dozens"
    );
    assert_eq!(count(&replies, StatusCode::TOO_MANY_REQUESTS), 197);
    let checks = &app.state.password_checks;
    assert!(
        checks.peak_running() <= checks.slots(),
        "{}",
        checks.peak_running()
    );
    assert!(
        checks.memory_areas() <= checks.slots(),
        "{}",
        checks.memory_areas()
    );
    // The right password is refused too while the name is locked, and only the three
    // checked guesses were audited.
    let reply = sign_in(&app, "admin", ADMIN_PASSWORD, None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit WHERE action = 'sign_in' AND result LIKE 'refused%'",
    )
    .fetch_one(&app.db().await)
    .await
    .unwrap();
    assert_eq!(rows, 3);
}

#[tokio::test]
async fn a_burst_of_many_names_waits_in_a_bounded_line_and_memory_stays_at_the_bound() {
    // Many names from one address: lift the per-address limit for this test.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = config_text(dir.path(), "").replace(
        "max_failures_per_address = 6",
        "max_failures_per_address = 10000",
    );
    let app = TestApp::with_config(dir, Config::parse(&text).unwrap()).await;
    let replies = join_all((0..200).map(|n| {
        let app = &app;
        async move { sign_in(app, &format!("user-{n}"), "wrong", None).await }
    }))
    .await;
    let checked = count(&replies, StatusCode::UNAUTHORIZED);
    let busy: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(checked + busy.len(), 200, "every answer is 401 or 429");
    // 4 slots + 16 waiting: the rest is refused at once, holding nothing.
    let checks = &app.state.password_checks;
    assert!(
        checks.peak_in_line() <= 20,
        "{} at once",
        checks.peak_in_line()
    );
    assert!(!busy.is_empty(), "{checked} checked, none refused as busy");
    assert_eq!(busy[0].headers["retry-after"], "1");
    assert!(busy[0].error().contains("busy"), "{}", busy[0].error());
    assert!(checks.peak_running() <= checks.slots());
    assert!(checks.memory_areas() <= checks.slots());
    assert_eq!(
        checks.memory_bound_bytes(),
        checks.slots() * 19 * 1024 * 1024,
        "slots × the default argon2 memory cost (19 MiB)"
    );
    // A busy refusal was not counted against the name: it can sign in at once.
    assert_eq!(
        sign_in(&app, "admin", ADMIN_PASSWORD, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // No trusted proxies: six failures under six invented addresses are the peer's six.
    let app = TestApp::new().await;
    for n in 0..6 {
        let from = format!("203.0.113.{n}");
        let reply = sign_in(&app, &format!("u{n}"), "wrong", Some(&from)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = sign_in(&app, "u7", "wrong", Some("203.0.113.99")).await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed X-Forwarded-For is ignored"
    );

    // Behind a trusted proxy (the test peer, 127.0.0.1), the header names the client.
    let proxied = app_with("trusted_proxies = [\"127.0.0.1\"]\n", "").await;
    for n in 0..8 {
        let from = format!("198.51.100.7, 203.0.113.{n}");
        let reply = sign_in(&proxied, &format!("u{n}"), "wrong", Some(&from)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "client {n}");
    }
    let audit: Vec<String> = sqlx::query_scalar("SELECT client_addr FROM audit ORDER BY id")
        .fetch_all(&proxied.db().await)
        .await
        .unwrap();
    assert_eq!(audit[0], "203.0.113.0", "the rightmost untrusted entry");
}

#[tokio::test]
async fn a_request_for_a_foreign_host_is_refused_before_anything_else() {
    let app = TestApp::new().await;
    let evil = [
        ("host", "evil.test:8080"),
        ("origin", "http://evil.test:8080"),
    ];
    let body = json!({ "username": "admin", "password": ADMIN_PASSWORD });
    let reply = app
        .send_with(Method::POST, "/api/login", None, Some(body.clone()), &evil)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::MISDIRECTED_REQUEST,
        "{}",
        reply.text()
    );
    assert!(reply.error().contains("evil.test"), "{}", reply.error());
    assert!(
        reply.error().contains("server.allowed_hosts"),
        "{}",
        reply.error()
    );
    assert!(reply.set_cookie().is_none());
    for path in ["/", "/api/health", "/kiosk"] {
        let reply = app.send_with(Method::GET, path, None, None, &evil).await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    // Our own names on any port pass.
    for host in ["localhost:9999", "127.0.0.1", "[::1]:8080"] {
        let reply = app
            .send_with(Method::GET, "/api/health", None, None, &[("host", host)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
    }
    // Nothing reached the sign-in handler.
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(audit, 0);
}

#[tokio::test]
async fn api_answers_are_not_stored_and_query_errors_are_json() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.get("/api/health", None).await;
    assert_eq!(reply.headers["cache-control"], "no-store");
    let reply = app.get("/api/history?limit=abc", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert!(reply.error().contains("query string"), "{}", reply.error());
    let reply = app
        .get("/api/audit?limit=99999999999999999999999", Some(&admin))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("query string"), "{}", reply.error());
}

/// Reads until the server closes the connection; how long that took.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_dropped_at_the_header_timeout() {
    let app = app_with("header_timeout_s = 1\n", "").await;
    let server = LiveServer::start(app.controller()).await;
    let addr = server.url.trim_start_matches("http://").to_owned();

    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let held = time_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(held >= Duration::from_millis(900), "closed after {held:?}");

    // A keep-alive connection that asks nothing more is closed the same way.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    time_until_closed(&mut idle, Duration::from_secs(10)).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_answered_503() {
    let app = app_with("max_connections_per_address = 2\n", "").await;
    let server = LiveServer::start(app.controller()).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    // Give the accept loop a moment to take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // One place freed: a new connection is served.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = reqwest::get(format!("{}/api/health", server.url))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn one_stream_more_than_the_limit_is_refused_and_the_open_ones_go_on() {
    let app = app_with("", "[events]\nmax_streams_per_principal = 2\n").await;
    let server = LiveServer::start(app.controller()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let first = SseReader::open(&server.url, &cookie, None).await;
    let second = SseReader::open(&server.url, &cookie, None).await;
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 200));
    let refused = reqwest::Client::new()
        .get(format!("{}/api/events", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("already open"),
        "{body}"
    );
    // Another account is not affected by this one's streams.
    let otto = http_login(&server.url, "otto", ADMIN_PASSWORD).await;
    assert_eq!(SseReader::open(&server.url, &otto, None).await.status, 200);
    // The open ones still carry events; closing one makes room.
    let mut reader = first.reader;
    app.state.hub.publish(
        Audience::Fleet,
        &LiveEvent::Resync(Resync {
            reason: "still here".into(),
        }),
    );
    assert!(reader.next().await.unwrap().data.contains("still here"));
    drop(second);
    let mut reopened = None;
    for _ in 0..50 {
        let opened = SseReader::open(&server.url, &cookie, None).await;
        if opened.status == 200 {
            reopened = Some(opened);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed stream gives its place back");
    server.stop().await;
}

#[tokio::test]
async fn signing_out_ends_the_sessions_streams_at_once() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let mut reader = SseReader::open(&server.url, &cookie, None).await.reader;
    let started = Instant::now();
    let out = reqwest::Client::new()
        .post(format!("{}/api/logout", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(reader.next().await.is_none(), "the stream ended");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_hostile_last_event_id_gets_a_resync_not_a_crash() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let opened = SseReader::open(&server.url, &cookie, Some(u64::MAX)).await;
    assert_eq!(opened.status, 200);
    let mut reader = opened.reader;
    let first = reader.next().await.unwrap();
    assert_eq!(first.event, "resync");
    server.stop().await;
}

#[tokio::test]
async fn tenant_event_ids_count_their_projects_only() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let tina = http_login(&server.url, "tina", TENANT_PASSWORD).await;
    let mut stream = SseReader::open(&server.url, &tina, None).await.reader;
    let marker = |text: &str| {
        LiveEvent::Resync(Resync {
            reason: text.into(),
        })
    };
    for n in 0..50 {
        app.state
            .hub
            .publish(Audience::Fleet, &marker(&format!("fleet {n}")));
    }
    app.state
        .hub
        .publish(Audience::Project("green".into()), &marker("green"));
    app.state
        .hub
        .publish(Audience::Project("blue".into()), &marker("blue 1"));
    let event = stream.next().await.unwrap();
    assert!(event.data.contains("blue 1"), "{event:?}");
    assert_eq!(
        event.id.as_deref(),
        Some("1"),
        "nothing of the fleet's 50 events shows"
    );
    drop(stream);
    for n in 2..=3 {
        app.state.hub.publish(
            Audience::Project("blue".into()),
            &marker(&format!("blue {n}")),
        );
    }
    let mut resumed = SseReader::open_after(&server.url, &tina, Some("1"))
        .await
        .reader;
    for n in 2..=3 {
        let event = resumed.next().await.unwrap();
        assert!(event.data.contains(&format!("blue {n}")), "{event:?}");
        assert_eq!(event.id, Some(n.to_string()));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_kiosk_link_can_expire_and_then_opens_nothing() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    // Sessions outlive the link here, so that it is the link's expiry that ends one.
    let extra = "[session]\nabsolute_lifetime_hours = 48\n";
    let config = Config::parse(&config_text(dir.path(), extra)).unwrap();
    let clock = ManualClock::now();
    let controller = Controller::open_with_clock(config, clock.clone())
        .await
        .unwrap();
    let app = TestApp::with_controller(dir, controller);
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let refused = app
        .post(
            "/api/kiosk-tokens",
            Some(&admin),
            Some(json!({ "label": "wall", "expires_in_days": 0 })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.error().contains("expires_in_days"),
        "{}",
        refused.error()
    );

    let created = app
        .post(
            "/api/kiosk-tokens",
            Some(&admin),
            Some(json!({ "label": "wall", "expires_in_days": 1 })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let created = created.json();
    let made_at = created["token"]["created_at_ms"].as_i64().unwrap();
    assert_eq!(
        created["token"]["expires_at_ms"].as_i64(),
        Some(made_at + 86_400_000)
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    let screen = app
        .post("/api/kiosk/session", None, Some(json!({ "token": secret })))
        .await;
    assert_eq!(screen.status, StatusCode::OK);
    let screen = screen.session_cookie().unwrap();
    assert_eq!(
        app.get("/api/migrations", Some(&screen)).await.status,
        StatusCode::OK
    );

    clock.advance(time::Duration::hours(25));
    assert_eq!(
        app.get("/api/migrations", Some(&screen)).await.status,
        StatusCode::UNAUTHORIZED,
        "the screen's session ends with its link"
    );
    let again = app
        .post("/api/kiosk/session", None, Some(json!({ "token": secret })))
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}
