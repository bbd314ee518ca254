//! Host drains: each one's plan and progress, written whole at every change, so that a
//! restarted server continues them.

use converge_api::Drain;

use super::{Error, Store};

impl Store {
    /// Inserts or updates a drain.
    pub async fn save_drain(&self, drain: &Drain) -> Result<(), Error> {
        let doc = serde_json::to_string(drain).map_err(|err| Error::Encode(err.into()))?;
        sqlx::query(
            "INSERT INTO drains (id, state, created_at_ms, ended_at_ms, created_by, doc_json) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                 ended_at_ms = excluded.ended_at_ms, doc_json = excluded.doc_json",
        )
        .bind(&drain.id)
        .bind(drain.state.wire_name())
        .bind(drain.created_at_ms)
        .bind(drain.ended_at_ms)
        .bind(&drain.created_by)
        .bind(doc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drains not over yet (the server stopped while they ran), oldest first.
    pub async fn active_drains(&self) -> Result<Vec<Drain>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT doc_json FROM drains WHERE state IN ('running', 'paused', 'cancelling') \
             ORDER BY created_at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        decode(rows)
    }

    /// Drains, newest first, at most `limit`.
    pub async fn drains(&self, limit: i64) -> Result<Vec<Drain>, Error> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT doc_json FROM drains ORDER BY created_at_ms DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        decode(rows)
    }

    /// One drain.
    pub async fn drain(&self, id: &str) -> Result<Option<Drain>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT doc_json FROM drains WHERE id = ?")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(decode(rows)?.pop())
    }
}

fn decode(rows: Vec<(String,)>) -> Result<Vec<Drain>, Error> {
    rows.into_iter()
        .map(|(json,)| serde_json::from_str(&json).map_err(|err| Error::Decode(err.into())))
        .collect()
}
