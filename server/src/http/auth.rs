//! Sign-in, sign-out and "who am I", and the extractors that guard every other route:
//! [`Principal`] (anyone signed in), [`Require`] (a permission), [`ClientAddr`].

mod client_addr;
mod principal;
mod require;

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{LoginRequest, Me};
use tower_sessions::Session;

pub use client_addr::ClientAddr;
pub use principal::Principal;
pub use require::Require;

use crate::auth::CheckError;
use crate::clock::unix_ms_now;
use crate::http::error::{ApiError, Json};
use crate::http::state::AppState;
use crate::store::NewEntry;
use principal::{AUTH_KEY, SessionAuth};

/// Longest password accepted; argon2 hashes anything, but a megabyte of it is an attack.
const MAX_PASSWORD_BYTES: usize = 1024;

pub(crate) async fn login(
    State(state): State<AppState>,
    ClientAddr(client_addr): ClientAddr,
    session: Session,
    Json(request): Json<LoginRequest>,
) -> Result<Json<Me>, ApiError> {
    let LoginRequest { username, password } = request;
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::Unprocessable(
            "give both a username and a password".into(),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES || username.len() > 128 {
        return Err(ApiError::Unprocessable(format!(
            "a username is at most 128 bytes and a password at most {MAX_PASSWORD_BYTES}"
        )));
    }
    // A name that is no account is often a password typed in the wrong field: it is
    // neither logged nor recorded.
    let who = if state.users.get(&username).is_some() {
        username.clone()
    } else {
        "(unknown user)".to_owned()
    };
    // Counted as a failure now, before it waits for a check: concurrent guesses cannot
    // all pass the limit before the first of them is decided.
    let attempt = match state.throttle.begin(&username, client_addr, Instant::now()) {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::warn!(username = %who, %client_addr, retry_after_s = wait.as_secs(), "sign-in throttled");
            return Err(ApiError::Throttled {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            });
        }
    };
    let checked = state
        .password_checks
        .verify(state.users.clone(), username.clone(), password)
        .await;
    let user = match checked {
        Ok(user) => user,
        Err(CheckError::Busy) => {
            state.throttle.withdraw(attempt);
            tracing::warn!(%client_addr, "sign-in refused: every password check slot is busy");
            return Err(ApiError::Busy);
        }
        Err(err @ CheckError::Failed(_)) => {
            state.throttle.withdraw(attempt);
            return Err(ApiError::internal("password check", err));
        }
    };

    let Some(user) = user else {
        // The attempt stays counted.
        drop(attempt);
        tracing::warn!(username = %who, %client_addr, "sign-in refused: wrong username or password");
        record_sign_in(
            &state,
            &who,
            client_addr,
            "refused: wrong username or password",
        )
        .await?;
        return Err(ApiError::BadCredentials);
    };
    state.throttle.succeeded(attempt);
    record_sign_in(&state, &username, client_addr, "ok").await?;
    // A new id at sign-in, so that an id planted before it (session fixation) is worthless.
    session.cycle_id().await?;
    session
        .insert(AUTH_KEY, SessionAuth::new(&user, state.clock.now()))
        .await?;
    tracing::info!(%username, role = %user.role, %client_addr, "signed in");
    Ok(Json(user.me()))
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    ClientAddr(client_addr): ClientAddr,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    // Deletes the row in the store, not just the cookie: a copied cookie dies too.
    principal.session.flush().await?;
    tracing::info!(username = %principal.user.username, "signed out");
    let entry = NewEntry::request(&principal.user.username, client_addr, "sign_out");
    state
        .store
        .audit_record(unix_ms_now(&*state.clock), &entry, "ok")
        .await
        .map_err(|err| ApiError::internal("recording a sign-out", err))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records a sign-in attempt in the audit log before it is answered.
async fn record_sign_in(
    state: &AppState,
    who: &str,
    client_addr: std::net::IpAddr,
    result: &str,
) -> Result<(), ApiError> {
    let entry = NewEntry::request(who, client_addr, "sign_in");
    state
        .store
        .audit_record(unix_ms_now(&*state.clock), &entry, result)
        .await
        .map(drop)
        .map_err(|err| ApiError::internal("recording a sign-in", err))
}

/// Starts a kiosk session for `token` in `session` (a new session id, as at sign-in).
pub(crate) async fn sign_in_kiosk(
    state: &AppState,
    session: &Session,
    token: &converge_api::KioskToken,
) -> Result<(), ApiError> {
    session.cycle_id().await?;
    session
        .insert(AUTH_KEY, SessionAuth::kiosk(token, state.clock.now()))
        .await?;
    Ok(())
}

pub(crate) async fn me(principal: Principal) -> Json<Me> {
    Json(principal.user.me())
}
