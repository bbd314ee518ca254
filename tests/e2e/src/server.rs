//! A real Converge server in this process, on a free loopback port, with a SQLite file
//! and a few accounts; optionally connected to the lab's two libvirt hosts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use converge_server::config::Config;
use converge_server::{AppState, Controller, auth};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Password of every account of a test server (`admin`, `otto` the operator, `kiosk`).
pub const ADMIN_PASSWORD: &str = "e2e admin password";

/// A running server; stops (gracefully) when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The server's state, e.g. to reach its database.
    pub state: AppState,
    /// The folder holding its database; hand it to the next server to "restart".
    pub dir: Arc<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server on the Trunk build in `dist/`, without libvirt hosts.
    pub async fn start() -> Self {
        Self::start_with(Arc::new(tempfile::tempdir().expect("temp dir")), "").await
    }

    /// A server whose database lives in `dir`, with `extra` appended to its config
    /// (e.g. `[[hosts]]`). Panics with a hint when the dashboard is not built.
    pub async fn start_with(dir: Arc<TempDir>, extra: &str) -> Self {
        Self::start_at(dir, extra, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// A server on the lab's hosts ([`converge_testkit::lab::HOSTS_CONFIG`]) and `extra`
    /// configuration after them.
    pub async fn lab(extra: &str) -> Self {
        let config = format!("{}{extra}", converge_testkit::lab::HOSTS_CONFIG);
        Self::start_with(Arc::new(tempfile::tempdir().expect("temp dir")), &config).await
    }

    /// [`Self::start_with`] on `addr` (e.g. the address of a server stopped a moment ago,
    /// so that browsers reconnect to its successor).
    pub async fn start_at(dir: Arc<TempDir>, extra: &str, addr: SocketAddr) -> Self {
        let dist = crate::workspace_root().join("dist");
        assert!(
            dist.join("index.html").is_file(),
            "no dashboard build in {}: run scripts/build-ui first",
            dist.display()
        );
        let text = config_text(&dist, &dir.path().join("converge.db"), extra);
        let config = Config::parse(&text).expect("test config parses");
        let controller = Controller::open(config).await.expect("server state");
        let state = controller.state.clone();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| panic!("bind {addr}: {err}"));
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(converge_server::serve(listener, controller, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            state,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has (its host workers stop too).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The server returns once its host workers' threads have ended (their libvirt
        // connections closed), so the next server can take the hosts at once.
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Deletes every session from the database, as expiry or revocation would.
    pub async fn end_all_sessions(&self) {
        self.state
            .store
            .delete_all_sessions()
            .await
            .expect("delete sessions");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One argon2 hash (of [`ADMIN_PASSWORD`]) for every test account: hashing is the slow
/// part of starting. Tests that add accounts in their extra config use it too.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(ADMIN_PASSWORD).expect("hash"))
}

/// A full configuration: the dashboard in `dist`, the database at `db`, the three test
/// accounts, and `extra` (e.g. `[[hosts]]`).
pub fn config_text(dist: &Path, db: &Path, extra: &str) -> String {
    let hash = password_hash();
    format!(
        r#"
[server]
dist_dir = "{dist}"

[database]
path = "{db}"

{extra}

[[users]]
username = "admin"
password_hash = "{hash}"
role = "admin"

[[users]]
username = "otto"
password_hash = "{hash}"
role = "operator"

[[users]]
username = "kiosk"
password_hash = "{hash}"
role = "kiosk"
"#,
        dist = dist.display(),
        db = db.display(),
    )
}
