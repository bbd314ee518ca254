//! `GET /api/health`: answers while the server runs; no sign-in needed.

use converge_api::Health;

use crate::http::error::Json;

pub(crate) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}
