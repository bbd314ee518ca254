//! `GET /api/audit` (admins): the audit log, newest first.

use axum::extract::State;
use converge_api::AuditEntry;
use serde::Deserialize;

use crate::auth::ReadAudit;
use crate::http::auth::Require;
use crate::http::error::{ApiError, Json, Query};
use crate::http::state::AppState;

/// Query of `GET /api/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// At most this many (1–500, default 100).
    limit: Option<i64>,
    /// Entries older than this id (for the next page).
    before: Option<i64>,
}

pub(crate) async fn list_entries(
    _: Require<ReadAudit>,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = crate::http::page_limit(page.limit, 100)?;
    state
        .store
        .audit_entries(limit, page.before)
        .await
        .map(Json)
        .map_err(|err| ApiError::internal("reading the audit log", err))
}
