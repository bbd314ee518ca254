//! What protects the dashboard from other sites and from hostile input: the cross-site
//! request check, the security headers and CSP, the body limit, and config validation.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use converge_server::config::Config;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{ADMIN_PASSWORD, LiveServer, Reply, TestApp, config_text};

const HOST: &str = "127.0.0.1:8080";
const EVIL: &str = "http://evil.example";

fn good_login() -> Value {
    json!({ "username": "admin", "password": ADMIN_PASSWORD })
}

async fn login_with(app: &TestApp, headers: &[(&str, &str)]) -> Reply {
    app.send_with(
        Method::POST,
        "/api/login",
        None,
        Some(good_login()),
        headers,
    )
    .await
}

async fn audit_len(app: &TestApp, admin: &str) -> usize {
    let reply = app.get("/api/audit?limit=500", Some(admin)).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json().as_array().unwrap().len()
}

#[tokio::test]
async fn a_sign_in_from_another_origin_is_refused_before_anything_happens() {
    let app = TestApp::new().await;
    let reply = login_with(&app, &[("host", HOST), ("origin", EVIL)]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    let error = reply.error();
    assert!(error.contains(EVIL), "{error}");
    assert!(error.contains("server.allowed_origins"), "{error}");
    assert!(
        reply.set_cookie().is_none(),
        "no session for a refused request"
    );

    let reply = login_with(&app, &[("host", HOST), ("sec-fetch-site", "cross-site")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(reply.error().contains("cross-site"), "{}", reply.error());
    // A sibling site is another site too, and so is an opaque origin.
    let reply = login_with(&app, &[("host", HOST), ("sec-fetch-site", "same-site")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = login_with(&app, &[("host", HOST), ("origin", "null")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // The same host on another port is another origin.
    let reply = login_with(&app, &[("host", HOST), ("origin", "http://127.0.0.1:8081")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // None of the refused attempts reached the handler: nothing audited, nothing throttled.
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let log = app.get("/api/audit", Some(&admin)).await.json();
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["action"], "sign_in");
    assert_eq!(log[0]["result"], "ok");
}

#[tokio::test]
async fn the_dashboards_own_origin_passes() {
    let app = TestApp::new().await;
    let origin = format!("http://{HOST}");
    let reply = login_with(
        &app,
        &[
            ("host", HOST),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.session_cookie().is_some());
    // Case does not matter in a host name; a typed URL (`none`) and header-less clients pass.
    let reply = login_with(
        &app,
        &[
            ("host", "LocalHost:8080"),
            ("origin", "http://localhost:8080"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = login_with(&app, &[("host", HOST), ("sec-fetch-site", "none")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = login_with(&app, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_browser_on_the_real_socket_passes_with_its_own_origin() {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    let client = reqwest::Client::new();
    let send = |origin: &str, site: &str| {
        client
            .post(format!("{}/api/login", server.url))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .json(&good_login())
            .send()
    };
    // reqwest sends `Host: 127.0.0.1:<port>`, which is what the server's URL says.
    let own = send(&server.url, "same-origin").await.unwrap();
    assert_eq!(own.status(), 200);
    let foreign = send(EVIL, "cross-site").await.unwrap();
    assert_eq!(foreign.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn a_cross_site_form_cannot_start_a_migration_or_sign_out() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let operator = app.login("otto", ADMIN_PASSWORD).await;
    let audited = audit_len(&app, &admin).await;

    let form = |content_type: &'static str, body: &'static str, origin: Option<&'static str>| {
        let mut builder = Request::post("/api/migrations")
            .header(header::HOST, HOST)
            .header(header::COOKIE, &operator)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(origin) = origin {
            builder = builder
                .header(header::ORIGIN, origin)
                .header("sec-fetch-site", "cross-site");
        }
        builder.body(Body::from(body)).unwrap()
    };
    let reply = app
        .send(form(
            "application/x-www-form-urlencoded",
            "vm_uuid=00000000-0000-0000-0000-000000000001&destination=b",
            Some(EVIL),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(reply.error().contains("another site"), "{}", reply.error());
    // A `text/plain` form carrying JSON (no preflight either) is refused just the same.
    let reply = app
        .send(form(
            "text/plain",
            r#"{"vm_uuid":"00000000-0000-0000-0000-000000000001","destination":"b"}"#,
            Some(EVIL),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    // The check runs before the body is read: without the foreign headers the same form
    // gets the content-type refusal instead.
    let reply = app
        .send(form(
            "application/x-www-form-urlencoded",
            "vm_uuid=x&destination=b",
            None,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Nothing started, nothing recorded.
    let migrations = app.get("/api/migrations", Some(&operator)).await;
    assert_eq!(migrations.json(), json!([]));
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM migrations")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(audit_len(&app, &admin).await, audited);

    // Nor can another site sign the operator out, or revoke a kiosk token.
    let reply = app
        .send_with(
            Method::POST,
            "/api/logout",
            Some(&operator),
            None,
            &[("host", HOST), ("origin", EVIL)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/me", Some(&operator)).await.status,
        StatusCode::OK
    );
    let created = app
        .post(
            "/api/kiosk-tokens",
            Some(&admin),
            Some(json!({ "label": "NOC wall" })),
        )
        .await
        .json();
    let id = created["token"]["id"].as_i64().unwrap();
    let reply = app
        .send_with(
            Method::DELETE,
            &format!("/api/kiosk-tokens/{id}"),
            Some(&admin),
            None,
            &[
                ("host", HOST),
                ("origin", EVIL),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let listed = app.get("/api/kiosk-tokens", Some(&admin)).await.json();
    assert_eq!(listed[0]["revoked_at_ms"], Value::Null);
}

#[tokio::test]
async fn reads_from_another_origin_are_answered() {
    let app = TestApp::new().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let reply = app
        .send_with(
            Method::GET,
            "/api/me",
            Some(&admin),
            None,
            &[
                ("host", HOST),
                ("origin", EVIL),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["username"], "admin");
    let reply = app
        .send_with(
            Method::GET,
            "/api/health",
            None,
            None,
            &[("host", HOST), ("origin", EVIL)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_configured_origin_is_let_through() {
    const PROXIED: &str = "https://converge.example.org";
    let headers = [("host", "10.0.0.5:8080"), ("origin", PROXIED)];
    // The proxy sends its own address as Host: that must be an allowed host first.
    let proxied = "[server]\nallowed_hosts = [\"10.0.0.5\"]\n";
    // Without the setting, the proxy's origin is another site.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = config_text(dir.path(), "").replace("[server]\n", proxied);
    let plain = TestApp::with_config(dir, Config::parse(&text).unwrap()).await;
    let reply = login_with(&plain, &headers).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.error().contains(PROXIED), "{}", reply.error());

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = config_text(dir.path(), "").replace(
        "[server]\n",
        &format!("{proxied}allowed_origins = [\"{PROXIED}\"]\n"),
    );
    let config = Config::parse(&text).unwrap();
    assert_eq!(config.server.allowed_origins, [PROXIED]);
    let app = TestApp::with_config(dir, config).await;
    let reply = login_with(&app, &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = login_with(
        &app,
        &[
            ("host", "10.0.0.5:8080"),
            ("origin", PROXIED),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Only that origin: another one, or the same host over plain HTTP, is still refused.
    for other in ["https://evil.example.org", "http://converge.example.org"] {
        let reply = login_with(&app, &[("host", "10.0.0.5:8080"), ("origin", other)]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{other}");
    }
}

#[test]
fn an_allowed_origin_must_be_a_bare_origin() {
    for bad in [
        "converge.example.org",
        "https://x/path",
        "https://converge.example.org/",
        "https://",
        "ftp://converge.example.org",
        "https://x?y",
        "",
    ] {
        let text = format!("[server]\nallowed_origins = [\"{bad}\"]\n");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("server.allowed_origins[0]:"),
            "{bad:?}: {err}"
        );
        assert!(err.contains("scheme://host"), "{bad:?}: {err}");
    }
    let err =
        Config::parse("[server]\nallowed_origins = [\"https://ok.example.org\", \"http://a b\"]\n")
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("server.allowed_origins[1]:"), "{err}");
    for good in ["https://converge.example.org", "http://10.0.0.5:8080"] {
        let text = format!("[server]\nallowed_origins = [\"{good}\"]\n");
        assert!(Config::parse(&text).is_ok(), "{good}");
    }
}

// ---- Security headers and CSP ----

const BOOTSTRAP: &str = "import init, * as bindings from '/converge-app-0123456789abcdef.js';\n\
                         const wasm = await init({ module_or_path: '/converge-app-0123456789abcdef_bg.wasm' });\n\
                         window.wasmBindings = bindings;\n";

fn index_with(script: &str) -> String {
    format!(
        "<!doctype html><html lang=en><title>Converge</title><script type=module>{script}</script>\
         <script src=/other.js></script><link href=/main-c728cf844ae5b915.css rel=stylesheet>\
         </head><body></body></html>"
    )
}

fn csp_hash(script: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()))
    )
}

async fn app_with_index(index: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("index.html"), index).unwrap();
    TestApp::in_dir(Arc::new(dir), "").await
}

/// The headers every answer carries; the CSP, for more checks.
fn assert_locked_down(reply: &Reply, what: &str) -> String {
    let get = |name: &str| {
        reply
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let csp = get("content-security-policy");
    for part in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "base-uri 'none'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(part), "{what}: {part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("'unsafe-eval'"), "{what}: {csp}");
    assert!(!csp.contains('*'), "{what}: {csp}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    // One of each: a handler's own value is not doubled by the defaults.
    for name in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert_eq!(
            reply.headers.get_all(name).iter().count(),
            1,
            "{what}: {name}"
        );
    }
    csp
}

#[tokio::test]
async fn every_kind_of_answer_carries_the_security_headers() {
    let app = app_with_index(&index_with(BOOTSTRAP)).await;
    let page = app.get("/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("<title>Converge</title>"));
    let page_csp = assert_locked_down(&page, "GET /");
    let route = app.get("/fleet", None).await;
    assert_eq!(route.status, StatusCode::OK);
    assert_locked_down(&route, "GET /fleet");

    let health = app.get("/api/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let api_csp = assert_locked_down(&health, "GET /api/health");
    assert_eq!(api_csp, page_csp, "one policy for the whole site");

    let refused = app.get("/api/me", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_locked_down(&refused, "401 from /api/me");
    let missing = app.get("/api/no-such-thing", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_locked_down(&missing, "API 404");
    let asset = app.get("/converge-app-ffffffffffffffff.js", None).await;
    assert_eq!(asset.status, StatusCode::NOT_FOUND);
    assert_locked_down(&asset, "missing asset");
    let cross_site = app
        .send_with(
            Method::POST,
            "/api/login",
            None,
            Some(good_login()),
            &[("host", HOST), ("origin", EVIL)],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_locked_down(&cross_site, "cross-site refusal");

    // Also without a dashboard build at all.
    let bare = TestApp::new().await;
    let csp = assert_locked_down(&bare.get("/api/health", None).await, "no dist");
    assert!(!csp.contains("'sha256-"), "{csp}");
}

#[tokio::test]
async fn the_policy_allows_exactly_the_pages_inline_bootstrap() {
    let app = app_with_index(&index_with(BOOTSTRAP)).await;
    let page = app.get("/", None).await;
    let csp = assert_locked_down(&page, "GET /");
    let expected = csp_hash(BOOTSTRAP);
    assert!(csp.contains(&expected), "{expected} missing from {csp}");
    assert_eq!(
        csp.matches("'sha256-").count(),
        1,
        "only the inline one: {csp}"
    );
    // The hash is of the exact contents: trimmed or otherwise altered text would not run.
    assert!(!csp.contains(&csp_hash(BOOTSTRAP.trim())), "{csp}");
    // The page served is the page hashed.
    assert!(page.text().contains(&format!(">{BOOTSTRAP}</script>")));

    // The real, minified Trunk output in this repository, when there is one.
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/index.html");
    if let Ok(index) = std::fs::read_to_string(&built) {
        let start = index
            .find("<script type=module>")
            .map(|i| i + "<script type=module>".len());
        if let Some(start) = start {
            let script = &index[start..start + index[start..].find("</script>").unwrap()];
            let app = app_with_index(&index).await;
            let csp = assert_locked_down(&app.get("/", None).await, "built dist");
            assert!(csp.contains(&csp_hash(script)), "{csp}");
        }
    }
}

/// `index.html` is served fresh from disk on every load, so its policy follows a rebuilt
/// dashboard without a restart.
#[tokio::test]
async fn a_rebuilt_dashboard_is_served_with_a_policy_that_allows_its_bootstrap() {
    let app = app_with_index(&index_with(BOOTSTRAP)).await;
    assert_eq!(app.get("/", None).await.status, StatusCode::OK);
    // `scripts/build-ui` writes a new build: new content hashes in the bootstrap.
    let rebuilt = BOOTSTRAP.replace("0123456789abcdef", "fedcba9876543210");
    std::fs::write(app.dir.path().join("dist/index.html"), index_with(&rebuilt)).unwrap();
    let page = app.get("/", None).await;
    assert!(
        page.text().contains(&rebuilt),
        "the new page is served at once"
    );
    let csp = assert_locked_down(&page, "GET / after a rebuild");
    assert!(
        csp.contains(&csp_hash(&rebuilt)),
        "the page's own bootstrap script is blocked by its policy: {csp}"
    );
}

// ---- Body limit ----

/// A login body of exactly `len` bytes.
fn login_body_of(len: usize) -> String {
    let empty = r#"{"username":"admin","password":""}"#;
    let body = format!(
        r#"{{"username":"admin","password":"{}"}}"#,
        "x".repeat(len - empty.len())
    );
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let app = TestApp::new().await;
    let reply = app
        .post_raw(
            "/api/login",
            "application/json",
            &login_body_of(64 * 1024 + 1),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.error(), "the request body is too large");
    // At the limit the body is read (and its too-long password refused on its merits).
    let reply = app
        .post_raw("/api/login", "application/json", &login_body_of(64 * 1024))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );

    // A body with no Content-Length (chunked) is cut off all the same.
    let server = LiveServer::start(app.controller()).await;
    let body = login_body_of(200 * 1024).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    let reply = reqwest::Client::new()
        .post(format!("{}/api/login", server.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 413);
    server.stop().await;
}

// ---- Projects in the config ----

fn config_error(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

/// A config error for `text` after one host `a`.
fn projects_error(text: &str) -> String {
    config_error(&format!(
        "[[hosts]]\nname = \"a\"\nuri = \"qemu+tcp://127.0.0.1/system\"\n{text}"
    ))
}

#[test]
fn projects_are_checked_naming_the_field() {
    let err = projects_error("[[projects]]\nname = \"\"\nvms = [\"a/web-1\"]\n");
    assert!(err.starts_with("projects[0].name:"), "{err}");
    let err = projects_error("[[projects]]\nname = \"  \"\nvms = []\n");
    assert!(err.starts_with("projects[0].name:"), "{err}");

    let err = projects_error(
        "[[projects]]\nname = \"blue\"\nvms = [\"a/web-1\"]\n\
         [[projects]]\nname = \"blue\"\nvms = [\"a/web-2\"]\n",
    );
    assert!(err.starts_with("projects[1].name:"), "{err}");
    assert!(err.contains("\"blue\""), "{err}");
    let err = projects_error(
        "[[projects]]\nname = \"blue\"\nvms = []\n[[projects]]\nname = \" blue \"\nvms = []\n",
    );
    assert!(
        err.starts_with("projects[1].name:"),
        "spaces do not make a new name: {err}"
    );

    let err = projects_error(
        "[[projects]]\nname = \"blue\"\nvms = [\"a/web-1\"]\n\
         [[projects]]\nname = \"green\"\nvms = [\"a/db-1\", \" \"]\n",
    );
    assert!(err.starts_with("projects[1].vms[1]:"), "{err}");

    let err = projects_error(
        "[[projects]]\nname = \"blue\"\nvms = [\"a/web-1\"]\n\
         [[projects]]\nname = \"green\"\nvms = [\"a/web-1\"]\n",
    );
    assert!(err.starts_with("projects[1].vms[0]:"), "{err}");
    assert!(
        err.contains("\"a/web-1\"") && err.contains("\"blue\""),
        "{err}"
    );
    let err = projects_error("[[projects]]\nname = \"blue\"\nvms = [\"a/web-1\", \"a/web-1 \"]\n");
    assert!(
        err.starts_with("projects[0].vms[1]:"),
        "twice in one project: {err}"
    );

    let err = projects_error("[[projects]]\nname = \"blue\"\n");
    assert!(err.contains("missing field `vms`"), "{err}");
    let err = projects_error("[[projects]]\nname = \"blue\"\nvms = []\ncolour = \"x\"\n");
    assert!(err.contains("unknown field `colour`"), "{err}");

    let config = Config::parse(
        "[[hosts]]\nname = \"a\"\nuri = \"qemu+tcp://127.0.0.1/system\"\n\
         [[projects]]\nname = \"blue\"\nvms = [\"a/web-1\", \"6d1f6c0e-2a3b-4c5d-8e9f-0a1b2c3d4e5f\"]\n\
         [[projects]]\nname = \"green\"\nvms = [\"a/db-1\"]\n",
    )
    .unwrap();
    assert_eq!(config.projects.len(), 2);
    assert_eq!(config.projects[1].vms, ["a/db-1"]);
    // A bare name would match every host's VM of that name.
    let err = projects_error("[[projects]]\nname = \"blue\"\nvms = [\"web-1\"]\n");
    assert!(err.starts_with("projects[0].vms[0]:"), "{err}");
    assert!(err.contains("host/name"), "{err}");
    let err = projects_error("[[projects]]\nname = \"blue\"\nvms = [\"z/web-1\"]\n");
    assert!(err.contains("no host \"z\""), "{err}");
    let uuid = "6f1c2d3e-0000-4000-8000-00000000abcd";
    assert!(
        Config::parse(&format!(
            "[[projects]]\nname = \"blue\"\nvms = [\"{uuid}\"]\n"
        ))
        .is_ok()
    );
}
