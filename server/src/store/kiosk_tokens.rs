//! Kiosk tokens: only the SHA-256 of each secret is stored.

use super::{Error, Store};

/// A row of the `kiosk_tokens` table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKioskToken {
    /// Its id.
    pub id: i64,
    /// The screen it is for.
    pub label: String,
    /// The SHA-256 of its secret, in hex.
    pub secret_sha256: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// By whom.
    pub created_by: String,
    /// When a screen last used it (written at most once a minute).
    pub last_used_at_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_at_ms: Option<i64>,
    /// When it stops working, if it does.
    pub expires_at_ms: Option<i64>,
}

impl Store {
    /// Every kiosk token ever made.
    pub async fn kiosk_tokens(&self) -> Result<Vec<StoredKioskToken>, Error> {
        sqlx::query_as(
            "SELECT id, label, secret_sha256, created_at_ms, created_by, last_used_at_ms, \
                 revoked_at_ms, expires_at_ms FROM kiosk_tokens",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Stores a new token (its id is ignored) and returns it with the id it was given.
    pub async fn insert_kiosk_token(
        &self,
        mut token: StoredKioskToken,
    ) -> Result<StoredKioskToken, Error> {
        token.id = sqlx::query_scalar(
            "INSERT INTO kiosk_tokens (label, secret_sha256, created_at_ms, created_by, \
             last_used_at_ms, revoked_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) \
             RETURNING id",
        )
        .bind(&token.label)
        .bind(&token.secret_sha256)
        .bind(token.created_at_ms)
        .bind(&token.created_by)
        .bind(token.last_used_at_ms)
        .bind(token.revoked_at_ms)
        .bind(token.expires_at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(token)
    }

    /// Notes when token `id` was last used.
    pub async fn kiosk_token_used(&self, id: i64, at_ms: i64) -> Result<(), Error> {
        sqlx::query("UPDATE kiosk_tokens SET last_used_at_ms = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revokes token `id` at `at_ms`; `false` when it was revoked already (of two
    /// revocations at once only one happens: the update is conditional).
    pub async fn revoke_kiosk_token(&self, id: i64, at_ms: i64) -> Result<bool, Error> {
        let revoked = sqlx::query(
            "UPDATE kiosk_tokens SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(revoked > 0)
    }
}
