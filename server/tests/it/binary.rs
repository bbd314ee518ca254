//! The `converge` binary itself: startup errors, `hash-password`, and a real server
//! process whose log must never show a secret.

use std::io::Write;
use std::process::{Command, Stdio};

use std::sync::Arc;

use converge_server::auth::{PasswordChecks, UserDirectory};
use converge_server::config::Config;
use converge_testkit::process::ServerProcess;

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

#[tokio::test]
async fn hash_password_prints_a_hash_the_server_accepts() {
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
    let checks = Arc::new(PasswordChecks::new(1, 0, &users));
    let users = Arc::new(users);
    let verify = |password: &str| checks.verify(users.clone(), "u".into(), password.into());
    assert!(verify("pass phrase with spaces").await.unwrap().is_some());
    assert!(verify("pass phrase with spaces\n").await.unwrap().is_none());
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

#[tokio::test]
async fn the_log_never_shows_a_password_cookie_or_hash() {
    let dir = tempfile::tempdir().unwrap();
    // With metrics on a listener of their own, whose token must not show either.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_token = "metrics-token-f00d";
    let metrics = format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ntoken_sha256 = \"{}\"\n",
        crate::support::sha256_hex(metrics_token)
    );
    let server = ServerProcess::start(
        std::path::Path::new(CONVERGE),
        &config_text(dir.path(), &metrics),
        dir.path(),
        "trace",
    );
    let url = server.url.clone();
    let client = reqwest::Client::builder().build().unwrap();
    let scraped = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .bearer_auth(metrics_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        scraped.status(),
        200,
        "the binary serves metrics when configured"
    );
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("converge_migrations_running 0")
    );

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
        metrics_token,
    ] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
    assert!(log.contains("server stopped"), "{log}");
}
