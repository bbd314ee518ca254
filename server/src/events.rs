//! `GET /api/events`: the live stream (server-sent events), filtered by who is watching.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use converge_api::{LiveEvent, Resync, Role};
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::auth::{Principal, still_signed_in};
use crate::hub::{Hub, Published};
use crate::state::AppState;

/// How often an open stream checks that its session still stands (not signed out,
/// account unchanged, kiosk token not revoked, lifetime not over).
const SESSION_RECHECK: Duration = Duration::from_secs(2);

pub(crate) async fn events(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let viewer = Viewer {
        role: principal.user.role,
        projects: principal.user.projects.clone().into(),
    };
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    let keepalive = Duration::from_secs(state.config.events.keepalive_s);
    let ended = async move {
        tokio::select! {
            // Or graceful shutdown would wait on the stream forever.
            () = shutdown.cancelled_owned() => {}
            () = session_ends(&state, &principal) => {
                tracing::info!(username = %principal.user.username, "live stream ended: the session is over");
            }
        }
    };
    let stream = viewer_stream(&hub, viewer, last_seen);
    Sse::new(stream.take_until(ended)).keep_alive(KeepAlive::new().interval(keepalive))
}

/// Resolves when the principal's session no longer stands.
async fn session_ends(state: &AppState, principal: &Principal) {
    let mut every = tokio::time::interval(SESSION_RECHECK);
    every.tick().await;
    loop {
        every.tick().await;
        if !still_signed_in(state, &principal.session).await {
            return;
        }
    }
}

/// Who is watching, as far as filtering events goes.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The viewer's role.
    pub(crate) role: Role,
    /// A tenant's projects.
    pub(crate) projects: Arc<[String]>,
}

/// One viewer's events: a resync notice if it resumed from too far back, the buffered
/// events it missed, then live events — each filtered by `role`. A viewer that falls
/// behind the live stream is told to resync, never silently cut off.
pub(crate) fn viewer_stream(
    hub: &Hub,
    viewer: Viewer,
    last_seen: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<> {
    let subscription = hub.subscribe(last_seen);
    let resync = subscription
        .missed
        .then(|| resync_event("the stream resumed from further back than the server keeps"));
    let backlog = subscription.backlog;
    let for_live = viewer.clone();
    let live = BroadcastStream::new(subscription.live).filter_map(move |item| {
        let viewer = for_live.clone();
        async move {
            match item {
                Ok(published) => to_event(&published, &viewer),
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(resync_event(&format!(
                    "this viewer fell {missed} events behind"
                ))),
            }
        }
    });
    stream::iter(resync)
        .chain(stream::iter(
            backlog
                .into_iter()
                .filter_map(move |p| to_event(&p, &viewer)),
        ))
        .chain(live)
        .map(Ok)
}

fn to_event(published: &Arc<Published>, viewer: &Viewer) -> Option<Event> {
    published
        .audience
        .admits(viewer.role, &viewer.projects)
        .then(|| {
            Event::default()
                .id(published.seq.to_string())
                .event(published.name)
                .data(&published.json)
        })
}

/// A resync carries no id: the viewer's `Last-Event-ID` stays at the last real event.
fn resync_event(reason: &str) -> Event {
    let event = LiveEvent::Resync(Resync {
        reason: reason.to_owned(),
    });
    let json = serde_json::to_string(&event).unwrap_or_else(|_| "{\"type\":\"resync\"}".into());
    Event::default().event("resync").data(json)
}
