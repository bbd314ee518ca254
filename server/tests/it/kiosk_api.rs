//! Kiosk tokens: made by admins, shown once, stored hashed, read-only for the screen that
//! uses one, and revoked for good — including the streams already open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use converge_server::routes::ROUTES;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_PASSWORD, LiveServer, Reply, TENANT_PASSWORD, TestApp, request, sha256_hex,
};

const INVALID_LINK: &str =
    "this kiosk link is not valid (revoked, or mistyped); ask an admin for a new one";

/// `POST /api/kiosk-tokens` as `admin`; the token's id and its secret.
async fn create_token(app: &TestApp, admin: &str, label: &str) -> (i64, String) {
    let reply = app
        .post(
            "/api/kiosk-tokens",
            Some(admin),
            Some(json!({ "label": label })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    (
        created["token"]["id"].as_i64().unwrap(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn kiosk_sign_in(app: &TestApp, secret: &str) -> Reply {
    app.post("/api/kiosk/session", None, Some(json!({ "token": secret })))
        .await
}

/// Signs a screen in with `secret`; its session cookie.
async fn kiosk_cookie(app: &TestApp, secret: &str) -> String {
    let reply = kiosk_sign_in(app, secret).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
        .session_cookie()
        .expect("a kiosk sign-in sets a cookie")
}

async fn tokens(app: &TestApp, admin: &str) -> Vec<Value> {
    let reply = app.get("/api/kiosk-tokens", Some(admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json().as_array().unwrap().clone()
}

/// `(actor, action, details, result)` of every audit row, newest first.
async fn audit_rows(app: &TestApp, admin: &str) -> Vec<(String, String, String, String)> {
    let reply = app.get("/api/audit?limit=500", Some(admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
            (
                text("actor"),
                text("action"),
                text("details"),
                text("result"),
            )
        })
        .collect()
}

use converge_testkit::now_ms;

/// Every file of the SQLite database (main file, WAL, shared memory), concatenated.
fn database_bytes(app: &TestApp) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let is_db = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("converge.db"));
        if is_db {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!all.is_empty(), "found the database files");
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn an_admin_makes_a_token_whose_secret_is_shown_once_and_stored_as_its_hash() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let before_ms = now_ms();
    let reply = app
        .post(
            "/api/kiosk-tokens",
            Some(&admin),
            Some(json!({ "label": "NOC wall" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.len() >= 32 && secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "a long, URL-safe secret: {secret:?}"
    );
    assert_eq!(created["path"], format!("/kiosk#token={secret}"));
    let token = &created["token"];
    let id = token["id"].as_i64().unwrap();
    assert_eq!(token["label"], "NOC wall");
    assert_eq!(token["created_by"], "admin");
    assert_eq!(token["last_used_at_ms"], Value::Null);
    assert_eq!(token["revoked_at_ms"], Value::Null);
    let created_at = token["created_at_ms"].as_i64().unwrap();
    assert!((before_ms..=now_ms()).contains(&created_at), "{created_at}");

    // The list: the same token, with no secret in any field.
    let list = app.get("/api/kiosk-tokens", Some(&admin)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        !list.text().contains(&secret),
        "the secret leaked into the list: {}",
        list.text()
    );
    assert!(!list.text().contains(&sha256_hex(&secret)));
    let listed = list.json();
    assert_eq!(
        listed,
        json!([token]),
        "the list shows the token as created"
    );
    let mut keys: Vec<&str> = listed[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at_ms",
            "created_by",
            "expires_at_ms",
            "id",
            "label",
            "last_used_at_ms",
            "revoked_at_ms"
        ]
    );

    // The table holds the SHA-256, never the secret.
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, label, secret_sha256 FROM kiosk_tokens")
            .fetch_all(&app.db().await)
            .await
            .unwrap();
    assert_eq!(rows, [(id, "NOC wall".to_owned(), sha256_hex(&secret))]);
    let holding_secret: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM kiosk_tokens WHERE secret_sha256 = ?1 OR label = ?1 \
         OR created_by = ?1",
    )
    .bind(&secret)
    .fetch_one(&app.db().await)
    .await
    .unwrap();
    assert_eq!(holding_secret, 0);

    // Nor is it anywhere else on disk or in the audit log, even after a screen used it.
    kiosk_cookie(&app, &secret).await;
    assert!(!contains(&database_bytes(&app), &secret));
    let audit = app.get("/api/audit", Some(&admin)).await;
    assert!(!audit.text().contains(&secret), "{}", audit.text());
}

#[tokio::test]
async fn a_screen_signs_in_with_the_token_and_can_only_read() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (id, secret) = create_token(&app, &admin, "NOC wall").await;

    let before_ms = now_ms();
    let reply = kiosk_sign_in(&app, &secret).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "username": "kiosk:NOC wall", "role": "kiosk", "projects": [] })
    );
    let set_cookie = reply.set_cookie().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    let kiosk = reply.session_cookie().unwrap();

    let me = app.get("/api/me", Some(&kiosk)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["role"], "kiosk");
    assert_eq!(me.json()["username"], "kiosk:NOC wall");

    // The board's reads.
    for path in ["/api/hosts", "/api/vms", "/api/migrations", "/api/history"] {
        let reply = app.get(path, Some(&kiosk)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        assert!(reply.json().is_array(), "{path}");
    }

    // Every route, walked from the server's own table so that a new route needs a row.
    enum Expect {
        Allowed(StatusCode),
        Forbidden,
        Skipped(&'static str),
    }
    use Expect::{Allowed, Forbidden, Skipped};
    let expectations: &[(&str, &str, Expect, Option<Value>)] = &[
        ("GET", "/health", Allowed(StatusCode::OK), None),
        (
            "POST",
            "/login",
            Skipped("public: signs in someone else"),
            None,
        ),
        (
            "POST",
            "/logout",
            Skipped("ends the session; see the stream test"),
            None,
        ),
        ("GET", "/me", Allowed(StatusCode::OK), None),
        (
            "GET",
            "/events",
            Skipped("a stream; see the stream test"),
            None,
        ),
        ("GET", "/hosts", Allowed(StatusCode::OK), None),
        ("GET", "/vms", Allowed(StatusCode::OK), None),
        ("GET", "/migrations", Allowed(StatusCode::OK), None),
        (
            "POST",
            "/migrations",
            Forbidden,
            Some(json!({ "vm_uuid": "00000000-0000-0000-0000-000000000001", "destination": "b" })),
        ),
        (
            "GET",
            "/migrations/{id}",
            Allowed(StatusCode::NOT_FOUND),
            None,
        ),
        (
            "PATCH",
            "/migrations/{id}",
            Forbidden,
            Some(json!({ "lever": "downtime_limit", "ms": 500 })),
        ),
        ("POST", "/migrations/{id}/abort", Forbidden, None),
        ("GET", "/history", Allowed(StatusCode::OK), None),
        ("GET", "/presets", Forbidden, None),
        ("GET", "/audit", Forbidden, None),
        ("GET", "/kiosk-tokens", Forbidden, None),
        (
            "POST",
            "/kiosk-tokens",
            Forbidden,
            Some(json!({ "label": "made by a screen" })),
        ),
        ("DELETE", "/kiosk-tokens/{id}", Forbidden, None),
        (
            "POST",
            "/kiosk/session",
            Skipped("public: the sign-in itself"),
            None,
        ),
        ("GET", "/tenant/vms", Forbidden, None),
        ("GET", "/tenant/vms/{uuid}", Forbidden, None),
        ("GET", "/drains", Allowed(StatusCode::OK), None),
        (
            "POST",
            "/drains",
            Forbidden,
            Some(json!({ "hosts": ["a"], "dry_run": true })),
        ),
        ("GET", "/drains/{id}", Allowed(StatusCode::NOT_FOUND), None),
        ("POST", "/drains/{id}/pause", Forbidden, None),
        ("POST", "/drains/{id}/resume", Forbidden, None),
        ("POST", "/drains/{id}/cancel", Forbidden, None),
        (
            "POST",
            "/drains/{id}/vms/{uuid}",
            Forbidden,
            Some(json!({ "action": "skip" })),
        ),
    ];
    for route in ROUTES {
        let row = expectations
            .iter()
            .find(|(method, path, ..)| *method == route.method && *path == route.path);
        let Some((_, _, expect, body)) = row else {
            panic!(
                "{} /api{}: add a row saying what a kiosk may do with it",
                route.method, route.path
            );
        };
        if let Skipped(why) = expect {
            println!(
                "kiosk: {} /api{} not checked here: {why}",
                route.method, route.path
            );
            continue;
        }
        // The kiosk's own token for `{id}` of a kiosk token: revoking itself must fail too.
        let path = format!("/api{}", route.path)
            .replace("/kiosk-tokens/{id}", &format!("/kiosk-tokens/{id}"))
            .replace("{id}", "m-none")
            .replace("{uuid}", "00000000-0000-0000-0000-000000000001");
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let reply = app
            .send(request(method, &path, Some(&kiosk), body.clone()))
            .await;
        match expect {
            Allowed(status) => assert_eq!(
                reply.status,
                *status,
                "{} {path}: {}",
                route.method,
                reply.text()
            ),
            Forbidden => {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{} {path}: {}",
                    route.method,
                    reply.text()
                );
                assert_eq!(reply.error(), "your role does not allow this");
            }
            Skipped(_) => unreachable!(),
        }
    }
    assert_eq!(
        expectations.len(),
        ROUTES.len(),
        "a row for a route that no longer exists"
    );

    // None of that changed anything: the token is live, the screen still signed in.
    let listed = tokens(&app, &admin).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["revoked_at_ms"], Value::Null);
    assert_eq!(
        app.get("/api/me", Some(&kiosk)).await.status,
        StatusCode::OK
    );
    let by_screen: Vec<_> = audit_rows(&app, &admin)
        .await
        .into_iter()
        .filter(|(actor, ..)| actor.starts_with("kiosk:"))
        .collect();
    assert_eq!(
        by_screen,
        [(
            "kiosk:NOC wall".to_owned(),
            "kiosk_sign_in".to_owned(),
            format!("token {id}"),
            "ok".to_owned()
        )]
    );

    // The sign-in was noted as the token's last use, in memory and on disk.
    let used = listed[0]["last_used_at_ms"]
        .as_i64()
        .expect("last_used_at_ms is set after a sign-in");
    assert!((before_ms..=now_ms()).contains(&used), "{used}");
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT last_used_at_ms FROM kiosk_tokens WHERE id = ?")
            .bind(id)
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(stored, Some(used));
}

#[tokio::test]
async fn revoking_a_token_signs_its_screen_out_for_good() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir.clone(), "").await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (id, secret) = create_token(&app, &admin, "NOC wall").await;
    let (other_id, other_secret) = create_token(&app, &admin, "Lobby").await;
    let kiosk = kiosk_cookie(&app, &secret).await;
    let other_kiosk = kiosk_cookie(&app, &other_secret).await;
    assert_eq!(
        app.get("/api/hosts", Some(&kiosk)).await.status,
        StatusCode::OK
    );

    let before_ms = now_ms();
    let reply = app
        .delete(&format!("/api/kiosk-tokens/{id}"), Some(&admin))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert!(reply.body.is_empty());

    // The screen's very next request is refused, and its session is gone.
    let reply = app.get("/api/hosts", Some(&kiosk)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(reply.error(), "your session has ended; sign in again");
    assert_eq!(
        app.get("/api/me", Some(&kiosk)).await.error(),
        "sign in first"
    );
    // The same link no longer signs in.
    let reply = kiosk_sign_in(&app, &secret).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), INVALID_LINK);
    assert!(reply.error().contains("kiosk link"));
    assert!(reply.set_cookie().is_none());
    // The other screen is untouched.
    assert_eq!(
        app.get("/api/hosts", Some(&other_kiosk)).await.status,
        StatusCode::OK
    );

    // Twice is a conflict; an unknown id is not found.
    let reply = app
        .delete(&format!("/api/kiosk-tokens/{id}"), Some(&admin))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.error().contains("already revoked"),
        "{}",
        reply.error()
    );
    let reply = app.delete("/api/kiosk-tokens/424242", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error().contains("424242"), "{}", reply.error());

    // The list shows when it was revoked.
    let listed = tokens(&app, &admin).await;
    let revoked = listed.iter().find(|t| t["id"] == id).unwrap();
    let revoked_at = revoked["revoked_at_ms"].as_i64().expect("revoked_at_ms");
    assert!((before_ms..=now_ms()).contains(&revoked_at));
    let live = listed.iter().find(|t| t["id"] == other_id).unwrap();
    assert_eq!(live["revoked_at_ms"], Value::Null);

    // Both acts are in the audit log, under the admin's name.
    let rows = audit_rows(&app, &admin).await;
    let find = |action: &str, details: &str| {
        rows.iter()
            .find(|(_, a, d, _)| a == action && d == details)
            .unwrap_or_else(|| panic!("no {action} row \"{details}\" in {rows:#?}"))
            .clone()
    };
    let (actor, _, _, result) = find("kiosk_token_create", "label \"NOC wall\"");
    assert_eq!(
        (actor.as_str(), result.as_str()),
        ("admin", &*format!("ok (token {id})"))
    );
    find("kiosk_token_revoke", &format!("token {id} (\"NOC wall\")"));
    // The revocation, and the refused second attempt, each with its result.
    let mut revocations: Vec<(&str, &str)> = rows
        .iter()
        .filter(|(_, a, ..)| a == "kiosk_token_revoke")
        .map(|(actor, _, _, result)| (actor.as_str(), result.as_str()))
        .collect();
    revocations.sort_unstable();
    assert_eq!(
        revocations,
        [("admin", "ok"), ("admin", "refused: already revoked")]
    );

    // A restart keeps it revoked (and the other one live).
    app.state.store.close().await;
    let restarted = TestApp::in_dir(dir, "").await;
    let reply = kiosk_sign_in(&restarted, &secret).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), INVALID_LINK);
    assert_eq!(
        kiosk_sign_in(&restarted, &other_secret).await.status,
        StatusCode::OK
    );
}

