//! The live stream over a real socket: resume, resync, scope, shutdown.

use std::sync::Arc;
use std::time::Duration;

use converge_api::{LiveEvent, Resync};
use converge_server::hub::Audience;
use converge_testkit::SseReader;

use crate::support::{ADMIN_PASSWORD, LiveServer, TENANT_PASSWORD, TestApp, http_login};

fn resync(n: u32) -> LiveEvent {
    LiveEvent::Resync(Resync {
        reason: format!("marker {n}"),
    })
}

async fn server() -> (TestApp, LiveServer) {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.controller()).await;
    (app, server)
}

#[tokio::test]
async fn anonymous_viewers_are_refused() {
    let (_app, server) = server().await;
    let reply = reqwest::get(format!("{}/api/events", server.url))
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn events_arrive_uncompressed_with_ids() {
    let (app, server) = server().await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let opened = SseReader::open(&server.url, &cookie, None).await;
    let (status, headers, mut reader) = (opened.status, opened.headers, opened.reader);
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        headers.get("content-encoding").is_none(),
        "SSE must not be compressed"
    );
    let first = app.state.hub.next_seq();
    app.state.hub.publish(Audience::Fleet, &resync(1));
    let event = reader.next().await.unwrap();
    assert_eq!(event.id, Some(first.to_string()));
    assert_eq!(event.event, "resync");
    assert!(event.data.contains("marker 1"));
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_where_the_viewer_left() {
    let (app, server) = server().await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let start = app.state.hub.next_seq();
    for n in 0..5 {
        app.state.hub.publish(Audience::Fleet, &resync(n));
    }
    // Saw the first two; resumes with the third.
    let mut reader = SseReader::open(&server.url, &cookie, Some(start + 1))
        .await
        .reader;
    for n in 2..5 {
        let event = reader.next().await.unwrap();
        assert_eq!(event.id, Some((start + n as u64).to_string()));
        assert!(event.data.contains(&format!("marker {n}")), "{event:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn resuming_from_too_far_back_says_resync() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir, "[events]\nreplay_buffer = 16\n").await;
    let server = LiveServer::start(app.controller()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    for n in 0..40 {
        app.state.hub.publish(Audience::Fleet, &resync(n));
    }
    let mut reader = SseReader::open(&server.url, &cookie, Some(1)).await.reader;
    let event = reader.next().await.unwrap();
    assert_eq!(event.event, "resync");
    assert_eq!(event.id, None, "a resync notice has no id of its own");
    assert!(event.data.contains("further back"), "{event:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_viewer_that_falls_behind_is_told_to_resync_not_dropped() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let app = TestApp::in_dir(dir, "[events]\nreplay_buffer = 16\n").await;
    let server = LiveServer::start(app.controller()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let mut reader = SseReader::open(&server.url, &cookie, None).await.reader;
    // Make sure the stream is attached, then flood it far past the per-viewer buffer.
    app.state.hub.publish(Audience::Fleet, &resync(0));
    assert!(reader.next().await.unwrap().data.contains("marker 0"));
    let big = "x".repeat(64 * 1024);
    for n in 1..=2000 {
        app.state.hub.publish(
            Audience::Fleet,
            &LiveEvent::Resync(Resync {
                reason: format!("marker {n} {big}"),
            }),
        );
    }
    let mut saw_lag_notice = false;
    let mut last_marker = 0;
    while let Some(event) = reader.next().await {
        if event.data.contains("fell") && event.data.contains("behind") {
            saw_lag_notice = true;
        }
        if event.data.contains("marker 2000 ") {
            last_marker = 2000;
            break;
        }
    }
    assert!(saw_lag_notice, "the slow viewer was told it missed events");
    assert_eq!(
        last_marker, 2000,
        "and the stream carried on to the newest event"
    );
    server.stop().await;
}

#[tokio::test]
async fn tenants_do_not_receive_fleet_events() {
    let (app, server) = server().await;
    let tenant = http_login(&server.url, "tina", TENANT_PASSWORD).await;
    let admin = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let mut tenant_stream = SseReader::open(&server.url, &tenant, None).await.reader;
    let mut admin_stream = SseReader::open(&server.url, &admin, None).await.reader;
    app.state.hub.publish(Audience::Fleet, &resync(1));
    assert!(admin_stream.next().await.unwrap().data.contains("marker 1"));
    // The tenant's stream stays silent: nothing arrives within a second.
    let nothing = tokio::time::timeout(Duration::from_secs(1), tenant_stream.next()).await;
    assert!(nothing.is_err(), "tenant received {nothing:?}");
    server.stop().await;
}

#[tokio::test]
async fn streams_end_when_the_server_shuts_down() {
    let (_app, server) = server().await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let mut reader = SseReader::open(&server.url, &cookie, None).await.reader;
    // `stop` fails the test if graceful shutdown hangs on the open stream.
    server.stop().await;
    assert!(reader.next().await.is_none(), "the stream ended");
}
