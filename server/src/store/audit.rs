//! The audit log: who did what, written (as `pending`) before it is carried out and
//! completed with its result after.

use converge_api::AuditEntry;

use super::{Error, Store};

/// An action about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The user, or `policy`.
    pub actor: String,
    /// The client's address, for requests.
    pub client_addr: Option<String>,
    /// What (`start`, `abort`, `downtime_limit`, …).
    pub action: String,
    /// The VM's name.
    pub vm: Option<String>,
    /// The migration's id.
    pub migration_id: Option<String>,
    /// Parameters and reason.
    pub details: String,
}

impl NewEntry {
    /// An entry for `action` asked by `actor` from `client_addr`, about no VM yet and
    /// without details.
    pub fn request(actor: &str, client_addr: std::net::IpAddr, action: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            client_addr: Some(client_addr.to_string()),
            action: action.to_owned(),
            vm: None,
            migration_id: None,
            details: String::new(),
        }
    }

    /// The same, about this VM and migration.
    pub fn about(mut self, vm: Option<String>, migration_id: &str) -> Self {
        self.vm = vm;
        self.migration_id = Some(migration_id.to_owned());
        self
    }

    /// The same, with these details (parameters and reason).
    pub fn with_details(mut self, details: String) -> Self {
        self.details = details;
        self
    }
}

impl Store {
    /// Writes the entry with result `pending`, before the action is carried out.
    pub async fn audit_begin(&self, at_ms: i64, entry: &NewEntry) -> Result<i64, Error> {
        self.audit_record(at_ms, entry, "pending").await
    }

    /// Writes a finished entry in one go (e.g. a sign-in).
    pub async fn audit_record(
        &self,
        at_ms: i64,
        entry: &NewEntry,
        result: &str,
    ) -> Result<i64, Error> {
        let done = sqlx::query(
            "INSERT INTO audit (at_ms, actor, client_addr, action, vm, migration_id, details, \
             result) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(at_ms)
        .bind(&entry.actor)
        .bind(&entry.client_addr)
        .bind(&entry.action)
        .bind(&entry.vm)
        .bind(&entry.migration_id)
        .bind(&entry.details)
        .bind(result)
        .execute(&self.pool)
        .await?;
        Ok(done.last_insert_rowid())
    }

    /// Sets the result of an entry written by [`Self::audit_begin`].
    pub async fn audit_finish(&self, id: i64, result: &str) -> Result<(), Error> {
        sqlx::query("UPDATE audit SET result = ? WHERE id = ?")
            .bind(result)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Entries newest first, at most `limit`, older than `before_id` when given.
    pub async fn audit_entries(
        &self,
        limit: i64,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEntry>, Error> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at_ms, actor, client_addr, action, vm, migration_id, details, result \
             FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }
}

/// A row of the `audit` table.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at_ms: i64,
    actor: String,
    client_addr: Option<String>,
    action: String,
    vm: Option<String>,
    migration_id: Option<String>,
    details: String,
    result: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at_ms: row.at_ms,
            actor: row.actor,
            client_addr: row.client_addr,
            action: row.action,
            vm: row.vm,
            migration_id: row.migration_id,
            details: row.details,
            result: row.result,
        }
    }
}
