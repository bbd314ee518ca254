//! Converge's controller: a thin axum server that authenticates users, serves the
//! dashboard, and (in later parts) drives libvirt and streams migration updates.
//!
//! [`router`] builds the whole HTTP surface from an [`AppState`]; [`serve`] runs it on a
//! listener until a shutdown future resolves. `main.rs` only parses the command line and
//! loads the configuration.

pub mod audit;
pub mod auth;
pub mod config;
mod error;
mod events;
pub mod fleet;
pub mod forecast;
mod hardening;
mod health;
mod hosts;
pub mod hub;
pub mod hypervisor;
pub mod kiosk;
pub mod metrics;
mod migrations;
pub mod policy;
pub mod presets;
pub mod routes;
pub mod state;
pub mod store;
mod tenant;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::middleware;
use axum::response::Response;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;
use tracing::Level;

pub use error::{ApiError, Json};
pub use state::AppState;

/// Largest JSON body the API reads; every request it serves is a few hundred bytes.
const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// How often sessions past their expiry are deleted from the database.
const EXPIRED_SESSION_SWEEP: Duration = Duration::from_secs(600);

/// The whole HTTP surface: `/api/*` and the dashboard's files.
pub fn router(state: AppState) -> Router {
    let session = &state.config.session;
    let sessions = SessionManagerLayer::new(store::session_store(&state.db))
        .with_name(session.cookie_name.clone())
        .with_path("/api")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(session.secure_cookie)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(
            session.idle_timeout_minutes.into(),
        )));
    let api = routes::api()
        .fallback(error::api_route_not_found)
        .layer(DefaultBodyLimit::max(MAX_API_BODY_BYTES))
        .layer(sessions)
        // Before the session is even loaded: a cross-site request changes nothing.
        .layer(middleware::from_fn_with_state(
            hardening::AllowedOrigins(state.config.server.allowed_origins.clone().into()),
            hardening::refuse_cross_site,
        ))
        // The default predicate already skips `text/event-stream`, so live streams are
        // never held back in a compressor's buffer.
        .layer(CompressionLayer::new());
    let dist = state.config.server.dist_dir.clone();
    let policy = std::sync::Arc::new(hardening::Policy::new(dist.join("index.html")));
    Router::new()
        .nest("/api", api)
        .fallback_service(web::service(&dist))
        .layer(middleware::map_response(move |response: Response| {
            let csp = policy.current();
            async move { hardening::with_security_headers(response, csp) }
        }))
        .layer(
            // Method and path only: a query string or header may carry a credential.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let dist = &state.config.server.dist_dir;
    if !dist.join("index.html").is_file() {
        tracing::warn!(dist = %dist.display(), "no dashboard build found; the API works, the UI will not (run scripts/build-ui)");
    }
    let state_stopped = state.shutdown.clone();
    let sweeper = tokio::spawn(delete_expired_sessions(store::session_store(&state.db)));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/"), "listening");
    }
    let stopping = state.shutdown.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Ends live streams (or graceful shutdown waits on them forever) and stops
            // the host workers.
            stopping.cancel();
        })
        .await;
    state_stopped.cancel();
    sweeper.abort();
    tracing::info!("server stopped");
    served
}

async fn delete_expired_sessions(store: SqliteStore) {
    use tower_sessions::session_store::ExpiredDeletion;
    let mut every = tokio::time::interval(EXPIRED_SESSION_SWEEP);
    loop {
        every.tick().await;
        if let Err(err) = store.delete_expired().await {
            tracing::warn!(error = %err, "could not delete expired sessions");
        }
    }
}
