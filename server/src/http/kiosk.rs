//! Kiosk links: admins create, list and revoke them; a wall screen signs in with one.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{CreatedKioskToken, KioskSignIn, KioskToken, Me, NewKioskToken};
use tower_sessions::Session;

use crate::auth::{ManageKiosk, User};
use crate::clock::unix_ms_now;
use crate::http::auth::{ClientAddr, Require, sign_in_kiosk};
use crate::http::error::{ApiError, Json, Path};
use crate::http::state::AppState;
use crate::kiosk::{MAX_LABEL_CHARS, MAX_LIFETIME_DAYS};
use crate::store::NewEntry;

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
    let now_ms = unix_ms_now(&*state.clock);
    let expires_at_ms = lifetime_days.map(|days| now_ms.saturating_add(days * 86_400_000));
    let username = admin.user.username.clone();
    // The audit row comes first: a token that exists was recorded.
    let entry = NewEntry::request(&username, client_addr, "kiosk_token_create").with_details(
        match lifetime_days {
            Some(days) => format!("label \"{label}\", expires in {days} days"),
            None => format!("label \"{label}\""),
        },
    );
    let audit_id = state
        .store
        .audit_begin(now_ms, &entry)
        .await
        .map_err(|err| ApiError::internal("recording a kiosk token", err))?;
    let (token, secret) = state
        .kiosk
        .create(&state.store, label, username, now_ms, expires_at_ms)
        .await
        .map_err(|err| ApiError::internal("saving a kiosk token", err))?;
    state
        .store
        .audit_finish(audit_id, &format!("ok (token {})", token.id))
        .await
        .map_err(|err| ApiError::internal("recording a kiosk token", err))?;
    let id = token.id;
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
    let token = state.kiosk.get(id).ok_or_else(no_such)?;
    // Every attempt on a real token is audited, a refused one too.
    let now_ms = unix_ms_now(&*state.clock);
    let entry = NewEntry::request(&admin.user.username, client_addr, "kiosk_token_revoke")
        .with_details(format!("token {id} (\"{}\")", token.label));
    let audit_id = state
        .store
        .audit_begin(now_ms, &entry)
        .await
        .map_err(|err| ApiError::internal("recording a revocation", err))?;
    let revoked = state
        .kiosk
        .revoke(&state.store, id, now_ms)
        .await
        .map_err(|err| ApiError::internal("revoking a kiosk token", err))?;
    if !revoked {
        state
            .store
            .audit_finish(audit_id, "refused: already revoked")
            .await
            .map_err(|err| ApiError::internal("recording a revocation", err))?;
        return Err(ApiError::Conflict(format!(
            "kiosk token {id} (\"{}\") is already revoked",
            token.label
        )));
    }
    // Its screens' streams end now; their next request is refused by `Principal`.
    state.sessions.end_kiosk_streams(id);
    state
        .store
        .audit_finish(audit_id, "ok")
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
    let entry = NewEntry::request(
        &format!("kiosk:{}", token.label),
        client_addr,
        "kiosk_sign_in",
    )
    .with_details(format!("token {}", token.id));
    state
        .store
        .audit_record(now_ms, &entry, "ok")
        .await
        .map_err(|err| ApiError::internal("recording a kiosk sign-in", err))?;
    state.kiosk.used(&state.store, token.id, now_ms).await;
    sign_in_kiosk(&state, &session, &token).await?;
    tracing::info!(token = token.id, %client_addr, "kiosk signed in");
    Ok(Json(User::kiosk(&token).me()))
}
