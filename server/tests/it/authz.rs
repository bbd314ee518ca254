//! Who may call what, in-process: the authorization matrix over every `/api` route and
//! every kind of caller, walked from the server's own table of routes so that a route
//! added without a row fails `cargo test -p converge-server` (the lab's copy of this
//! matrix, `tests/e2e/tests/it/audiences.rs`, only runs with libvirt).
//!
//! There is no libvirt daemon here. Two hosts are configured with addresses where
//! nothing listens (they stay "disconnected", so no worker ever lists their domains),
//! and the VM list of one of them is handed to the fleet as its worker would report it:
//! one VM of project "blue" (tenant `tina`), one of project "green" (tenant `tom`).
//! That is enough for the tenant routes to find a real VM and for the leak check to
//! have something to leak; migrations cannot be started without a daemon, so every
//! migration row names one that does not exist.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use converge_libvirt::{DomainState, DomainSummary};
use converge_server::hypervisor::Report;
use converge_server::routes::ROUTES;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{ADMIN_PASSWORD, TENANT_PASSWORD, TestApp, tenant_hash};

/// Configured host names: no tenant may ever read them.
const EAST: &str = "compute-east-7";
const WEST: &str = "compute-west-3";
/// Where the hosts' daemons would be: nothing listens on ports 1 and 2.
const EAST_URI: &str = "qemu+tcp://127.0.0.1:1/system";
const WEST_URI: &str = "qemu+tcp://127.0.0.1:2/system";

/// Tenant `tina`'s VM (project "blue", by Nova's metadata), on [`EAST`].
const BLUE_VM: &str = "blue-web";
const BLUE_UUID: &str = "b1b1b1b1-0000-4000-8000-0000000000b1";
/// Tenant `tom`'s VM (project "green"), on [`EAST`] too.
const GREEN_VM: &str = "green-db";
const GREEN_UUID: &str = "6e6e6e6e-0000-4000-8000-0000000000e6";

/// The callers, in the matrix's column order.
const WHO: [&str; 7] = [
    "anonymous",
    "tenant tina (blue)",
    "tenant tom (green)",
    "kiosk user",
    "kiosk link",
    "operator",
    "admin",
];
const ANONYMOUS: usize = 0;
const TINA: usize = 1;
const TOM: usize = 2;
const KIOSK_USER: usize = 3;
const KIOSK_LINK: usize = 4;
const OPERATOR: usize = 5;
const ADMIN: usize = 6;

/// One route's row: the request made, and the status each caller must get, in [`WHO`]'s
/// order. 401 and 403 are "denied"; a 404 or 422 for a caller who is allowed in shows
/// that the handler ran (the request names nothing that exists, or has a body the
/// handler refuses, so nothing changes). `{blue}` in `path` becomes [`BLUE_UUID`].
struct Row {
    method: &'static str,
    /// The route as [`ROUTES`] spells it.
    route: &'static str,
    /// The request's path under `/api`.
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 7],
    /// Sent with a session made for this one request (sign-out ends the caller's
    /// session; every other row keeps using the caller's first one).
    throwaway_session: bool,
}

const fn row(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 7],
) -> Row {
    Row {
        method,
        route,
        path,
        body,
        expect,
        throwaway_session: false,
    }
}

