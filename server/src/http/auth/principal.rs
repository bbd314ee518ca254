//! Who is asking: the extractor every protected handler takes.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;

use crate::auth::{StreamOwner, User};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use converge_api::KioskToken;

/// Key of the sign-in record inside the session.
pub(super) const AUTH_KEY: &str = "auth";

/// How stale `last_seen` may get before a request refreshes it. Refreshing writes the
/// session row and re-sends the cookie, extending the idle expiry; doing it at most this
/// often keeps a busy dashboard from writing to the database on every call.
const TOUCH_AFTER_SECS: i64 = 60;

/// What a session remembers about its sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionAuth {
    pub(super) username: String,
    /// The password hash's salt at sign-in (see [`User::credential_tag`]).
    pub(super) credential_tag: String,
    /// Unix seconds of the sign-in, for the absolute lifetime.
    pub(super) signed_in_at: i64,
    /// Unix seconds of the last refresh of the idle expiry.
    pub(super) last_seen: i64,
    /// Set when a wall screen signed in with a kiosk token instead of a password: the
    /// token's id, checked on every request so that revoking it ends the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kiosk_token: Option<i64>,
}

/// A signed-in user. Taking it as a handler argument makes the handler refuse anonymous
/// callers with 401, and callers whose account or password changed since they signed in.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account.
    pub user: Arc<User>,
    /// The caller's session, to end it on logout.
    pub session: Session,
    /// Unix seconds of the sign-in, for the session's absolute lifetime.
    pub signed_in_at: i64,
    /// The kiosk link a wall screen signed in with.
    pub kiosk_token: Option<i64>,
}

impl Principal {
    /// Unix seconds at which the session ends however active it is: its absolute
    /// lifetime, or a wall screen's kiosk link expiring before that.
    pub fn ends_at(&self, state: &AppState) -> i64 {
        let lifetime = self
            .signed_in_at
            .saturating_add(i64::from(state.config.session.absolute_lifetime_hours) * 3600);
        let link_expires = self
            .kiosk_token
            .and_then(|id| state.kiosk.expires_at_ms(id))
            .map(|ms| ms.div_euclid(1000));
        link_expires.map_or(lifetime, |at| at.min(lifetime))
    }

    /// Who the principal's live streams count against.
    pub fn stream_owner(&self) -> StreamOwner {
        match self.kiosk_token {
            Some(id) => StreamOwner::Kiosk(id),
            None => StreamOwner::User(self.user.username.clone()),
        }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let session = Session::from_request_parts(parts, &state)
            .await
            .map_err(|(_, msg)| ApiError::internal("session layer missing", msg))?;
        let Some(mut auth) = session.get::<SessionAuth>(AUTH_KEY).await? else {
            return Err(ApiError::Unauthenticated);
        };
        let now = state.clock.now().unix_timestamp();
        let Some(user) = auth.still_stands(&state, now).await else {
            tracing::info!(username = %auth.username, "session ended: account changed or lifetime over");
            session.flush().await?;
            return Err(ApiError::SessionEnded);
        };
        if now.saturating_sub(auth.last_seen) >= TOUCH_AFTER_SECS {
            auth.last_seen = now;
            session.insert(AUTH_KEY, &auth).await?;
        }
        Ok(Self {
            user,
            session,
            signed_in_at: auth.signed_in_at,
            kiosk_token: auth.kiosk_token,
        })
    }
}

impl SessionAuth {
    pub(super) fn new(user: &User, now: OffsetDateTime) -> Self {
        let now = now.unix_timestamp();
        Self {
            username: user.username.clone(),
            credential_tag: user.credential_tag.clone(),
            signed_in_at: now,
            last_seen: now,
            kiosk_token: None,
        }
    }

    pub(super) fn kiosk(token: &KioskToken, now: OffsetDateTime) -> Self {
        let now = now.unix_timestamp();
        Self {
            username: token.label.clone(),
            credential_tag: String::new(),
            signed_in_at: now,
            last_seen: now,
            kiosk_token: Some(token.id),
        }
    }

    /// The account this sign-in still stands for at `now` (unix seconds): `None` once the
    /// user was removed, their password changed, the kiosk token was revoked, or the
    /// absolute lifetime is over. A kiosk token's "last used" is kept current here.
    async fn still_stands(&self, state: &AppState, now: i64) -> Option<Arc<User>> {
        let max_age_secs = i64::from(state.config.session.absolute_lifetime_hours) * 3600;
        if now.saturating_sub(self.signed_in_at) >= max_age_secs {
            return None;
        }
        match self.kiosk_token {
            Some(id) => {
                let token = state.kiosk.live(id, now.saturating_mul(1000))?;
                state.kiosk.used(&state.store, id, now * 1000).await;
                Some(Arc::new(User::kiosk(&token)))
            }
            None => state
                .users
                .get(&self.username)
                .filter(|user| user.credential_tag == self.credential_tag)
                .cloned(),
        }
    }
}
