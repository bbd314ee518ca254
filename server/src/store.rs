//! The SQLite database: opening it and preparing its tables.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tower_sessions_sqlx_store::SqliteStore;

/// Opens (creating if missing) the database file and brings its tables up to date.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(true)
        // WAL lets readers (dashboards) proceed while a writer (sampler, audit) commits;
        // NORMAL is durable across process crashes, which is what a controller sees.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    session_store(&pool).migrate().await?;
    Ok(pool)
}

/// The session store on this database.
pub fn session_store(pool: &SqlitePool) -> SqliteStore {
    SqliteStore::new(pool.clone())
}

/// Ends every session at once (e.g. after a credential leak); each browser returns to the
/// sign-in page on its next request.
pub async fn delete_all_sessions(pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    // The table name is the store's default; `session_store` does not rename it.
    let done = sqlx::query("DELETE FROM tower_sessions")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
