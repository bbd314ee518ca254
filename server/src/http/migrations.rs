//! `/api/migrations`: list, history, detail, start, levers, abort; `/api/presets`.
//! Routed in [`crate::http::routes`].

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{LeverChange, LeverResult, Migration, MigrationDetail, Preset};
use serde::Deserialize;

use crate::auth::{Operate, ViewFleet};
use crate::clock::unix_ms_now;
use crate::fleet::{Act, ActError, ActKind};
use crate::fleet::{StartError, StartRequest};
use crate::http::auth::{ClientAddr, Require};
use crate::http::error::{ApiError, Json, Path, Query};
use crate::presets;
use crate::store::NewEntry;

use crate::http::state::AppState;

pub(crate) async fn list(
    _: Require<ViewFleet>,
    State(state): State<AppState>,
) -> Json<Vec<Migration>> {
    Json(state.fleet.read().migrations())
}

/// Query of `GET /api/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryPage {
    /// At most this many (1–500, default 50).
    limit: Option<i64>,
    /// Migrations started before this time (unix ms), for the next page.
    before_ms: Option<i64>,
}

pub(crate) async fn history(
    _: Require<ViewFleet>,
    State(state): State<AppState>,
    Query(page): Query<HistoryPage>,
) -> Result<Json<Vec<Migration>>, ApiError> {
    let limit = crate::http::page_limit(page.limit, 50)?;
    state
        .store
        .history(limit, page.before_ms)
        .await
        .map(Json)
        .map_err(|err| ApiError::internal("reading history", err))
}

pub(crate) async fn detail(
    _: Require<ViewFleet>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MigrationDetail>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no migration {id}"));
    if let Some(live) = state.fleet.read().detail(&id) {
        return Ok(Json(live));
    }
    state
        .store
        .migration_detail(&id)
        .await
        .map_err(|err| ApiError::internal("reading a past migration", err))?
        .map(Json)
        .ok_or_else(not_found)
}

pub(crate) async fn list_presets(
    _: Require<Operate>,
    State(state): State<AppState>,
) -> Json<Vec<Preset>> {
    Json(presets::all(&state.config.presets))
}

/// A start request as the server reads it: [`converge_api::StartMigration`] with its
/// settings kept as the JSON merge patch they are (a field left out keeps the preset's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    vm_uuid: String,
    destination: String,
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

pub(crate) async fn start(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Json(request): Json<StartBody>,
) -> Result<(StatusCode, Json<Migration>), ApiError> {
    let presets = presets::all(&state.config.presets);
    let request = StartRequest {
        vm_uuid: request.vm_uuid,
        destination: request.destination,
        preset: request
            .preset
            .unwrap_or_else(|| state.config.migrations.default_preset.clone()),
        settings: request.settings,
        started_by: principal.user.username.clone(),
        client_addr,
        no_post_copy: false,
    };
    let migration = state
        .executor
        .start(request, presets)
        .await
        .map_err(|err| match err {
            StartError::Refused(refusal) => refusal.into(),
            StartError::Host(err) => {
                ApiError::Conflict(format!("libvirt refused to start the migration: {err}"))
            }
            StartError::NotRecorded(err) => ApiError::internal("recording a migration", err),
            StartError::Internal(context, why) => ApiError::internal(context, why),
        })?;
    Ok((StatusCode::CREATED, Json(migration)))
}

pub(crate) async fn lever(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(change): Json<LeverChange>,
) -> Result<Json<LeverResult>, ApiError> {
    let checked = state.fleet.read().check_lever(&id, change);
    let target = match checked {
        Ok(target) => target,
        Err(refusal) => {
            let error = ApiError::from(refusal);
            let vm = state.fleet.read().migration(&id).map(|m| m.vm_name.clone());
            let entry = NewEntry::request(
                &principal.user.username,
                client_addr,
                ActKind::Lever(change).name(),
            )
            .about(vm, &id)
            .with_details(ActKind::Lever(change).describe());
            refused(&state, &entry, &error).await?;
            return Err(error);
        }
    };
    let act = Act {
        migration_id: id.clone(),
        vm_uuid: target.vm_uuid,
        vm_name: target.vm_name,
        host: target.source,
        kind: ActKind::Lever(change),
        actor: principal.user.username.clone(),
        client_addr: Some(client_addr.to_string()),
        reason: "requested by an operator".into(),
    };
    let read_back = state
        .executor
        .execute(act)
        .await
        .map_err(|err| act_error(err, "libvirt refused"))?;
    let migration = current(&state, &id)?;
    Ok(Json(LeverResult {
        read_back,
        migration,
    }))
}

pub(crate) async fn abort(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Migration>), ApiError> {
    let m = current(&state, &id)?;
    if !m.state.is_active() {
        let error = ApiError::Conflict(format!(
            "migration {id} is already over ({}); nothing to abort",
            m.state.wire_name()
        ));
        let entry = NewEntry::request(&principal.user.username, client_addr, "abort")
            .about(Some(m.vm_name.clone()), &id)
            .with_details(ActKind::Abort.describe());
        refused(&state, &entry, &error).await?;
        return Err(error);
    }
    let act = Act {
        migration_id: id.clone(),
        vm_uuid: m.vm_uuid,
        vm_name: m.vm_name,
        host: m.source,
        kind: ActKind::Abort,
        actor: principal.user.username.clone(),
        client_addr: Some(client_addr.to_string()),
        reason: "requested by an operator".into(),
    };
    state
        .executor
        .execute(act)
        .await
        .map_err(|err| act_error(err, "libvirt could not abort"))?;
    Ok((StatusCode::ACCEPTED, Json(current(&state, &id)?)))
}

/// An action's failure as an answer: the fleet's refusal as itself, the host's with
/// `what` before libvirt's words.
fn act_error(err: ActError, what: &str) -> ApiError {
    match err {
        ActError::Refused(refusal) => refusal.into(),
        ActError::NotRecorded(source) => ApiError::internal("recording an action", source),
        ActError::Host(err) => ApiError::Conflict(format!("{what}: {err}")),
        ActError::Internal => ApiError::internal("carrying out an action", "the task failed"),
    }
}

/// Records a refused request (so the log shows attempts too), before answering it.
async fn refused(state: &AppState, entry: &NewEntry, error: &ApiError) -> Result<(), ApiError> {
    state
        .store
        .audit_record(
            unix_ms_now(&*state.clock),
            entry,
            &format!("refused: {error}"),
        )
        .await
        .map(drop)
        .map_err(|err| ApiError::internal("recording a refused request", err))
}

fn current(state: &AppState, id: &str) -> Result<Migration, ApiError> {
    state
        .fleet
        .read()
        .migration(id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_dashboard_sends_is_what_the_server_reads() {
        let sent = converge_api::StartMigration {
            vm_uuid: "u".into(),
            destination: "b".into(),
            preset: Some("nova".into()),
            settings: Some(converge_api::MigrationSettings::default()),
        };
        let text = serde_json::to_string(&sent).unwrap();
        let read: StartBody = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (read.vm_uuid.as_str(), read.destination.as_str()),
            ("u", "b")
        );
        assert_eq!(read.preset.as_deref(), Some("nova"));
        let settings: converge_api::MigrationSettings =
            serde_json::from_value(read.settings.unwrap()).unwrap();
        assert_eq!(settings, converge_api::MigrationSettings::default());
    }
}
