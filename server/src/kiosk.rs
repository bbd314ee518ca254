//! Kiosk tokens: an admin makes one per wall screen; the screen opens
//! `/kiosk#token=<secret>` and gets a read-only kiosk session without a password (the
//! routes are `http::kiosk`).
//!
//! Only a SHA-256 of each secret is stored (the secret is 32 random bytes, so a fast hash
//! is enough: there is nothing to brute-force). The tokens live in the database and, for
//! the check on every request, in memory; revoking one (or its expiry) ends its sessions,
//! and revoking ends its open streams at once.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::auth::{hex, secret_sha256};
use crate::store::{self, Store, StoredKioskToken};
use converge_api::KioskToken;
use password_hash::rand_core::{OsRng, RngCore};

/// Longest label accepted, in characters.
pub(crate) const MAX_LABEL_CHARS: usize = 64;
/// Longest lifetime a kiosk link may be given, in days (ten years).
pub(crate) const MAX_LIFETIME_DAYS: u32 = 3650;
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
    pub async fn load(store: &Store) -> Result<Self, store::Error> {
        let rows = store.kiosk_tokens().await?;
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
    pub async fn used(&self, store: &Store, id: i64, now_ms: i64) {
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
        if due && let Err(err) = store.kiosk_token_used(id, now_ms).await {
            tracing::warn!(token = id, error = %err, "cannot record a kiosk token's use");
        }
    }

    /// The token with this id, revoked or not.
    pub fn get(&self, id: i64) -> Option<KioskToken> {
        self.read().tokens.get(&id).cloned()
    }

    /// Makes and stores a token for the screen `label`, by `created_by` at `now_ms`,
    /// working until `expires_at_ms` if given. Returns it and its secret, which is kept
    /// nowhere (only its SHA-256 is).
    pub async fn create(
        &self,
        store: &Store,
        label: String,
        created_by: String,
        now_ms: i64,
        expires_at_ms: Option<i64>,
    ) -> Result<(KioskToken, String), store::Error> {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let secret = hex(&secret);
        let row = store
            .insert_kiosk_token(StoredKioskToken {
                id: 0,
                label,
                secret_sha256: secret_sha256(&secret),
                created_at_ms: now_ms,
                created_by,
                last_used_at_ms: None,
                revoked_at_ms: None,
                expires_at_ms,
            })
            .await?;
        let id = row.id;
        let mut registry = self.write();
        registry.add(row);
        let token = registry.tokens.get(&id).cloned();
        drop(registry);
        token
            .map(|token| (token, secret))
            .ok_or(store::Error::RowNotFound)
    }

    /// Revokes token `id` at `now_ms`; `false` when it was revoked already. Of two
    /// revocations at once only one happens (the update is conditional).
    pub async fn revoke(&self, store: &Store, id: i64, now_ms: i64) -> Result<bool, store::Error> {
        if !store.revoke_kiosk_token(id, now_ms).await? {
            return Ok(false);
        }
        let mut registry = self.write();
        registry.by_hash.retain(|_, live| *live != id);
        if let Some(t) = registry.tokens.get_mut(&id) {
            t.revoked_at_ms = Some(now_ms);
        }
        Ok(true)
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
    fn add(&mut self, row: StoredKioskToken) {
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
        let row = |id, revoked| StoredKioskToken {
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
