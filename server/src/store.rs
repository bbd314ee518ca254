//! The database, behind one type: every SQL statement the server runs is in this module.
//!
//! [`Store`] is what the rest of the server holds; its methods are grouped by table in
//! the submodules (`migrations`, `audit`, `drains`, `kiosk_tokens`, `sessions`). Callers never see
//! a connection or a query, so a second backend (PostgreSQL, for more than one
//! controller) can be added beside SQLite here without touching them.

mod audit;
mod drains;
mod kiosk_tokens;
mod migrations;
mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use audit::NewEntry;
pub use kiosk_tokens::StoredKioskToken;
pub use sessions::SessionRows;
/// What went wrong talking to the database.
pub use sqlx::Error;

/// The database. Clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the SQLite file at `path` and brings its tables up to
    /// date.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            // WAL lets readers (dashboards) proceed while a writer (sampler, audit)
            // commits; NORMAL is durable across process crashes, which is what a
            // controller sees.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let store = Self { pool };
        store.session_rows().migrate().await?;
        sqlx::migrate!("./migrations").run(&store.pool).await?;
        Ok(store)
    }

    /// Closes every connection (waiting for queries in flight); later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