/// Opens `GET /api/events` over a real socket; the response once its headers are in.
async fn open_stream(url: &str, cookie: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(format!("{url}/api/events"))
        .header(header::COOKIE.as_str(), cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Reads `response` until its body ends cleanly; the time since `since`. Fails the test
/// if it is still open after `limit` or breaks instead of ending.
async fn ends_within(mut response: reqwest::Response, since: Instant, limit: Duration) -> Duration {
    let read_to_end = async {
        loop {
            match response.chunk().await {
                // A keep-alive comment or an event: still open.
                Ok(Some(_)) => {}
                Ok(None) => return Ok(since.elapsed()),
                Err(err) => return Err(err),
            }
        }
    };
    match tokio::time::timeout(limit, read_to_end).await {
        Ok(Ok(took)) => took,
        Ok(Err(err)) => panic!("the stream broke instead of ending: {err}"),
        Err(_) => panic!("the stream is still open {limit:?} later"),
    }
}

/// Whether `response`'s body is still open (nothing, not even its end, within `wait`).
async fn still_open(response: &mut reqwest::Response, wait: Duration) -> bool {
    loop {
        match tokio::time::timeout(wait, response.chunk()).await {
            Err(_) => return true,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return false,
        }
    }
}

#[tokio::test]
async fn revoking_a_token_ends_its_open_stream_within_seconds() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (id, secret) = create_token(&app, &admin, "NOC wall").await;
    let (_, other_secret) = create_token(&app, &admin, "Lobby").await;
    let kiosk = kiosk_cookie(&app, &secret).await;
    let other_kiosk = kiosk_cookie(&app, &other_secret).await;
    let stream = open_stream(&server.url, &kiosk).await;
    let mut other_stream = open_stream(&server.url, &other_kiosk).await;

    let revoked_at = Instant::now();
    let reply = app
        .delete(&format!("/api/kiosk-tokens/{id}"), Some(&admin))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let took = ends_within(stream, revoked_at, Duration::from_secs(6)).await;
    println!("kiosk stream ended {took:?} after its token was revoked");

    // The other screen's stream survives the next re-check.
    assert!(
        still_open(&mut other_stream, Duration::from_millis(2500)).await,
        "revoking one token ended another screen's stream"
    );
    server.stop().await;
}

#[tokio::test]
async fn signing_out_ends_the_sessions_open_stream_within_seconds() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let other_admin = app.login("admin", ADMIN_PASSWORD).await;
    let stream = open_stream(&server.url, &admin).await;
    let mut other_stream = open_stream(&server.url, &other_admin).await;

    let signed_out_at = Instant::now();
    let reply = app.post("/api/logout", Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let took = ends_within(stream, signed_out_at, Duration::from_secs(6)).await;
    println!("admin stream ended {took:?} after POST /api/logout");

    // Only that session's stream: the same user's other session keeps its stream.
    assert!(
        still_open(&mut other_stream, Duration::from_millis(2500)).await,
        "signing out one session ended another's stream"
    );
    server.stop().await;
}

#[tokio::test]
async fn only_admins_manage_tokens() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (id, _) = create_token(&app, &admin, "NOC wall").await;
    let operator = app.login("otto", ADMIN_PASSWORD).await;
    let tenant = app.login("tina", TENANT_PASSWORD).await;
    // An account of role kiosk in the config, signed in with a password.
    let kiosk_account = app.login("kiosk", ADMIN_PASSWORD).await;
    for (who, cookie) in [
        ("operator", &operator),
        ("tenant", &tenant),
        ("kiosk account", &kiosk_account),
    ] {
        let list = app.get("/api/kiosk-tokens", Some(cookie)).await;
        assert_eq!(list.status, StatusCode::FORBIDDEN, "{who}: {}", list.text());
        assert_eq!(list.error(), "your role does not allow this");
        let create = app
            .post(
                "/api/kiosk-tokens",
                Some(cookie),
                Some(json!({ "label": "mine" })),
            )
            .await;
        assert_eq!(create.status, StatusCode::FORBIDDEN, "{who}");
        let revoke = app
            .delete(&format!("/api/kiosk-tokens/{id}"), Some(cookie))
            .await;
        assert_eq!(revoke.status, StatusCode::FORBIDDEN, "{who}");
    }
    for (method, path) in [
        (Method::GET, "/api/kiosk-tokens".to_owned()),
        (Method::POST, "/api/kiosk-tokens".to_owned()),
        (Method::DELETE, format!("/api/kiosk-tokens/{id}")),
    ] {
        let body = (method == Method::POST).then(|| json!({ "label": "anon" }));
        let reply = app.send(request(method.clone(), &path, None, body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(reply.error(), "sign in first");
    }
    let listed = tokens(&app, &admin).await;
    assert_eq!(listed.len(), 1, "nobody else made one: {listed:?}");
    assert_eq!(listed[0]["revoked_at_ms"], Value::Null, "nor revoked it");
}

#[tokio::test]
async fn bad_labels_are_refused_and_create_nothing() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let too_long = "x".repeat(65);
    for label in [
        "",
        "   ",
        "\t\n",
        too_long.as_str(),
        "NOC\u{7}wall",
        "NOC\nwall",
        "NOC\u{1b}[31mwall",
        "NOC\u{85}wall",
    ] {
        let reply = app
            .post(
                "/api/kiosk-tokens",
                Some(&admin),
                Some(json!({ "label": label })),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{label:?}: {}",
            reply.text()
        );
        let error = reply.error();
        assert!(
            error.contains("label") && !error.is_empty(),
            "{label:?}: {error}"
        );
    }
    let reply = app
        .post("/api/kiosk-tokens", Some(&admin), Some(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.error().contains("label"), "{}", reply.error());

    // Nothing was made, recorded, or stored.
    assert_eq!(tokens(&app, &admin).await, Vec::<Value>::new());
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM kiosk_tokens")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    assert!(
        !audit_rows(&app, &admin)
            .await
            .iter()
            .any(|(_, action, ..)| action == "kiosk_token_create")
    );

    // The limits themselves are fine: 64 characters (not bytes), trimmed.
    let longest = "é".repeat(64);
    let (_, _) = create_token(&app, &admin, &longest).await;
    let (_, _) = create_token(&app, &admin, "  Lobby  ").await;
    let labels: Vec<Value> = tokens(&app, &admin)
        .await
        .iter()
        .map(|t| t["label"].clone())
        .collect();
    assert_eq!(labels, [json!("Lobby"), json!(longest)], "newest first");
}

#[tokio::test]
async fn wrong_tokens_are_refused_then_throttled() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (_, secret) = create_token(&app, &admin, "NOC wall").await;
    // A near miss, and an empty token.
    let mut near_miss = secret.clone();
    near_miss.pop();
    near_miss.push(if secret.ends_with('0') { '1' } else { '0' });
    for token in [near_miss.as_str(), ""] {
        let reply = kiosk_sign_in(&app, token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.error(), INVALID_LINK);
        assert!(reply.set_cookie().is_none());
    }
    let reply = app
        .post(
            "/api/kiosk/session",
            None,
            Some(json!({ "secret": secret })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );

    // The test config allows 6 failures per address in 120 s (a token names no account,
    // so only the address counts); the sixth wrong token is the last one answered, then
    // even the right one waits.
    for guess in ["guess 1", "guess 2", "guess 3", "guess 4"] {
        let reply = kiosk_sign_in(&app, guess).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{guess}");
    }
    for token in ["guess again", secret.as_str()] {
        let reply = kiosk_sign_in(&app, token).await;
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
        assert!(reply.error().contains("try again in"), "{}", reply.error());
        assert!(reply.set_cookie().is_none());
    }
}

/// Kiosk sign-in failures count against their address only: a few wrong tokens from one
/// place must not lock every wall screen out.
#[tokio::test]
async fn wrong_tokens_from_one_address_do_not_lock_out_other_screens() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = crate::support::config_text(dir.path(), "").replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let app = TestApp::with_config(
        dir,
        converge_server::config::Config::parse(&config).unwrap(),
    )
    .await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (_, secret) = create_token(&app, &admin, "NOC wall").await;
    let from = |addr: &'static str, token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move {
            app.send_with(
                Method::POST,
                "/api/kiosk/session",
                None,
                Some(json!({ "token": token })),
                &[("x-forwarded-for", addr)],
            )
            .await
        }
    };
    // Someone at 203.0.113.9 tries three made-up tokens…
    for guess in ["a", "b", "c"] {
        assert_eq!(
            from("203.0.113.9", guess).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // …which must not stop the real wall screen at 10.0.0.7 from signing in.
    let reply = from("10.0.0.7", &secret).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a screen with a valid token was refused because of another address's failures: {}",
        reply.text()
    );
}

