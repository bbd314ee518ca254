//! Converge's controller: a thin axum server that authenticates users, serves the
//! dashboard, drives libvirt and streams migration updates.
//!
//! [`router`] builds the whole HTTP surface from an [`AppState`]; [`serve`] runs it on a
//! listener until a shutdown future resolves. `main.rs` only parses the command line and
//! loads the configuration.

pub mod auth;
pub mod background;
pub mod clock;
pub mod config;
pub mod drain;
pub mod fleet;
pub mod forecast;
pub mod http;
pub mod hub;
pub mod hypervisor;
pub mod kiosk;
pub mod metrics;
pub mod policy;
pub mod presets;
pub mod store;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::middleware;
use axum::response::Response;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tracing::Level;

pub use http::error::{ApiError, Json, Path, Query};
pub use http::routes;
pub use http::state::{AppState, Controller, StartupError};

/// Largest JSON body the API reads; every request it serves is a few hundred bytes.
const MAX_API_BODY_BYTES: usize = 64 * 1024;

/// The whole HTTP surface: `/api/*` and the dashboard's files.
pub fn router(state: AppState) -> Router {
    let session = &state.config.session;
    let sessions = SessionManagerLayer::new(state.sessions.clone())
        .with_name(session.cookie_name.clone())
        .with_path(converge_api::paths::PREFIX)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(session.secure_cookie)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(
            session.idle_timeout_minutes.into(),
        )));
    let body_timeout = Duration::from_secs(state.config.server.body_timeout_s);
    let api = http::routes::api()
        .fallback(http::error::api_route_not_found)
        .method_not_allowed_fallback(http::error::api_method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_API_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(sessions)
        .layer(middleware::from_fn(http::hardening::no_store))
        // Before the session is even loaded: a cross-site request changes nothing.
        .layer(middleware::from_fn_with_state(
            http::hardening::AllowedOrigins(state.config.server.allowed_origins.clone().into()),
            http::hardening::refuse_cross_site,
        ))
        // The default predicate already skips `text/event-stream`, so live streams are
        // never held back in a compressor's buffer.
        .layer(CompressionLayer::new());
    let dist = state.config.server.dist_dir.clone();
    let policy = std::sync::Arc::new(http::hardening::Policy::new(dist.join("index.html")));
    let hosts = http::hardening::AllowedHosts::from_config(&state.config.server);
    Router::new()
        .nest(converge_api::paths::PREFIX, api)
        .fallback_service(http::web::service(&dist))
        // Before anything else: a request for another host name (DNS rebinding) gets
        // neither a file nor an API answer.
        .layer(middleware::from_fn_with_state(
            hosts,
            http::hardening::refuse_foreign_host,
        ))
        .layer(middleware::map_response(move |response: Response| {
            let csp = policy.current();
            async move { http::hardening::with_security_headers(response, csp) }
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
/// finish and shuts the background work down in order (queued writes land). Connections
/// are bounded as `[server]` says (see `listener.rs`).
pub async fn serve(
    listener: TcpListener,
    controller: Controller,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Controller { state, background } = controller;
    let dist = &state.config.server.dist_dir;
    if !dist.join("index.html").is_file() {
        tracing::warn!(dist = %dist.display(), "no dashboard build found; the API works, the UI will not (run scripts/build-ui)");
    }
    let stopping = state.shutdown.clone();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/"), "listening");
    }
    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Ends live streams (or graceful shutdown waits on them forever) and stops the
        // host workers.
        stop.cancel();
    });
    let limits = http::listener::Limits::from_config(&state.config.server);
    let served = http::listener::serve(listener, router(state), limits, stopping.clone()).await;
    // What was published is on disk before the process goes (each step bounded: a
    // database that hangs must not hang the shutdown).
    background.shutdown().await;
    tracing::info!("server stopped");
    served
}
