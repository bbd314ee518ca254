//! Sessions: tower-sessions' own table, and the queries Converge runs over it.

use std::collections::HashSet;

use time::OffsetDateTime;
use tower_sessions::session::Id;
use tower_sessions_sqlx_store::SqliteStore;

use super::{Error, Store};

/// tower-sessions' store of session rows, for this database.
pub type SessionRows = SqliteStore;

impl Store {
    /// tower-sessions' store over this database's session table.
    pub fn session_rows(&self) -> SessionRows {
        SqliteStore::new(self.pool.clone())
    }

    /// The ids of the sessions whose rows exist and have not expired (one query for all).
    pub async fn live_session_ids(&self) -> Result<HashSet<Id>, Error> {
        // The store's own table and expiry test (see `SqliteStore::load`); the table name
        // is the store's default, which `session_rows` does not change.
        let live: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM tower_sessions WHERE expiry_date > ?")
                .bind(OffsetDateTime::now_utc())
                .fetch_all(&self.pool)
                .await?;
        Ok(live
            .into_iter()
            .filter_map(|(id,)| id.parse().ok())
            .collect())
    }

    /// Ends every session at once (e.g. after a credential leak); each browser returns to
    /// the sign-in page on its next request.
    pub async fn delete_all_sessions(&self) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM tower_sessions")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
