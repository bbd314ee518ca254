//! Kiosk tokens: an admin makes one per wall screen; the screen opens
//! `/kiosk#token=<secret>` and gets a read-only kiosk session without a password.
//!
//! Only a SHA-256 of each secret is stored (the secret is 32 random bytes, so a fast hash
//! is enough: there is nothing to brute-force). The tokens live in the database and, for
//! the check on every request, in memory; revoking one (or its expiry) ends its sessions,
//! and revoking ends its open streams at once.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{CreatedKioskToken, KioskSignIn, KioskToken, Me, NewKioskToken};
use password_hash::rand_core::{OsRng, RngCore};
use sqlx::SqlitePool;
use tower_sessions::Session;

use crate::audit;
use crate::auth::{ClientAddr, ManageKiosk, Require, User, hex, secret_sha256, sign_in_kiosk};
use crate::clock::unix_ms_now;
use crate::error::{ApiError, Json, Path};
use crate::state::AppState;

/// Longest label accepted, in characters.
const MAX_LABEL_CHARS: usize = 64;
/// Longest lifetime a kiosk link may be given, in days (ten years).
const MAX_LIFETIME_DAYS: u32 = 3650;
/// `last_used_at_ms` is written at most this often per token.
const LAST_USED_EVERY_MS: i64 = 60_000;

/// The tokens, as the server checks them.
#[derive(Debug, Default)]
pub struct KioskTokens {
    inner: RwLock<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Every token ever made, by id.
    tokens: HashMap<i64, KioskToken>,
    /// Live (unrevoked) tokens' ids by the hash of their secret.
    by_hash: HashMap<String, i64>,
}

