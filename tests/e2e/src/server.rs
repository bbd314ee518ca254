//! A real Converge server in this process, on a free loopback port, with a fresh SQLite
//! file and a few accounts.

use std::net::SocketAddr;
use std::path::PathBuf;

use converge_server::config::Config;
use converge_server::{AppState, auth};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Password of the `admin` account of every test server.
pub const ADMIN_PASSWORD: &str = "e2e admin password";

/// A running server; stops (gracefully) when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The server's state, e.g. to reach its database.
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl TestServer {
    /// Starts a server on the Trunk build in `dist/`; panics with a hint if it is missing.
    pub async fn start() -> Self {
        let dist = crate::workspace_root().join("dist");
        assert!(
            dist.join("index.html").is_file(),
            "no dashboard build in {}: run scripts/build-ui first",
            dist.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config::parse(&config_text(dist, dir.path().join("converge.db")))
            .expect("test config parses");
        let state = AppState::open(config).await.expect("server state");
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(converge_server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            url,
            state,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Deletes every session from the database, as expiry or revocation would.
    pub async fn end_all_sessions(&self) {
        converge_server::store::delete_all_sessions(&self.state.db)
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

fn config_text(dist: PathBuf, db: PathBuf) -> String {
    let hash = auth::hash_password(ADMIN_PASSWORD).expect("hash");
    format!(
        r#"
[server]
dist_dir = "{dist}"

[database]
path = "{db}"

[[users]]
username = "admin"
password_hash = "{hash}"
role = "admin"
"#,
        dist = dist.display(),
        db = db.display(),
    )
}
