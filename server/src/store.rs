//! The SQLite database: opening it and preparing its tables.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use converge_api::{Migration, MigrationState};
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
    sqlx::migrate!("./migrations").run(&pool).await?;
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

/// Inserts or updates a migration's row.
pub async fn save_migration(pool: &SqlitePool, migration: &Migration) -> Result<(), sqlx::Error> {
    let summary =
        serde_json::to_string(migration).map_err(|err| sqlx::Error::Encode(err.into()))?;
    sqlx::query(
        "INSERT INTO migrations (id, vm_uuid, vm_name, source, destination, state, \
             started_at_ms, ended_at_ms, started_by, summary_json) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET destination = excluded.destination, \
             state = excluded.state, ended_at_ms = excluded.ended_at_ms, \
             summary_json = excluded.summary_json",
    )
    .bind(&migration.id)
    .bind(&migration.vm_uuid)
    .bind(&migration.vm_name)
    .bind(&migration.source)
    .bind(&migration.destination)
    .bind(state_name(migration.state))
    .bind(migration.started_at_ms)
    .bind(migration.ended_at_ms)
    .bind(&migration.started_by)
    .bind(summary)
    .execute(pool)
    .await?;
    Ok(())
}

/// Migrations the database still records as in flight (the server stopped meanwhile).
pub async fn active_migrations(pool: &SqlitePool) -> Result<Vec<Migration>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT summary_json FROM migrations WHERE state IN ('starting', 'running', 'post_copy') \
         ORDER BY started_at_ms",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(json,)| serde_json::from_str(&json).map_err(|err| sqlx::Error::Decode(err.into())))
        .collect()
}

/// Every migration of the database, newest first (at most `limit`).
pub async fn recent_migrations(
    pool: &SqlitePool,
    limit: i64,
) -> Result<Vec<Migration>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT summary_json FROM migrations ORDER BY started_at_ms DESC LIMIT ?")
            .bind(limit)
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(json,)| serde_json::from_str(&json).map_err(|err| sqlx::Error::Decode(err.into())))
        .collect()
}

fn state_name(state: MigrationState) -> &'static str {
    match state {
        MigrationState::Starting => "starting",
        MigrationState::Running => "running",
        MigrationState::PostCopy => "post_copy",
        MigrationState::Completed => "completed",
        MigrationState::Failed => "failed",
        MigrationState::Aborted => "aborted",
        MigrationState::Unknown => "unknown",
    }
}