/// Two revocations at once: the check and the update are one conditional statement,
/// so exactly one succeeds.
#[tokio::test]
async fn two_revokes_at_once_revoke_once() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let (id, _) = create_token(&app, &admin, "NOC wall").await;
    let path = format!("/api/kiosk-tokens/{id}");
    let (a, b) = tokio::join!(
        app.delete(&path, Some(&admin)),
        app.delete(&path, Some(&admin))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::CONFLICT],
        "one revoke succeeds, the other finds it already revoked"
    );
    // Both attempts are audited; one says it happened, the other why it did not.
    let mut results: Vec<String> = audit_rows(&app, &admin)
        .await
        .into_iter()
        .filter(|(_, action, ..)| action == "kiosk_token_revoke")
        .map(|(.., result)| result)
        .collect();
    results.sort();
    assert_eq!(results, ["ok", "refused: already revoked"]);
}

/// A token id that is not a number gets the API's JSON error, not axum's plain text.
#[tokio::test]
async fn a_token_id_that_is_not_a_number_gets_a_json_error() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app.delete("/api/kiosk-tokens/abc", Some(&admin)).await;
    assert!(
        reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
        "{}",
        reply.status
    );
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/json",
        "body: {}",
        reply.text()
    );
    assert!(!reply.error().is_empty());
}
