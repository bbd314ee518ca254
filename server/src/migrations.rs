//! `/api/migrations`: list, detail, start, abort.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use converge_api::{Migration, MigrationDetail, MigrationState, StartMigration};
use converge_libvirt::MigrationRequest;

use crate::auth::{Operate, Principal, Require};
use crate::error::{ApiError, Json};
use crate::fleet::{Fleet, new_id};
use crate::hypervisor::unix_ms_now;
use crate::state::AppState;

/// Highest bandwidth limit accepted, MiB/s (a 400 Gbit/s link is ~48,000 MiB/s).
const MAX_BANDWIDTH_MIB_S: u64 = 100_000;

/// `/migrations`, `/migrations/{id}`, `/migrations/{id}/abort`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/migrations", get(list).post(start))
        .route("/migrations/{id}", get(detail))
        .route("/migrations/{id}/abort", post(abort))
}

async fn list(principal: Principal, State(fleet): State<Fleet>) -> Json<Vec<Migration>> {
    if principal.user.role.sees_whole_fleet() {
        Json(fleet.read().migrations())
    } else {
        Json(Vec::new())
    }
}

async fn detail(
    principal: Principal,
    State(fleet): State<Fleet>,
    Path(id): Path<String>,
) -> Result<Json<MigrationDetail>, ApiError> {
    // Not 403 for tenants: whether a migration id exists is itself not theirs to know.
    let found = principal
        .user
        .role
        .sees_whole_fleet()
        .then(|| fleet.read().detail(&id))
        .flatten();
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))
}

async fn start(
    Require(principal, ..): Require<Operate>,
    State(state): State<AppState>,
    Json(request): Json<StartMigration>,
) -> Result<(StatusCode, Json<Migration>), ApiError> {
    if let Some(bw) = request.bandwidth_mib_s
        && !(1..=MAX_BANDWIDTH_MIB_S).contains(&bw)
    {
        return Err(ApiError::Unprocessable(format!(
            "bandwidth_mib_s must be between 1 and {MAX_BANDWIDTH_MIB_S} (or left out for no limit)"
        )));
    }
    let plan = state
        .fleet
        .read()
        .plan_start(&request.vm_uuid, &request.destination)?;
    let (Some(source), Some(destination)) = (
        state.hypervisors.get(&plan.source),
        state.hypervisors.get(&plan.destination),
    ) else {
        return Err(ApiError::internal(
            "start migration",
            "planned host has no worker",
        ));
    };
    let mut migration = Migration::begun(
        new_id(),
        plan.vm_uuid.clone(),
        plan.vm_name.clone(),
        plan.source.clone(),
        MigrationState::Starting,
        unix_ms_now(&*state.clock),
    );
    migration.destination = Some(plan.destination.clone());
    migration.started_by = Some(principal.user.username.clone());
    migration.bandwidth_mib_s = request.bandwidth_mib_s;
    state
        .fleet
        .update(|fleet, _| fleet.begin(migration.clone()))?;
    // On disk before libvirt is asked: a crash from here on leaves a record to finish.
    if let Err(err) = state.fleet.persist_now(migration.clone()).await {
        let id = migration.id.clone();
        state
            .fleet
            .update(|fleet, now| fleet.start_failed(&id, "could not be recorded".into(), now));
        return Err(ApiError::internal("recording a migration", err));
    }
    let libvirt_request = MigrationRequest {
        destination_uri: destination.config.uri.clone(),
        migration_uri: destination.config.migration_uri.clone(),
        listen_address: destination.config.listen_address.clone(),
        bandwidth_mib_s: request.bandwidth_mib_s,
        ..MigrationRequest::default()
    };
    tracing::info!(
        migration = %migration.id, vm = %plan.vm_name, source = %plan.source,
        destination = %plan.destination, user = %principal.user.username, "starting a migration"
    );
    if let Err(message) = source.migrate(plan.vm_uuid.clone(), libvirt_request).await {
        let id = migration.id.clone();
        state
            .fleet
            .update(|fleet, now| fleet.start_failed(&id, message.clone(), now));
        return Err(ApiError::Conflict(format!(
            "libvirt refused to start the migration: {message}"
        )));
    }
    let current = state.fleet.read().migration(&migration.id).cloned();
    Ok((StatusCode::CREATED, Json(current.unwrap_or(migration))))
}

async fn abort(
    Require(principal, ..): Require<Operate>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Migration>), ApiError> {
    let (source, vm_uuid) = state.fleet.modify(|fleet| fleet.request_abort(&id))?;
    let Some(host) = state.hypervisors.get(&source) else {
        return Err(ApiError::internal(
            "abort migration",
            "source host has no worker",
        ));
    };
    tracing::info!(migration = %id, user = %principal.user.username, "aborting a migration");
    host.abort(vm_uuid)
        .await
        .map_err(|message| ApiError::Conflict(format!("libvirt could not abort: {message}")))?;
    let current = state
        .fleet
        .read()
        .migration(&id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))?;
    Ok((StatusCode::ACCEPTED, Json(current)))
}