/// A row sent with a session made for it alone: see [`Row::throwaway_session`].
const fn row_signing_out(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 7],
) -> Row {
    Row {
        throwaway_session: true,
        ..row(method, route, path, body, expect)
    }
}

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //   method    route                      request path                    body                                            anon tina tom kiosk link oper admin
    row("GET",    "/health",                 "/health",                      None,                                           [200, 200, 200, 200, 200, 200, 200]),
    row("POST",   "/login",                  "/login",                       Some("{}"),                                     [422, 422, 422, 422, 422, 422, 422]),
    row_signing_out(
        "POST",   "/logout",                 "/logout",                      None,                                           [401, 204, 204, 204, 204, 204, 204]),
    row("GET",    "/me",                     "/me",                          None,                                           [401, 200, 200, 200, 200, 200, 200]),
    row("GET",    "/events",                 "/events",                      None,                                           [401, 200, 200, 200, 200, 200, 200]),
    row("GET",    "/hosts",                  "/hosts",                       None,                                           [401, 403, 403, 200, 200, 200, 200]),
    row("GET",    "/vms",                    "/vms",                         None,                                           [401, 403, 403, 200, 200, 200, 200]),
    row("GET",    "/migrations",             "/migrations",                  None,                                           [401, 403, 403, 200, 200, 200, 200]),
    row("POST",   "/migrations",             "/migrations",                  Some(r#"{"vm_uuid":"no-such-vm","destination":"compute-west-3"}"#),
                                                                                                                             [401, 403, 403, 403, 403, 404, 404]),
    row("GET",    "/migrations/{id}",        "/migrations/nope",             None,                                           [401, 403, 403, 404, 404, 404, 404]),
    row("PATCH",  "/migrations/{id}",        "/migrations/nope",             Some(r#"{"lever":"downtime_limit","ms":500}"#), [401, 403, 403, 403, 403, 404, 404]),
    row("POST",   "/migrations/{id}/abort",  "/migrations/nope/abort",       None,                                           [401, 403, 403, 403, 403, 404, 404]),
    row("GET",    "/history",                "/history",                     None,                                           [401, 403, 403, 200, 200, 200, 200]),
    row("GET",    "/presets",                "/presets",                     None,                                           [401, 403, 403, 403, 403, 200, 200]),
    row("GET",    "/audit",                  "/audit",                       None,                                           [401, 403, 403, 403, 403, 403, 200]),
    row("GET",    "/kiosk-tokens",           "/kiosk-tokens",                None,                                           [401, 403, 403, 403, 403, 403, 200]),
    row("POST",   "/kiosk-tokens",           "/kiosk-tokens",                Some(r#"{"label":""}"#),                        [401, 403, 403, 403, 403, 403, 422]),
    row("DELETE", "/kiosk-tokens/{id}",      "/kiosk-tokens/999999",         None,                                           [401, 403, 403, 403, 403, 403, 404]),
    row("POST",   "/kiosk/session",          "/kiosk/session",               Some("{}"),                                     [422, 422, 422, 422, 422, 422, 422]),
    row("GET",    "/tenant/vms",             "/tenant/vms",                  None,                                           [401, 200, 200, 403, 403, 403, 403]),
    row("GET",    "/tenant/vms/{uuid}",      "/tenant/vms/{blue}",           None,                                           [401, 200, 404, 403, 403, 403, 403]),
    row("GET",    "/drains",                 "/drains",                      None,                                           [401, 403, 403, 200, 200, 200, 200]),
    row("POST",   "/drains",                 "/drains",                      Some(r#"{"hosts":["no-such-host"],"dry_run":true}"#),
                                                                                                                             [401, 403, 403, 403, 403, 422, 422]),
    row("GET",    "/drains/{id}",            "/drains/nope",                 None,                                           [401, 403, 403, 404, 404, 404, 404]),
    row("POST",   "/drains/{id}/pause",      "/drains/nope/pause",           None,                                           [401, 403, 403, 403, 403, 404, 404]),
    row("POST",   "/drains/{id}/resume",     "/drains/nope/resume",          None,                                           [401, 403, 403, 403, 403, 404, 404]),
    row("POST",   "/drains/{id}/cancel",     "/drains/nope/cancel",          None,                                           [401, 403, 403, 403, 403, 404, 404]),
    row("POST",   "/drains/{id}/vms/{uuid}", "/drains/nope/vms/{blue}",      Some(r#"{"action":"skip"}"#),                   [401, 403, 403, 403, 403, 404, 404]),
];

/// The app, its router, and a session for every caller.
struct World {
    app: TestApp,
    router: Router,
    /// The session cookie of each caller, in [`WHO`]'s order (`None`: anonymous).
    cookies: Vec<Option<String>>,
    /// The kiosk link's secret, to sign more wall screens in with.
    kiosk_secret: String,
}

/// What one caller got for one row's request.
struct Cell {
    row: &'static Row,
    col: usize,
    path: String,
    status: StatusCode,
    content_type: String,
    /// Empty for a live stream (only its status is read).
    body: Vec<u8>,
}

impl Cell {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn extra_config() -> String {
    format!(
        r#"
[[hosts]]
name = "{EAST}"
uri = "{EAST_URI}"

[[hosts]]
name = "{WEST}"
uri = "{WEST_URI}"

[[users]]
username = "tom"
password_hash = "{hash}"
role = "tenant"
projects = ["green"]
"#,
        hash = tenant_hash(),
    )
}

fn domain(name: &str, uuid: &str, project: &str) -> DomainSummary {
    DomainSummary {
        name: name.to_owned(),
        uuid: uuid.to_owned(),
        state: DomainState::Running,
        memory_bytes: 1 << 30,
        vcpus: 2,
        nova: Some(converge_libvirt::NovaInstance {
            project: Some(project.to_owned()),
            name: None,
        }),
    }
}

async fn world() -> World {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir, &extra_config()).await;
    // The VM list the east host's worker would send once connected.
    let _published = app.state.fleet.update(|fleet, now_ms| {
        fleet.apply(
            Report::Domains {
                host: EAST.to_owned(),
                domains: vec![
                    domain(BLUE_VM, BLUE_UUID, "blue"),
                    domain(GREEN_VM, GREEN_UUID, "green"),
                ],
            },
            now_ms,
        )
    });
    // The same router `TestApp` drives, here to read a live stream's status without
    // waiting for a body that never ends.
    let router = converge_server::router(app.state.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let admin = app.login("admin", ADMIN_PASSWORD).await;
    let created = app
        .post(
            "/api/kiosk-tokens",
            Some(&admin),
            Some(json!({ "label": "wall" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let kiosk_secret = created.json()["secret"].as_str().unwrap().to_owned();
    let mut world = World {
        app,
        router,
        cookies: Vec::new(),
        kiosk_secret,
    };
    for col in 0..WHO.len() {
        let cookie = if col == ADMIN {
            Some(admin.clone())
        } else {
            sign_in(&world, col).await
        };
        world.cookies.push(cookie);
    }
    world
}

/// A new session for caller `col` (`None` for anonymous). Never a failed sign-in: the
/// test config locks a username after three.
async fn sign_in(world: &World, col: usize) -> Option<String> {
    let app = &world.app;
    match col {
        ANONYMOUS => None,
        TINA => Some(app.login("tina", TENANT_PASSWORD).await),
        TOM => Some(app.login("tom", TENANT_PASSWORD).await),
        KIOSK_USER => Some(app.login("kiosk", ADMIN_PASSWORD).await),
        KIOSK_LINK => {
            let reply = app
                .post(
                    "/api/kiosk/session",
                    None,
                    Some(json!({ "token": world.kiosk_secret })),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            Some(
                reply
                    .session_cookie()
                    .expect("a kiosk sign-in sets a cookie"),
            )
        }
        OPERATOR => Some(app.login("otto", ADMIN_PASSWORD).await),
        ADMIN => Some(app.login("admin", ADMIN_PASSWORD).await),
        _ => unreachable!("no caller {col}"),
    }
}

/// Sends a request as a non-browser client would (a `Host`, no `Origin`, no
/// `Sec-Fetch-Site`: the CSRF check lets it through). A live stream's body is not read.
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String, Vec<u8>) {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header(header::HOST, "127.0.0.1:8080");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let request = match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned())),
        None => builder.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("text/event-stream") {
        // Never ends by itself; dropping it closes the stream.
        return (status, content_type, Vec::new());
    }
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: the body did not end within 10 s"))
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

/// Every cell of the matrix, row by row.
async fn walk(world: &World) -> Vec<Cell> {
    let mut cells = Vec::with_capacity(MATRIX.len() * WHO.len());
    for row in MATRIX {
        let path = format!("/api{}", row.path.replace("{blue}", BLUE_UUID));
        for col in 0..WHO.len() {
            let throwaway = if row.throwaway_session {
                sign_in(world, col).await
            } else {
                None
            };
            let cookie = if row.throwaway_session {
                throwaway.as_deref()
            } else {
                world.cookies[col].as_deref()
            };
            let (status, content_type, body) =
                call(&world.router, row.method, &path, cookie, row.body).await;
            cells.push(Cell {
                row,
                col,
                path: path.clone(),
                status,
                content_type,
                body,
            });
        }
    }
    // The rows did not end anyone's own session: the matrix's answers are not "signed out".
    for (col, cookie) in world.cookies.iter().enumerate() {
        let Some(cookie) = cookie else { continue };
        let (status, _, body) = call(&world.router, "GET", "/api/me", Some(cookie), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}'s session ended during the walk: {}",
            WHO[col],
            String::from_utf8_lossy(&body)
        );
    }
    cells
}

/// Whether `path` (a request path under `/api`) is one `route` serves.
fn path_fits(route: &str, path: &str) -> bool {
    let (route, path): (Vec<&str>, Vec<&str>) =
        (route.split('/').collect(), path.split('/').collect());
    route.len() == path.len()
        && route.iter().zip(&path).all(|(r, p)| {
            if r.starts_with('{') && r.ends_with('}') {
                !p.is_empty()
            } else {
                r == p
            }
        })
}

#[test]
fn every_route_has_exactly_one_row_and_every_row_is_a_route() {
    let mut problems = Vec::new();
    for route in ROUTES {
        let rows = MATRIX
            .iter()
            .filter(|r| r.method == route.method && r.route == route.path)
            .count();
        if rows != 1 {
            problems.push(format!(
                "{} /api{} has {rows} rows in MATRIX (src/routes.rs lists it): add exactly one \
                 saying what each caller gets",
                route.method, route.path
            ));
        }
    }
    for r in MATRIX {
        if !ROUTES
            .iter()
            .any(|route| r.method == route.method && r.route == route.path)
        {
            problems.push(format!(
                "MATRIX row {} /api{} is not a route of the server (converge_server::routes::ROUTES)",
                r.method, r.route
            ));
        }
        let path = r.path.replace("{blue}", BLUE_UUID);
        if !path_fits(r.route, &path) {
            problems.push(format!(
                "MATRIX row {} /api{} requests /api{path}, which is not that route",
                r.method, r.route
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let world = world().await;
    let cells = walk(&world).await;
    let failures: Vec<String> = cells
        .iter()
        .filter(|c| c.status.as_u16() != c.row.expect[c.col])
        .map(|c| {
            format!(
                "{} {} as {}: {}, expected {} ({})",
                c.row.method,
                c.path,
                WHO[c.col],
                c.status.as_u16(),
                c.row.expect[c.col],
                c.text()
            )
        })
        .collect();
    println!(
        "authorization matrix: {} routes × {} callers = {} cells",
        MATRIX.len(),
        WHO.len(),
        cells.len()
    );
    assert!(
        failures.is_empty(),
        "cells that differ:\n{}",
        failures.join("\n")
    );
    // Signing out with a throwaway session did end that session.
    let spare = sign_in(&world, TINA).await.unwrap();
    let (status, ..) = call(&world.router, "POST", "/api/logout", Some(&spare), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, ..) = call(&world.router, "GET", "/api/me", Some(&spare), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    world.app.state.shutdown.cancel();
}

#[tokio::test]
async fn every_refusal_is_a_json_error_body() {
    let world = world().await;
    let cells = walk(&world).await;
    let refusals: Vec<&Cell> = cells
        .iter()
        .filter(|c| matches!(c.status.as_u16(), 401 | 403))
        .collect();
    assert!(refusals.len() > 50, "only {} refusals", refusals.len());
    let mut failures = Vec::new();
    for c in refusals {
        let what = format!(
            "{} {} as {} ({})",
            c.row.method,
            c.path,
            WHO[c.col],
            c.status.as_u16()
        );
        if !c.content_type.starts_with("application/json") {
            failures.push(format!("{what}: content type {:?}", c.content_type));
            continue;
        }
        let ok = match serde_json::from_slice::<Value>(&c.body) {
            Ok(Value::Object(map)) => {
                map.len() == 1 && map["error"].as_str().is_some_and(|e| !e.trim().is_empty())
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{what}: not {{\"error\": \"...\"}}: {}", c.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    world.app.state.shutdown.cancel();
}

/// Reads a live stream for as long as events keep coming (a quiet 500 ms after the first
/// ends it).
async fn read_stream(router: &Router, cookie: &str, last_event_id: &str) -> String {
    let request = Request::get("/api/events")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::COOKIE, cookie)
        .header("last-event-id", last_event_id)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // The replay is there at once, but a loaded machine may be slow to the first one.
        let quiet = if text.is_empty() { 5_000 } else { 500 };
        match tokio::time::timeout(Duration::from_millis(quiet), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            _ => break,
        }
    }
    text
}

/// Every object key anywhere in `value`.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                out.push(key.clone());
                keys(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn assert_mentions_none(who: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{who} was shown \"{secret}\":\n{text}"
        );
    }
}

/// What a tenant receives, over every route of the matrix and the live stream (replayed
/// from its start: the fleet's VM list was published before the tenant connected): its own
/// project's VM, nothing of the other project's, no host. In-process there is no
/// migration to watch, so "moves" are only ever empty here; the lab test covers a live one.
#[tokio::test]
async fn tenants_receive_only_their_own_project_and_no_host() {
    let world = world().await;
    let cells = walk(&world).await;
    let fleet_secrets = [EAST, WEST, "127.0.0.1", "qemu+tcp", "otto"];
    let host_fields = [
        "host",
        "hostname",
        "source",
        "destination",
        "libvirt_version",
    ];
    for (col, mine, theirs) in [
        (
            TINA,
            [BLUE_VM, BLUE_UUID],
            [GREEN_VM, GREEN_UUID, "green", "tom"],
        ),
        (
            TOM,
            [GREEN_VM, GREEN_UUID],
            [BLUE_VM, BLUE_UUID, "blue", "tina"],
        ),
    ] {
        let who = WHO[col];
        let mut seen = String::new();
        for c in cells.iter().filter(|c| c.col == col) {
            seen.push_str(&c.text());
            seen.push('\n');
            if let Ok(json) = serde_json::from_slice::<Value>(&c.body) {
                let mut found = Vec::new();
                keys(&json, &mut found);
                for field in host_fields {
                    assert!(
                        !found.iter().any(|k| k == field),
                        "{who} got a \"{field}\" field from {} {}: {}",
                        c.row.method,
                        c.path,
                        c.text()
                    );
                }
            }
        }
        // Positive control: the leak check reads bodies that do name the tenant's VM.
        let listed = cells
            .iter()
            .find(|c| c.col == col && c.row.route == "/tenant/vms")
            .unwrap();
        assert!(
            listed.text().contains(mine[0]) && listed.text().contains(mine[1]),
            "{who}'s VM list: {}",
            listed.text()
        );
        assert_mentions_none(who, &seen, &theirs);
        assert_mentions_none(who, &seen, &fleet_secrets);

        // The stream from its first event: the tenant's VM, in tenant terms only.
        let cookie = world.cookies[col].as_deref().unwrap();
        let stream = read_stream(&world.router, cookie, "0").await;
        assert!(
            stream.contains("event: tenant_vm") && stream.contains(mine[0]),
            "{who}'s stream has no tenant_vm event for its VM:\n{stream}"
        );
        for name in ["event: vms", "event: host", "event: migration"] {
            assert!(!stream.contains(name), "{who} got an {name}:\n{stream}");
        }
        assert_mentions_none(who, &stream, &theirs);
        assert_mentions_none(who, &stream, &fleet_secrets);
        for line in stream.lines().filter_map(|l| l.strip_prefix("data:")) {
            let json: Value = serde_json::from_str(line.trim()).unwrap();
            let mut found = Vec::new();
            keys(&json, &mut found);
            for field in host_fields {
                assert!(
                    !found.iter().any(|k| k == field),
                    "{who}'s stream has a \"{field}\" field: {line}"
                );
            }
        }
    }
    // The fleet's viewers do see both VMs and the host: the secrets above are real.
    let vms = cells
        .iter()
        .find(|c| c.col == ADMIN && c.row.route == "/vms")
        .unwrap()
        .text();
    for needle in [BLUE_VM, GREEN_VM, EAST] {
        assert!(
            vms.contains(needle),
            "admin's /api/vms lacks {needle}: {vms}"
        );
    }
    world.app.state.shutdown.cancel();
}
