//! `GET /api/events`: the live stream (server-sent events), filtered by who is watching.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use converge_api::{LiveEvent, Resync, Role};
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::auth::Principal;
use crate::hub::{Hub, Published};
use crate::state::AppState;

/// `/events`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

async fn events(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let role = principal.user.role;
    let stream = viewer_stream(&state.hub, role, last_seen)
        // Streams end when shutdown starts, or graceful shutdown would wait forever.
        .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(state.config.events.keepalive_s)))
}

/// One viewer's events: a resync notice if it resumed from too far back, the buffered
/// events it missed, then live events — each filtered by `role`. A viewer that falls
/// behind the live stream is told to resync, never silently cut off.
pub(crate) fn viewer_stream(
    hub: &Hub,
    role: Role,
    last_seen: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<> {
    let subscription = hub.subscribe(last_seen);
    let resync = subscription
        .missed
        .then(|| resync_event("the stream resumed from further back than the server keeps"));
    let backlog = subscription.backlog;
    let live = BroadcastStream::new(subscription.live).filter_map(move |item| async move {
        match item {
            Ok(published) => to_event(&published, role),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(resync_event(&format!(
                "this viewer fell {missed} events behind"
            ))),
        }
    });
    stream::iter(resync)
        .chain(stream::iter(
            backlog.into_iter().filter_map(move |p| to_event(&p, role)),
        ))
        .chain(live)
        .map(Ok)
}

fn to_event(published: &Arc<Published>, role: Role) -> Option<Event> {
    published.audience.admits(role).then(|| {
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
