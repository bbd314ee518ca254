//! A real server state on a temporary SQLite file, driven in-process with `oneshot`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use converge_server::config::Config;
use converge_server::{AppState, Controller, auth};
use http_body_util::BodyExt;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

pub const ADMIN_PASSWORD: &str = "admin-pass-1";
pub const TENANT_PASSWORD: &str = "tenant-pass-1";

/// Hashing is the slow part of a test; every test shares these two.
pub fn admin_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(ADMIN_PASSWORD).unwrap())
}

pub fn tenant_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(TENANT_PASSWORD).unwrap())
}

/// A configuration with an admin and a tenant, the database and dist in `dir`.
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
dist_dir = "{dist}"

[database]
path = "{db}"

[login_throttle]
window_seconds = 120
max_failures_per_user = 3
max_failures_per_address = 6
{extra}
[[users]]
username = "admin"
password_hash = "{admin}"
role = "admin"

[[users]]
username = "otto"
password_hash = "{admin}"
role = "operator"

[[users]]
username = "kiosk"
password_hash = "{admin}"
role = "kiosk"

[[users]]
username = "tina"
password_hash = "{tenant}"
role = "tenant"
projects = ["blue"]
"#,
        dist = dir.join("dist").display(),
        db = dir.join("converge.db").display(),
        admin = admin_hash(),
        tenant = tenant_hash(),
    )
}

/// The server's router over a real state, as if every request came from `client`.
pub struct TestApp {
    pub state: AppState,
    /// The app's background work, until a [`LiveServer`] takes it to shut it down.
    background: std::sync::Mutex<Option<converge_server::background::Background>>,
    /// Keeps the folder (database, dist) alive as long as the app.
    #[allow(dead_code)]
    pub dir: Arc<TempDir>,
    router: Router,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::in_dir(Arc::new(tempfile::tempdir().unwrap()), "").await
    }

    /// A server on an existing folder (its database survives from an earlier server).
    pub async fn in_dir(dir: Arc<TempDir>, extra_config: &str) -> Self {
        let config = Config::parse(&config_text(dir.path(), extra_config)).unwrap();
        Self::with_config(dir, config).await
    }

    pub async fn with_config(dir: Arc<TempDir>, config: Config) -> Self {
        let controller = Controller::open(config).await.unwrap();
        Self::with_controller(dir, controller)
    }

    /// A connection of the test's own to the database file, to check what is on disk
    /// (the server's store shows no SQL).
    pub async fn db(&self) -> sqlx::SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.state.config.database.path)
            .busy_timeout(std::time::Duration::from_secs(5));
        sqlx::SqlitePool::connect_with(options).await.unwrap()
    }

    pub fn with_controller(dir: Arc<TempDir>, controller: Controller) -> Self {
        let Controller { state, background } = controller;
        let router = converge_server::router(state.clone())
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        Self {
            state,
            background: std::sync::Mutex::new(Some(background)),
            dir,
            router,
        }
    }

    /// The app as a controller to serve (once: its background work goes with it).
    pub fn controller(&self) -> Controller {
        let background = self.background.lock().unwrap().take();
        Controller {
            state: self.state.clone(),
            background: background.expect("the app is served once"),
        }
    }

    /// Sends `request` as a browser or curl would: with a `Host` header (this server's
    /// address unless the request names another).
    pub async fn send(&self, mut request: Request<Body>) -> Reply {
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert(HeaderValue::from_static("127.0.0.1:8080"));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `POST path` with a body sent as-is under `content_type`.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send(request(Method::GET, path, cookie, None)).await
    }

    pub async fn post(&self, path: &str, cookie: Option<&str>, json: Option<Value>) -> Reply {
        self.send(request(Method::POST, path, cookie, json)).await
    }

    pub async fn delete(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send(request(Method::DELETE, path, cookie, None)).await
    }

    /// Like [`request`], with extra headers (`Origin`, `Host`, `Sec-Fetch-Site`, …).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        json: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = request(method, path, cookie, json);
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        self.send(request).await
    }

    /// Signs in and returns the session cookie (`name=value`).
    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .post(
                "/api/login",
                None,
                Some(serde_json::json!({ "username": username, "password": password })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.session_cookie().expect("login sets a session cookie")
    }
}

pub fn request(
    method: Method,
    path: &str,
    cookie: Option<&str>,
    json: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    match json {
        Some(json) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }

    /// The `error` message of an error reply.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }

    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// `name=value` of the session cookie this reply sets, if any.
    pub fn session_cookie(&self) -> Option<String> {
        let set = self.set_cookie()?;
        let pair = set.split(';').next()?.trim().to_owned();
        pair.starts_with("converge_session=").then_some(pair)
    }
}

/// A real server for `state` on a free loopback port; stops when the handle drops.
pub struct LiveServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LiveServer {
    pub async fn start(controller: Controller) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(converge_server::serve(listener, controller, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts graceful shutdown and waits (bounded) for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the server stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Signs in over HTTP and returns the cookie header value.
pub async fn http_login(url: &str, username: &str, password: &str) -> String {
    let reply = reqwest::Client::new()
        .post(format!("{url}/api/login"))
        .json(&serde_json::json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let set = reply.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// SHA-256 of `text` as lower-case hex: how kiosk and metrics tokens are kept.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(pub std::sync::Mutex<time::OffsetDateTime>);

impl ManualClock {
    /// A clock at the real time now.
    pub fn now() -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(time::OffsetDateTime::now_utc())))
    }

    /// Moves the clock on.
    pub fn advance(&self, by: time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl converge_server::clock::Clock for ManualClock {
    fn now(&self) -> time::OffsetDateTime {
        *self.0.lock().unwrap()
    }
}
