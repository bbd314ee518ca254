//! Sign-in, sign-out and "who am I", plus the extractors that guard every other route.

mod client_addr;
mod permissions;
mod principal;
mod throttle;
mod users;

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{LoginRequest, Me};
use tower_sessions::Session;

pub use client_addr::ClientAddr;
pub use permissions::{
    ManageKiosk, Operate, Permission, ReadAudit, Require, ViewFleet, ViewOwnVms, allows,
};
pub use principal::Principal;
pub(crate) use principal::still_signed_in;
pub use throttle::LoginThrottle;
pub use users::{User, UserDirectory, hash_password};

use crate::audit;
use crate::error::{ApiError, Json};
use crate::hypervisor::unix_ms_now;
use crate::state::AppState;
use principal::{AUTH_KEY, SessionAuth};
use sha2::{Digest, Sha256};

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
    if let Err(wait) = state.throttle.check(&username, client_addr, Instant::now()) {
        tracing::warn!(%username, %client_addr, retry_after_s = wait.as_secs(), "sign-in throttled");
        return Err(ApiError::Throttled {
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        });
    }

    // Argon2 costs ~20 MiB and tens of milliseconds: a few at a time, off the executor.
    let permit = state
        .password_checks
        .clone()
        .acquire_owned()
        .await
        .map_err(|err| ApiError::internal("password check queue", err))?;
    let users = state.users.clone();
    let name = username.clone();
    let user = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        users.verify(&name, &password)
    })
    .await
    .map_err(|err| ApiError::internal("password check", err))?;

    let Some(user) = user else {
        state
            .throttle
            .record_failure(&username, client_addr, Instant::now());
        // A name that is no account is often a password typed in the wrong field: it is
        // neither logged nor recorded.
        let who = if state.users.get(&username).is_some() {
            username.clone()
        } else {
            "(unknown user)".to_owned()
        };
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
    state.throttle.record_success(&username);
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
    let entry = audit::NewEntry {
        actor: principal.user.username.clone(),
        client_addr: Some(client_addr.to_string()),
        action: "sign_out".into(),
        vm: None,
        migration_id: None,
        details: String::new(),
    };
    audit::record(&state.db, unix_ms_now(&*state.clock), &entry, "ok")
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
    let entry = audit::NewEntry {
        actor: who.to_owned(),
        client_addr: Some(client_addr.to_string()),
        action: "sign_in".into(),
        vm: None,
        migration_id: None,
        details: String::new(),
    };
    audit::record(&state.db, unix_ms_now(&*state.clock), &entry, result)
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

/// The SHA-256 of a bearer secret, as lower-case hex: how kiosk tokens are stored and how
/// the metrics token is configured. (Such secrets are long and random, so a fast hash is
/// enough; passwords get argon2.)
pub(crate) fn secret_sha256(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Bytes as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
