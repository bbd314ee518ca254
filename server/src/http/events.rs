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

use crate::http::auth::Principal;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::hub::{Hub, Published, Subscription};

/// How often a wall screen's stream marks its kiosk link as used (the write itself
/// happens at most once a minute).
const KIOSK_USED_EVERY: Duration = Duration::from_secs(30);

pub(crate) async fn events(
    principal: Principal,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Some(session_id) = principal.session.id() else {
        return Err(ApiError::Unauthenticated);
    };
    // Ends with its session (sign-out, expiry, a revoked kiosk link) through the ticket:
    // no per-stream database reads.
    let ticket = state
        .sessions
        .open_stream(
            session_id,
            principal.stream_owner(),
            state.config.events.max_streams_per_principal,
        )
        .map_err(|refused| {
            tracing::warn!(username = %principal.user.username, open = refused.open, "live stream refused: too many open");
            ApiError::TooManyStreams(refused.to_string())
        })?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let viewer = Viewer {
        role: principal.user.role,
        projects: principal.user.projects.clone().into(),
    };
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    let keepalive = Duration::from_secs(state.config.events.keepalive_s);
    let ended = async move {
        let session_over = ticket.ended();
        let lifetime_left =
            u64::try_from(principal.ends_at(&state) - state.clock.now().unix_timestamp())
                .unwrap_or(0);
        tokio::select! {
            // Or graceful shutdown would wait on the stream forever.
            () = shutdown.cancelled_owned() => {}
            () = session_over.cancelled() => {
                tracing::info!(username = %principal.user.username, "live stream ended: the session is over");
            }
            () = tokio::time::sleep(Duration::from_secs(lifetime_left)) => {
                tracing::info!(username = %principal.user.username, "live stream ended: the session's lifetime is over");
            }
            () = keep_kiosk_link_used(&state, principal.kiosk_token) => {}
        }
        drop(ticket);
    };
    let stream = viewer_stream(&hub, viewer, last_event_id.as_deref());
    Ok(Sse::new(stream.take_until(ended)).keep_alive(KeepAlive::new().interval(keepalive)))
}

/// A wall screen is mostly its stream: keeps its kiosk link's "last used" current. Never
/// resolves.
async fn keep_kiosk_link_used(state: &AppState, kiosk_token: Option<i64>) {
    let Some(id) = kiosk_token else {
        return std::future::pending().await;
    };
    let mut every = tokio::time::interval(KIOSK_USED_EVERY);
    loop {
        every.tick().await;
        state
            .kiosk
            .used(&state.store, id, crate::clock::unix_ms_now(&*state.clock))
            .await;
    }
}

/// Who is watching, as far as choosing their events goes.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The viewer's role.
    pub(crate) role: Role,
    /// A tenant's projects.
    pub(crate) projects: Arc<[String]>,
}

/// What one audience's channel yields to a viewer.
enum Item {
    Event(Arc<Published>),
    /// The viewer fell this many events behind the live stream.
    Lagged(u64),
    /// The viewer resumed from further back than the channel keeps.
    Missed,
}

/// One viewer's events: a resync notice if it resumed from too far back, the buffered
/// events it missed, then live events. A viewer that falls behind is told to resync,
/// never silently cut off.
///
/// Fleet viewers read the fleet's channel; their event id is its sequence number.
/// Tenants read their projects' channels only; their event id is the position in each
/// of them, in the order of their sorted project names (`"12.0.7"`), so a tenant resumes
/// every project exactly where it was and learns nothing of any other audience.
pub(crate) fn viewer_stream(
    hub: &Hub,
    viewer: Viewer,
    last_event_id: Option<&str>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static + use<> {
    let stream: futures_util::stream::BoxStream<'static, Event> = if viewer.role.sees_whole_fleet()
    {
        let last_seen = last_event_id.and_then(|v| v.trim().parse::<u64>().ok());
        channel_items(hub.subscribe_fleet(last_seen))
            .map(|item| match item {
                Item::Event(p) => event_of(&p, p.seq.to_string()),
                Item::Lagged(missed) => {
                    resync_event(&format!("this viewer fell {missed} events behind"))
                }
                Item::Missed => resync_event(RESUMED_TOO_LATE),
            })
            .boxed()
    } else if viewer.role == Role::Tenant {
        tenant_stream(hub, &viewer.projects, last_event_id).boxed()
    } else {
        stream::empty().boxed()
    };
    stream.map(Ok)
}

const RESUMED_TOO_LATE: &str = "the stream resumed from further back than the server keeps";

fn tenant_stream(
    hub: &Hub,
    projects: &[String],
    last_event_id: Option<&str>,
) -> impl Stream<Item = Event> + Send + 'static + use<> {
    let mut projects: Vec<String> = projects.to_vec();
    projects.sort();
    projects.dedup();
    let resumed: Option<Vec<u64>> = last_event_id
        .map(|id| {
            id.trim()
                .split('.')
                .map(|n| n.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()
        })
        .and_then(|positions| positions.filter(|p| p.len() == projects.len()));
    let mut positions = Vec::with_capacity(projects.len());
    let channels: Vec<_> = projects
        .iter()
        .enumerate()
        .map(|(i, project)| {
            let since = resumed.as_ref().map(|p| p[i]);
            let subscription = hub.subscribe_project(project, since);
            positions.push(since.unwrap_or(subscription.position));
            channel_items(subscription)
                .map(move |item| (i, item))
                .boxed()
        })
        .collect();
    stream::select_all(channels).map(move |(i, item)| match item {
        Item::Event(p) => {
            positions[i] = p.seq;
            let id: Vec<String> = positions.iter().map(u64::to_string).collect();
            event_of(&p, id.join("."))
        }
        Item::Lagged(_) => resync_event("this viewer fell behind"),
        Item::Missed => resync_event(RESUMED_TOO_LATE),
    })
}

fn channel_items(subscription: Subscription) -> impl Stream<Item = Item> + Send + 'static {
    let missed = subscription.missed.then_some(Item::Missed);
    let live = BroadcastStream::new(subscription.live).map(|item| match item {
        Ok(published) => Item::Event(published),
        Err(BroadcastStreamRecvError::Lagged(missed)) => Item::Lagged(missed),
    });
    stream::iter(missed)
        .chain(stream::iter(
            subscription.backlog.into_iter().map(Item::Event),
        ))
        .chain(live)
}

fn event_of(published: &Published, id: String) -> Event {
    Event::default()
        .id(id)
        .event(published.name)
        .data(&published.json)
}

/// A resync carries no id: the viewer's `Last-Event-ID` stays at the last real event.
fn resync_event(reason: &str) -> Event {
    let event = LiveEvent::Resync(Resync {
        reason: reason.to_owned(),
    });
    let json = serde_json::to_string(&event).unwrap_or_else(|_| "{\"type\":\"resync\"}".into());
    Event::default()
        .event(converge_api::names::RESYNC)
        .data(json)
}
