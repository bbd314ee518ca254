//! The HTTP edge: the route table, the handlers (each parses a request, checks who asks,
//! calls the domain and maps its typed result), the extractors, the one error type,
//! hardening, the accept loop, static files and the live stream. No SQL and no libvirt
//! here — except `migrations.rs`, whose start handler still carries the start service
//! (preset, lint, measure, adapt, begin, persist, audit, migrate) until it is split out.

pub(crate) mod audit;
pub mod auth;
pub(crate) mod drains;
pub mod error;
pub(crate) mod events;
pub(crate) mod hardening;
pub(crate) mod health;
pub(crate) mod hosts;
pub(crate) mod kiosk;
pub(crate) mod listener;
pub(crate) mod migrations;
pub mod routes;
pub mod state;
pub(crate) mod tenant;
pub(crate) mod web;

/// The `limit` of a paged list: `default` when not given, refused unless 1–500.
pub(crate) fn page_limit(limit: Option<i64>, default: i64) -> Result<i64, error::ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=500).contains(&limit) {
        Ok(limit)
    } else {
        Err(error::ApiError::Unprocessable(
            "limit must be between 1 and 500".into(),
        ))
    }
}
