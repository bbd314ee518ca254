//! Who is asking: the extractor every protected handler takes.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_sessions::Session;

use super::users::User;
use crate::error::ApiError;
use crate::state::AppState;
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
        if now - auth.last_seen >= TOUCH_AFTER_SECS {
            auth.last_seen = now;
            session.insert(AUTH_KEY, &auth).await?;
        }
        Ok(Self { user, session })
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
        if now - self.signed_in_at >= max_age_secs {
            return None;
        }
        match self.kiosk_token {
            Some(id) => {
                let token = state.kiosk.live(id)?;
                state.kiosk.used(&state.db, id, now * 1000).await;
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

/// Whether the session behind a live stream still stands: the same checks as
/// [`Principal`]'s, run again every few seconds by the event stream. The row is read
/// from the store, not from the stream's copy of the session, so a sign-out elsewhere
/// counts. It never writes the session (a write racing a sign-out could bring the row
/// back); the dashboard's own once-a-minute `/api/me` keeps the idle expiry fresh.
pub(crate) async fn still_signed_in(state: &AppState, session: &Session) -> bool {
    use tower_sessions::SessionStore;
    let Some(id) = session.id() else {
        return false;
    };
    let record = match crate::store::session_store(&state.db).load(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return false,
        Err(err) => {
            // A database hiccup is not a reason to drop a screen; the next check decides.
            tracing::warn!(error = %err, "cannot re-check a streaming session");
            return true;
        }
    };
    let Some(auth) = record
        .data
        .get(AUTH_KEY)
        .and_then(|v| serde_json::from_value::<SessionAuth>(v.clone()).ok())
    else {
        return false;
    };
    // A wall screen is mostly its stream: this also keeps its token's "last used" current.
    auth.still_stands(state, state.clock.now().unix_timestamp())
        .await
        .is_some()
}
