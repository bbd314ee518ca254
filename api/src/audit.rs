//! The audit log: who did what, when, to which VM or migration, and how it went.

use serde::{Deserialize, Serialize};

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When (unix ms).
    pub at_ms: i64,
    /// The user, or `policy` for what a migration's deadline policy did.
    pub actor: String,
    /// Where the request came from (none for policy).
    pub client_addr: Option<String>,
    /// What: `sign_in`, `start`, `abort`, `downtime_limit`, `bandwidth`, …
    pub action: String,
    /// The VM concerned, by name.
    pub vm: Option<String>,
    /// The migration concerned.
    pub migration_id: Option<String>,
    /// Parameters and reason, in words.
    pub details: String,
    /// `pending` until done, then `ok` or the error.
    pub result: String,
}
