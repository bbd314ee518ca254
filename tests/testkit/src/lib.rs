//! Test helpers shared by the server's integration tests and the end-to-end tests.

// A test helper: a broken expectation should fail the test loudly, right here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod lab;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// Now, unix ms (what the server stamps its records and readings with).
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One parsed server-sent event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`, if the event had one.
    pub id: Option<String>,
    /// `event:`.
    pub event: String,
    /// `data:` (lines joined).
    pub data: String,
}

/// Reads events from an open `text/event-stream` response, as a browser would.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    /// How long [`SseReader::next`] waits for an event before failing the test.
    pub patience: Duration,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseReader")
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

/// An opened stream: the response's status and headers, and the reader.
#[derive(Debug)]
pub struct Opened {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The events.
    pub reader: SseReader,
}

impl SseReader {
    /// `GET {url}/api/events` with `cookie` (a `name=value` pair), resuming after
    /// `last_event_id` when given.
    pub async fn open(url: &str, cookie: &str, last_event_id: Option<u64>) -> Opened {
        Self::open_after(
            url,
            cookie,
            last_event_id.map(|id| id.to_string()).as_deref(),
        )
        .await
    }

    /// [`Self::open`] with the `Last-Event-ID` as the server wrote it (a tenant's is a
    /// list: `"3.0"`).
    pub async fn open_after(url: &str, cookie: &str, last_event_id: Option<&str>) -> Opened {
        let mut request = reqwest::Client::new()
            .get(format!("{url}/api/events"))
            .header("cookie", cookie)
            .header("accept-encoding", "gzip, br");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        Opened {
            status: response.status(),
            headers: response.headers().clone(),
            reader: Self {
                body: response.bytes_stream().boxed(),
                buffer: String::new(),
                patience: Duration::from_secs(10),
            },
        }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ends.
    /// Fails the test when nothing arrives within [`SseReader::patience`].
    pub async fn next(&mut self) -> Option<SseEvent> {
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
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !event.event.is_empty() || !event.data.is_empty() {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(self.patience, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {:?}", self.patience))?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
}