impl KioskTokens {
    /// Loads every token from the database.
    pub async fn load(db: &SqlitePool) -> Result<Self, sqlx::Error> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, label, secret_sha256, created_at_ms, created_by, last_used_at_ms, \
                 revoked_at_ms, expires_at_ms FROM kiosk_tokens",
        )
        .fetch_all(db)
        .await?;
        let mut registry = Registry::default();
        for row in rows {
            registry.add(row);
        }
        Ok(Self {
            inner: RwLock::new(registry),
        })
    }

    /// The live token with this secret (not revoked, not expired at `now_ms`).
    pub fn find(&self, secret: &str, now_ms: i64) -> Option<KioskToken> {
        let registry = self.read();
        let id = registry.by_hash.get(&secret_sha256(secret))?;
        registry
            .tokens
            .get(id)
            .filter(|t| is_live(t, now_ms))
            .cloned()
    }

    /// The token with this id if it is live at `now_ms`.
    pub fn live(&self, id: i64, now_ms: i64) -> Option<KioskToken> {
        self.read()
            .tokens
            .get(&id)
            .filter(|t| is_live(t, now_ms))
            .cloned()
    }

    /// When the token with this id expires, if it does.
    pub fn expires_at_ms(&self, id: i64) -> Option<i64> {
        self.read().tokens.get(&id).and_then(|t| t.expires_at_ms)
    }

    /// Every token, newest first.
    pub fn all(&self) -> Vec<KioskToken> {
        let mut all: Vec<KioskToken> = self.read().tokens.values().cloned().collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.id));
        all
    }

    /// Notes that a screen used token `id`; writes it down at most once a minute.
    pub async fn used(&self, db: &SqlitePool, id: i64, now_ms: i64) {
        let due = {
            let mut registry = self.write();
            match registry.tokens.get_mut(&id) {
                Some(t)
                    if t.last_used_at_ms
                        .is_none_or(|at| now_ms - at >= LAST_USED_EVERY_MS) =>
                {
                    t.last_used_at_ms = Some(now_ms);
                    true
                }
                _ => false,
            }
        };
        if due {
            let written = sqlx::query("UPDATE kiosk_tokens SET last_used_at_ms = ? WHERE id = ?")
                .bind(now_ms)
                .bind(id)
                .execute(db)
                .await;
            if let Err(err) = written {
                tracing::warn!(token = id, error = %err, "cannot record a kiosk token's use");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Not revoked, and not past its expiry.
fn is_live(token: &KioskToken, now_ms: i64) -> bool {
    token.revoked_at_ms.is_none() && token.expires_at_ms.is_none_or(|at| now_ms < at)
}

impl Registry {
    fn add(&mut self, row: TokenRow) {
        if row.revoked_at_ms.is_none() {
            self.by_hash.insert(row.secret_sha256.clone(), row.id);
        }
        self.tokens.insert(
            row.id,
            KioskToken {
                id: row.id,
                label: row.label,
                created_at_ms: row.created_at_ms,
                created_by: row.created_by,
                last_used_at_ms: row.last_used_at_ms,
                revoked_at_ms: row.revoked_at_ms,
                expires_at_ms: row.expires_at_ms,
            },
        );
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    label: String,
    secret_sha256: String,
    created_at_ms: i64,
    created_by: String,
    last_used_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    expires_at_ms: Option<i64>,
}

/// `GET /api/kiosk-tokens`: every token, newest first, without secrets.
pub(crate) async fn list(
    _: Require<ManageKiosk>,
    State(state): State<AppState>,
) -> Json<Vec<KioskToken>> {
    Json(state.kiosk.all())
}

/// `POST /api/kiosk-tokens`: a new token; its secret is in this answer and nowhere else.
pub(crate) async fn create(
    Require(admin, _): Require<ManageKiosk>,
    State(state): State<AppState>,
    ClientAddr(client_addr): ClientAddr,
    Json(request): Json<NewKioskToken>,
) -> Result<(StatusCode, Json<CreatedKioskToken>), ApiError> {
    let label = request.label.trim().to_owned();
    if label.is_empty() || label.chars().count() > MAX_LABEL_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "give the screen a label of 1 to {MAX_LABEL_CHARS} characters, e.g. \"NOC wall, left\""
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "a label cannot contain control characters".into(),
        ));
    }
    let lifetime_days = match request.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_LIFETIME_DAYS) => Some(i64::from(days)),
        Some(_) => {
            return Err(ApiError::Unprocessable(format!(
                "expires_in_days must be between 1 and {MAX_LIFETIME_DAYS}, or left out for a \
                 link that lasts until it is revoked"
            )));
        }
    };
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let secret = hex(&secret);
    let digest = secret_sha256(&secret);
    let now_ms = unix_ms_now(&*state.clock);
    let expires_at_ms = lifetime_days.map(|days| now_ms.saturating_add(days * 86_400_000));
    let username = admin.user.username.clone();
    // The audit row comes first: a token that exists was recorded.
    let entry = audit::NewEntry {
        actor: username.clone(),
        client_addr: Some(client_addr.to_string()),
        action: "kiosk_token_create".into(),
        vm: None,
        migration_id: None,
        details: match lifetime_days {
            Some(days) => format!("label \"{label}\", expires in {days} days"),
            None => format!("label \"{label}\""),
        },
    };
    let audit_id = audit::begin(&state.db, now_ms, &entry)
        .await
        .map_err(|err| ApiError::internal("recording a kiosk token", err))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO kiosk_tokens (label, secret_sha256, created_at_ms, created_by, \
         expires_at_ms) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&label)
    .bind(&digest)
    .bind(now_ms)
    .bind(&username)
    .bind(expires_at_ms)
    .fetch_one(&state.db)
    .await
    .map_err(|err| ApiError::internal("saving a kiosk token", err))?;
    audit::finish(&state.db, audit_id, &format!("ok (token {id})"))
        .await
        .map_err(|err| ApiError::internal("recording a kiosk token", err))?;
    let row = TokenRow {
        id,
        label,
        secret_sha256: digest,
        created_at_ms: now_ms,
        created_by: username,
        last_used_at_ms: None,
        revoked_at_ms: None,
        expires_at_ms,
    };
    state.kiosk.write().add(row);
    let token = state
        .kiosk
        .live(id, now_ms)
        .ok_or_else(|| ApiError::internal("kiosk token", "vanished after saving"))?;
    tracing::info!(token = id, label = %token.label, "kiosk token created");
    let path = format!("/kiosk#token={secret}");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKioskToken {
            token,
            secret,
            path,
        }),
    ))
}

