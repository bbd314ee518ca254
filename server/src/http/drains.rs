//! `/api/drains`: plan and start a host drain, list and read drains, pause, resume and
//! cancel one, skip a VM or move it forward. Routed in [`crate::http::routes`].

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{Drain, DrainRequest, ItemCommand};

use crate::auth::{Operate, ViewFleet};
use crate::drain::{Control, DrainError, Requester};
use crate::http::auth::{ClientAddr, Require};
use crate::http::error::{ApiError, Json, Path};
use crate::http::state::AppState;

impl From<DrainError> for ApiError {
    fn from(err: DrainError) -> Self {
        match err {
            DrainError::Invalid(why) => ApiError::Unprocessable(why),
            DrainError::NotFound(why) => ApiError::NotFound(why),
            DrainError::Conflict(why) => ApiError::Conflict(why),
            DrainError::NotRecorded(err) => ApiError::internal("recording a drain", err),
        }
    }
}

/// `GET /api/drains`: running drains, then past ones, newest first.
pub(crate) async fn list(
    _: Require<ViewFleet>,
    State(state): State<AppState>,
) -> Result<Json<Vec<Drain>>, ApiError> {
    let drains = state
        .drains
        .list()
        .await
        .map_err(|err| ApiError::internal("reading drains", err))?;
    Ok(Json(drains))
}

/// `GET /api/drains/{id}`.
pub(crate) async fn detail(
    _: Require<ViewFleet>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Drain>, ApiError> {
    state
        .drains
        .get(&id)
        .await
        .map_err(|err| ApiError::internal("reading a drain", err))?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no drain with id {id}")))
}

/// `POST /api/drains`: the plan (200) for a dry run, else the started drain (201).
pub(crate) async fn create(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Json(request): Json<DrainRequest>,
) -> Result<(StatusCode, Json<Drain>), ApiError> {
    let dry_run = request.dry_run;
    let by = Requester {
        username: principal.user.username.clone(),
        client_addr,
    };
    let drain = state.drains.create(request, &by).await?;
    let status = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(drain)))
}

async fn control(
    state: &AppState,
    principal_name: &str,
    client_addr: std::net::IpAddr,
    id: &str,
    control: Control,
) -> Result<Json<Drain>, ApiError> {
    let by = Requester {
        username: principal_name.to_owned(),
        client_addr,
    };
    Ok(Json(state.drains.control(id, control, &by).await?))
}

/// `POST /api/drains/{id}/pause`.
pub(crate) async fn pause(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Drain>, ApiError> {
    control(
        &state,
        &principal.user.username,
        client_addr,
        &id,
        Control::Pause,
    )
    .await
}

/// `POST /api/drains/{id}/resume`.
pub(crate) async fn resume(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Drain>, ApiError> {
    control(
        &state,
        &principal.user.username,
        client_addr,
        &id,
        Control::Resume,
    )
    .await
}

/// `POST /api/drains/{id}/cancel`.
pub(crate) async fn cancel(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Drain>, ApiError> {
    control(
        &state,
        &principal.user.username,
        client_addr,
        &id,
        Control::Cancel,
    )
    .await
}

/// `POST /api/drains/{id}/vms/{uuid}` `{"action": "skip" | "forward"}`.
pub(crate) async fn item(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path((id, uuid)): Path<(String, String)>,
    Json(command): Json<ItemCommand>,
) -> Result<Json<Drain>, ApiError> {
    let by = Requester {
        username: principal.user.username.clone(),
        client_addr,
    };
    Ok(Json(
        state.drains.item(&id, &uuid, command.action, &by).await?,
    ))
}
