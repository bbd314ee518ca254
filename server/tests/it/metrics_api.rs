//! Prometheus metrics: their own listener, a bearer token whose hash is in the config,
//! the fleet's gauges and the history's counters; config mistakes named.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use converge_api::{Migration, MigrationState};
use converge_server::config::Config;

use crate::support::{TestApp, config_text, sha256_hex};

const TOKEN: &str = "a long random scrape token";

fn metrics_section(token_sha256: &str) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:9184\"\ntoken_sha256 = \"{token_sha256}\"\n")
}

/// Scrapes `url` with `token` (none: no `Authorization`).
async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn metrics_answer_the_token_only_and_show_the_fleet_and_the_history() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let extra = format!(
        "{}\n[[hosts]]\nname = \"east\"\nuri = \"qemu+tcp://127.0.0.1:1/system\"\n",
        metrics_section(&sha256_hex(TOKEN))
    );
    let app = TestApp::in_dir(dir, &extra).await;
    // Two finished migrations in the history.
    for (id, state) in [
        ("m1", MigrationState::Completed),
        ("m2", MigrationState::Aborted),
    ] {
        let mut m = Migration::begun(
            id.into(),
            format!("uuid-{id}"),
            "web".into(),
            "east".into(),
            state,
            1,
        );
        m.ended_at_ms = Some(2);
        app.state.store.save_migration(&m).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(converge_server::metrics::serve(listener, app.state.clone()));

    for token in [None, Some("wrong"), Some("")] {
        let reply = scrape(&url, token).await;
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(reply.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let text = reply.text().await.unwrap();
        assert!(text.contains("token_sha256"), "{text}");
        assert!(!text.contains("converge_"), "{text}");
    }

    let reply = scrape(&url, Some(TOKEN)).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        reply.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = reply.text().await.unwrap();
    for line in [
        "converge_host_up{host=\"east\"} 0",
        "converge_migrations_running 0",
        "converge_migrations_finished_total{outcome=\"completed\"} 1",
        "converge_migrations_finished_total{outcome=\"aborted\"} 1",
        "converge_migrations_finished_total{outcome=\"failed\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // Nothing else on that listener; and the dashboard's listener has no metrics.
    let other = reqwest::get(format!("{url}/api/health")).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let dashboard = app.get("/metrics", None).await;
    assert!(!dashboard.text().contains("converge_host_up"));

    app.state.shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the metrics listener stops with the server")
        .unwrap()
        .unwrap();
}

#[test]
fn metrics_config_mistakes_name_the_field() {
    let parse = |extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        Config::parse(&config_text(dir.path(), extra)).map(|_| ())
    };
    assert!(parse(&metrics_section(&sha256_hex(TOKEN))).is_ok());
    for (section, field, says) in [
        (
            metrics_section("hunter2"),
            "metrics.token_sha256",
            "64 lower-case hex digits",
        ),
        (
            metrics_section(&sha256_hex(TOKEN).to_uppercase()),
            "metrics.token_sha256",
            "64 lower-case hex digits",
        ),
        (
            metrics_section(&sha256_hex("")),
            "metrics.token_sha256",
            "empty token",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1:9184\"\n".to_owned(),
            "token_sha256",
            "missing field",
        ),
        (
            format!(
                "[metrics]\nlisten = \"127.0.0.1:8080\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex(TOKEN)
            ),
            "metrics.listen",
            "own",
        ),
    ] {
        let err = parse(&section).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains(says),
            "{section}: {err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the error must not echo the value: {err}"
        );
    }
}