/// `DELETE /api/kiosk-tokens/{id}`: revokes a token; its screens drop within seconds.
pub(crate) async fn revoke(
    Require(admin, _): Require<ManageKiosk>,
    State(state): State<AppState>,
    ClientAddr(client_addr): ClientAddr,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let no_such = || ApiError::NotFound(format!("there is no kiosk token {id}"));
    let id: i64 = id.parse().map_err(|_| no_such())?;
    let token = state
        .kiosk
        .read()
        .tokens
        .get(&id)
        .cloned()
        .ok_or_else(no_such)?;
    // Every attempt on a real token is audited, a refused one too.
    let now_ms = unix_ms_now(&*state.clock);
    let entry = audit::NewEntry {
        actor: admin.user.username.clone(),
        client_addr: Some(client_addr.to_string()),
        action: "kiosk_token_revoke".into(),
        vm: None,
        migration_id: None,
        details: format!("token {id} (\"{}\")", token.label),
    };
    let audit_id = audit::begin(&state.db, now_ms, &entry)
        .await
        .map_err(|err| ApiError::internal("recording a revocation", err))?;
    // Conditional, so that of two revocations at once only one happens; the other (and a
    // revocation of a token revoked long ago) is refused here.
    let revoked = sqlx::query(
        "UPDATE kiosk_tokens SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&state.db)
    .await
    .map_err(|err| ApiError::internal("revoking a kiosk token", err))?
    .rows_affected();
    if revoked == 0 {
        audit::finish(&state.db, audit_id, "refused: already revoked")
            .await
            .map_err(|err| ApiError::internal("recording a revocation", err))?;
        return Err(ApiError::Conflict(format!(
            "kiosk token {id} (\"{}\") is already revoked",
            token.label
        )));
    }
    {
        let mut registry = state.kiosk.write();
        registry.by_hash.retain(|_, live| *live != id);
        if let Some(t) = registry.tokens.get_mut(&id) {
            t.revoked_at_ms = Some(now_ms);
        }
    }
    // Its screens' streams end now; their next request is refused by `Principal`.
    state.sessions.end_kiosk_streams(id);
    audit::finish(&state.db, audit_id, "ok")
        .await
        .map_err(|err| ApiError::internal("recording a revocation", err))?;
    tracing::info!(token = id, "kiosk token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/kiosk/session`: a wall screen signs in with its token.
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(client_addr): ClientAddr,
    session: Session,
    Json(request): Json<KioskSignIn>,
) -> Result<Json<Me>, ApiError> {
    // Failures count against the address alone (see `LoginThrottle::begin_address`).
    let attempt = state
        .throttle
        .begin_address(client_addr, Instant::now())
        .map_err(|wait| ApiError::Throttled {
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        })?;
    let Some(token) = state
        .kiosk
        .find(request.token.trim(), unix_ms_now(&*state.clock))
    else {
        // The attempt stays counted.
        drop(attempt);
        tracing::warn!(%client_addr, "kiosk sign-in refused: unknown or revoked token");
        return Err(ApiError::KioskTokenInvalid);
    };
    state.throttle.withdraw(attempt);
    let now_ms = unix_ms_now(&*state.clock);
    let entry = audit::NewEntry {
        actor: format!("kiosk:{}", token.label),
        client_addr: Some(client_addr.to_string()),
        action: "kiosk_sign_in".into(),
        vm: None,
        migration_id: None,
        details: format!("token {}", token.id),
    };
    audit::record(&state.db, now_ms, &entry, "ok")
        .await
        .map_err(|err| ApiError::internal("recording a kiosk sign-in", err))?;
    state.kiosk.used(&state.db, token.id, now_ms).await;
    sign_in_kiosk(&state, &session, &token).await?;
    tracing::info!(token = token.id, %client_addr, "kiosk signed in");
    Ok(Json(User::kiosk(&token).me()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_stored_as_their_sha256() {
        assert_eq!(
            secret_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn revoked_tokens_are_not_found() {
        let mut registry = Registry::default();
        let row = |id, revoked| TokenRow {
            id,
            label: format!("screen {id}"),
            secret_sha256: secret_sha256(&format!("secret {id}")),
            created_at_ms: 0,
            created_by: "admin".into(),
            last_used_at_ms: None,
            revoked_at_ms: revoked,
            expires_at_ms: None,
        };
        registry.add(row(1, None));
        registry.add(row(2, Some(5)));
        let tokens = KioskTokens {
            inner: RwLock::new(registry),
        };
        assert_eq!(tokens.find("secret 1", 0).map(|t| t.id), Some(1));
        assert!(tokens.find("secret 2", 0).is_none());
        assert!(tokens.live(2, 0).is_none());
        assert_eq!(tokens.all().len(), 2);
    }
}
