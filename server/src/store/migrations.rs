//! Migrations and their history: summaries, downsampled samples and pass boundaries.

use converge_api::{IterationMark, Migration, MigrationDetail, Sample};

use super::{Error, Store};

impl Store {
    /// Inserts or updates a migration's row.
    pub async fn save_migration(&self, migration: &Migration) -> Result<(), Error> {
        let summary = serde_json::to_string(migration).map_err(|err| Error::Encode(err.into()))?;
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
        .bind(migration.state.wire_name())
        .bind(migration.started_at_ms)
        .bind(migration.ended_at_ms)
        .bind(&migration.started_by)
        .bind(summary)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Migrations the database still records as in flight (the server stopped meanwhile).
    pub async fn active_migrations(&self) -> Result<Vec<Migration>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT summary_json FROM migrations WHERE state IN ('starting', 'running', 'post_copy') \
             ORDER BY started_at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        decode_all(rows)
    }

    /// Migrations of the database, newest first: at most `limit`, started before `before_ms`.
    pub async fn history(
        &self,
        limit: i64,
        before_ms: Option<i64>,
    ) -> Result<Vec<Migration>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT summary_json FROM migrations WHERE started_at_ms < ? \
             ORDER BY started_at_ms DESC LIMIT ?",
        )
        .bind(before_ms.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        decode_all(rows)
    }

    /// A VM's migrations, newest first, at most `limit`.
    pub async fn migrations_of_vm(
        &self,
        vm_uuid: &str,
        limit: i64,
    ) -> Result<Vec<Migration>, Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT summary_json FROM migrations WHERE vm_uuid = ? ORDER BY started_at_ms DESC LIMIT ?",
        )
        .bind(vm_uuid)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        decode_all(rows)
    }

    /// How many migrations ended in each final state, by the state's wire name. Every
    /// migration is kept, so the counts only grow.
    pub async fn count_finished(&self) -> Result<Vec<(String, u64)>, Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM migrations \
             WHERE state IN ('completed', 'failed', 'aborted', 'unknown') GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(state, n)| (state, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Appends a (downsampled) sample to a migration's history.
    pub async fn save_sample(&self, migration_id: &str, sample: &Sample) -> Result<(), Error> {
        let json = serde_json::to_string(sample).map_err(|err| Error::Encode(err.into()))?;
        sqlx::query(
            "INSERT INTO migration_samples (migration_id, at_ms, sample_json) VALUES (?, ?, ?)",
        )
        .bind(migration_id)
        .bind(sample.at_ms)
        .bind(json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Halves a migration's stored samples (every other one goes), keeping the shape of a
    /// long migration within a fixed number of rows.
    pub async fn thin_samples(&self, migration_id: &str) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM migration_samples WHERE id IN ( \
                 SELECT id FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY at_ms) AS n \
                                 FROM migration_samples WHERE migration_id = ?) \
                 WHERE n % 2 = 0)",
        )
        .bind(migration_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records (or updates) a pass boundary.
    pub async fn save_iteration(
        &self,
        migration_id: &str,
        mark: &IterationMark,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO migration_iterations (migration_id, iteration, at_ms, elapsed_ms, mem_remaining_bytes) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (migration_id, iteration) DO UPDATE SET mem_remaining_bytes = excluded.mem_remaining_bytes",
        )
        .bind(migration_id)
        .bind(i64::from(mark.iteration))
        .bind(mark.at_ms)
        .bind(i64::try_from(mark.elapsed_ms).unwrap_or(i64::MAX))
        .bind(i64::try_from(mark.mem_remaining_bytes).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A migration from the database with its stored samples and boundaries.
    pub async fn migration_detail(&self, id: &str) -> Result<Option<MigrationDetail>, Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT summary_json FROM migrations WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((json,)) = row else {
            return Ok(None);
        };
        let migration: Migration =
            serde_json::from_str(&json).map_err(|err| Error::Decode(err.into()))?;
        let samples: Vec<(String,)> = sqlx::query_as(
            "SELECT sample_json FROM migration_samples WHERE migration_id = ? ORDER BY at_ms",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let samples = samples
            .into_iter()
            .map(|(json,)| serde_json::from_str(&json).map_err(|err| Error::Decode(err.into())))
            .collect::<Result<Vec<Sample>, _>>()?;
        let marks: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT iteration, at_ms, elapsed_ms, mem_remaining_bytes FROM migration_iterations \
             WHERE migration_id = ? ORDER BY iteration",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let iterations = marks
            .into_iter()
            .map(|(iteration, at_ms, elapsed_ms, remaining)| IterationMark {
                iteration: u32::try_from(iteration).unwrap_or(0),
                at_ms,
                elapsed_ms: u64::try_from(elapsed_ms).unwrap_or(0),
                mem_remaining_bytes: u64::try_from(remaining).unwrap_or(0),
            })
            .collect();
        Ok(Some(MigrationDetail {
            migration,
            samples,
            iterations,
            raw_job_stats: Vec::new(),
        }))
    }
}

fn decode_all(rows: Vec<(String,)>) -> Result<Vec<Migration>, Error> {
    rows.into_iter()
        .map(|(json,)| serde_json::from_str(&json).map_err(|err| Error::Decode(err.into())))
        .collect()
}
