//! Harness for end-to-end tests: a real Converge server (in-process, on `127.0.0.1:0`)
//! serving the real Trunk build, and real headless Chromium driven over WebDriver.

// A test harness: a broken precondition should fail the test loudly, right here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod client;
pub mod fleet;
pub mod samples;
pub mod server;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where tests leave screenshots for people to look at (`artifacts/screenshots/`).
pub fn artifacts_dir() -> PathBuf {
    let dir = workspace_root().join("artifacts/screenshots");
    if let Err(err) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {err}", dir.display());
    }
    dir
}

/// The `converge` binary that `scripts/test` builds before the tests run.
pub fn converge_binary() -> PathBuf {
    let path = workspace_root().join("target/debug/converge");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p converge-server --bin converge` (scripts/test does)",
        path.display()
    );
    path
}
