//! Sign-in, sign-out, `me`, throttling and bad input, through the real router.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::support::{ADMIN_PASSWORD, TENANT_PASSWORD, TestApp, request};

#[tokio::test]
async fn health_answers_without_a_session() {
    let app = TestApp::new().await;
    let reply = app.get("/api/health", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": "ok" }));
}

#[tokio::test]
async fn login_returns_the_user_and_a_locked_down_cookie() {
    let app = TestApp::new().await;
    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "tina", "password": TENANT_PASSWORD })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "username": "tina", "role": "tenant", "projects": ["blue"] })
    );
    let cookie = reply.set_cookie().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api", "Max-Age="] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains("Secure"),
        "no TLS configured, yet Secure: {cookie}"
    );
}

#[tokio::test]
async fn the_cookie_is_secure_when_configured() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir, "[session]\nsecure_cookie = true\n").await;
    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "admin", "password": ADMIN_PASSWORD })),
        )
        .await;
    assert!(reply.set_cookie().unwrap().contains("Secure"));
}

#[tokio::test]
async fn me_tells_who_is_signed_in() {
    let app = TestApp::new().await;
    let cookie = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({ "username": "admin", "role": "admin", "projects": [] })
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = TestApp::new().await;
    let wrong = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "admin", "password": "nope" })),
        )
        .await;
    let unknown = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "mallory", "password": "nope" })),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(wrong.error(), "wrong username or password");
    assert!(wrong.set_cookie().is_none() && unknown.set_cookie().is_none());
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_a_retry_time() {
    let app = TestApp::new().await;
    // The test config allows 3 failures per user in 120 s.
    for _ in 0..3 {
        let reply = app
            .post(
                "/api/login",
                None,
                Some(json!({ "username": "admin", "password": "guess" })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits: the throttle does not reveal it.
    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "admin", "password": ADMIN_PASSWORD })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    let retry_after: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=120).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(
        reply
            .error()
            .contains(&format!("try again in {retry_after} s")),
        "{}",
        reply.error()
    );
    assert!(reply.set_cookie().is_none());
    // Another user from the same address still has budget left (6 per address).
    app.login("tina", TENANT_PASSWORD).await;
}

#[tokio::test]
async fn one_address_guessing_many_names_is_throttled() {
    let app = TestApp::new().await;
    for i in 0..6 {
        let reply = app
            .post(
                "/api/login",
                None,
                Some(json!({ "username": format!("user{i}"), "password": "x" })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "tina", "password": TENANT_PASSWORD })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = TestApp::new().await;
    let cookie = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.post("/api/logout", Some(&cookie), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // The reply clears the cookie, and a copy kept by someone else no longer works.
    assert!(reply.set_cookie().unwrap().contains("Max-Age=0"));
    let reply = app.get("/api/me", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "sign in first");
}

#[tokio::test]
async fn login_issues_a_new_session_id() {
    let app = TestApp::new().await;
    let first = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app
        .post(
            "/api/login",
            Some(&first),
            Some(json!({ "username": "tina", "password": TENANT_PASSWORD })),
        )
        .await;
    let second = reply.session_cookie().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        app.get("/api/me", Some(&first)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/me", Some(&second)).await.json()["username"],
        "tina"
    );
}

#[tokio::test]
async fn every_api_route_but_health_and_login_refuses_anonymous_callers() {
    let app = TestApp::new().await;
    // Every route the API serves, with the method it serves it under.
    let protected = [
        (Method::GET, "/api/me"),
        (Method::POST, "/api/logout"),
        (Method::GET, "/api/hosts"),
        (Method::GET, "/api/vms"),
        (Method::GET, "/api/migrations"),
        (Method::POST, "/api/migrations"),
        (Method::GET, "/api/migrations/m1"),
        (Method::POST, "/api/migrations/m1/abort"),
        (Method::GET, "/api/events"),
        (Method::PATCH, "/api/migrations/m1"),
        (Method::GET, "/api/history"),
        (Method::GET, "/api/presets"),
        (Method::GET, "/api/audit"),
    ];
    for (method, path) in protected {
        let reply = app.send(request(method.clone(), path, None, None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(reply.error(), "sign in first", "{method} {path}");
    }
    // A forged or stale cookie is no better than none.
    let forged = "converge_session=AAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        app.get("/api/me", Some(forged)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn unknown_api_paths_get_a_json_404_not_the_dashboard() {
    let app = TestApp::new().await;
    let reply = app.get("/api/no-such-thing", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no such API route");
}

#[tokio::test]
async fn malformed_json_is_a_400_with_the_reason() {
    let app = TestApp::new().await;
    let reply = app
        .post_raw(
            "/api/login",
            "application/json",
            "{\"username\": \"admin\", ",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error().starts_with("request body is not valid JSON"),
        "{}",
        reply.error()
    );
}

#[tokio::test]
async fn missing_or_wrong_fields_are_a_422_naming_them() {
    let app = TestApp::new().await;
    let reply = app
        .post("/api/login", None, Some(json!({ "username": "admin" })))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.error().contains("missing field `password`"),
        "{}",
        reply.error()
    );

    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": 7, "password": "x" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("username"), "{}", reply.error());

    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "", "password": "" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.error(), "give both a username and a password");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let app = TestApp::new().await;
    let reply = app
        .post_raw(
            "/api/login",
            "application/x-www-form-urlencoded",
            "username=admin&password=x",
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.error().contains("application/json"));
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let app = TestApp::new().await;
    let huge = "x".repeat(100 * 1024);
    let reply = app
        .post(
            "/api/login",
            None,
            Some(json!({ "username": "admin", "password": huge })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn json_answers_are_compressed_when_asked() {
    let app = TestApp::new().await;
    let cookie = app.login("tina", TENANT_PASSWORD).await;
    let reply = app
        .send(
            Request::get("/api/me")
                .header(header::COOKIE, &cookie)
                .header(header::ACCEPT_ENCODING, "gzip")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_ENCODING], "gzip");
}
