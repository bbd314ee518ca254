//! `GET /api/health`: answers while the server runs; no sign-in needed.

use axum::Router;
use axum::routing::get;
use converge_api::Health;

use crate::error::Json;
use crate::state::AppState;

/// `/health`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}
