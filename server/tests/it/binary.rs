//! The `converge` binary itself: startup errors, `hash-password`, and a real server
//! process whose log must never show a secret.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use converge_server::auth::UserDirectory;
use converge_server::config::Config;

use crate::support::{ADMIN_PASSWORD, config_text};

const CONVERGE: &str = env!("CARGO_BIN_EXE_converge");

fn serve_with(config_text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("converge.toml");
    std::fs::write(&path, config_text).unwrap();
    Command::new(CONVERGE)
        .args(["serve", "--config"])
        .arg(&path)
        .env("CONVERGE_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap()
}

#[test]
fn a_bad_config_stops_startup_naming_the_field() {
    let out = serve_with("[session]\nidle_timout_minutes = 5\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field `idle_timout_minutes`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("converge.toml"),
        "should name the file: {stderr}"
    );

    let out = serve_with("[[users]]\nusername = \"a\"\npassword_hash = \"x\"\nrole = \"admin\"\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("users[0].password_hash"), "{stderr}");
}

#[test]
fn hash_password_prints_a_hash_the_server_accepts() {
    let mut child = Command::new(CONVERGE)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pass phrase with spaces\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let config = Config::parse(&format!(
        "[[users]]\nusername = \"u\"\npassword_hash = \"{hash}\"\nrole = \"operator\"\n"
    ))
    .unwrap();
    let users = UserDirectory::new(&config.users).unwrap();
    assert!(users.verify("u", "pass phrase with spaces").is_some());
    assert!(users.verify("u", "pass phrase with spaces\n").is_none());
}

#[test]
fn hash_password_refuses_an_empty_password() {
    let out = Command::new(CONVERGE)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
}

/// A `converge serve` process with its stderr collected line by line.
struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ServerProcess {
    fn start(config: &str, dir: &std::path::Path) -> (Self, String) {
        let path = dir.join("converge.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(CONVERGE)
            .args(["serve", "--config"])
            .arg(&path)
            .env("CONVERGE_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "trace")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            log: Vec::new(),
        };
        let url = server.wait_for("listening");
        let url = url
            .split("url=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("the listening line names the URL")
            .trim_end_matches('/')
            .to_owned();
        (server, url)
    }

    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; log: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Stops with SIGTERM and returns the whole log; the process must exit cleanly.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "graceful shutdown should exit 0, got {status}"
        );
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

#[tokio::test]
async fn the_log_never_shows_a_password_cookie_or_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = ServerProcess::start(&config_text(dir.path(), ""), dir.path());
    let client = reqwest::Client::builder().build().unwrap();

    let wrong = client
        .post(format!("{url}/api/login"))
        .json(&serde_json::json!({ "username": "admin", "password": "wrong-secret-42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client
        .post(format!("{url}/api/login"))
        .json(&serde_json::json!({ "username": "admin", "password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie_value = cookie
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();
    let me = client
        .get(format!("{url}/api/me"))
        .header("cookie", format!("converge_session={cookie_value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    let log = server.stop();
    assert!(log.contains("signed in"), "the sign-in is logged: {log}");
    assert!(
        log.contains("sign-in refused"),
        "the refusal is logged: {log}"
    );
    for secret in [
        "wrong-secret-42",
        ADMIN_PASSWORD,
        cookie_value.as_str(),
        crate::support::admin_hash(),
        "$argon2",
    ] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
    assert!(log.contains("server stopped"), "{log}");
}
