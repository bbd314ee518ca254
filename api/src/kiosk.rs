//! Kiosk tokens: links for wall screens that open a read-only board without a password.

use serde::{Deserialize, Serialize};

/// A kiosk token as admins see it; the secret itself is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct KioskToken {
    /// Its number.
    pub id: i64,
    /// Which screen it is for ("NOC wall, left").
    pub label: String,
    /// When it was made (unix ms).
    pub created_at_ms: i64,
    /// The admin who made it.
    pub created_by: String,
    /// When a screen last used it (unix ms, to the minute).
    pub last_used_at_ms: Option<i64>,
    /// When it was revoked (unix ms); a revoked token opens nothing.
    pub revoked_at_ms: Option<i64>,
    /// When it stops working by itself (unix ms); none: until revoked.
    pub expires_at_ms: Option<i64>,
}

/// Body of `POST /api/kiosk-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct NewKioskToken {
    /// Which screen it is for: 1–64 printable characters.
    pub label: String,
    /// Days until the link stops working by itself (1–3650); none: until revoked.
    pub expires_in_days: Option<u32>,
}

/// Answer of `POST /api/kiosk-tokens`: the token and, this once, its secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct CreatedKioskToken {
    /// The token.
    pub token: KioskToken,
    /// The secret; only its hash is stored.
    pub secret: String,
    /// The path a screen opens: `/kiosk#token=<secret>` (the fragment never reaches a log).
    pub path: String,
}

impl std::fmt::Debug for CreatedKioskToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKioskToken")
            .field("token", &self.token)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Body of `POST /api/kiosk/session`: a screen signs in with its token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct KioskSignIn {
    /// The token's secret.
    pub token: String,
}

impl std::fmt::Debug for KioskSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KioskSignIn { token: <redacted> }")
    }
}
