//! The live stream over a real socket: resume, resync, scope, shutdown.

use std::sync::Arc;
use std::time::Duration;

use converge_api::{LiveEvent, Resync};
use converge_server::hub::Audience;
use futures_util::StreamExt;

use crate::support::{ADMIN_PASSWORD, LiveServer, TENANT_PASSWORD, TestApp, http_login};

/// One parsed server-sent event.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// Reads events from an open `text/event-stream` response.
struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    async fn open(
        url: &str,
        cookie: &str,
        last_event_id: Option<u64>,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Self) {
        let mut request = reqwest::Client::new()
            .get(format!("{url}/api/events"))
            .header("cookie", cookie)
            .header("accept-encoding", "gzip, br");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let reader = Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        };
        (status, headers, reader)
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
}

fn resync(n: u32) -> LiveEvent {
    LiveEvent::Resync(Resync {
        reason: format!("marker {n}"),
    })
}

async fn server() -> (TestApp, LiveServer) {
    let app = TestApp::new().await;
    let server = LiveServer::start(app.state.clone()).await;
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
    let (status, headers, mut reader) = SseReader::open(&server.url, &cookie, None).await;
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
    let (_, _, mut reader) = SseReader::open(&server.url, &cookie, Some(start + 1)).await;
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
    let server = LiveServer::start(app.state.clone()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    for n in 0..40 {
        app.state.hub.publish(Audience::Fleet, &resync(n));
    }
    let (_, _, mut reader) = SseReader::open(&server.url, &cookie, Some(1)).await;
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
    let server = LiveServer::start(app.state.clone()).await;
    let cookie = http_login(&server.url, "admin", ADMIN_PASSWORD).await;
    let (_, _, mut reader) = SseReader::open(&server.url, &cookie, None).await;
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
    let (_, _, mut tenant_stream) = SseReader::open(&server.url, &tenant, None).await;
    let (_, _, mut admin_stream) = SseReader::open(&server.url, &admin, None).await;
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
    let (_, _, mut reader) = SseReader::open(&server.url, &cookie, None).await;
    // `stop` fails the test if graceful shutdown hangs on the open stream.
    server.stop().await;
    assert!(reader.next().await.is_none(), "the stream ended");
}
