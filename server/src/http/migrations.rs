//! `/api/migrations`: list, history, detail, start, levers, abort; `/api/presets`.
//! Routed in [`crate::http::routes`].

use axum::extract::State;
use axum::http::StatusCode;
use converge_api::{
    ActionRecord, LeverChange, LeverResult, Migration, MigrationDetail, MigrationSettings,
    MigrationState, Preset, StartMigration, lint, refusal,
};
use converge_libvirt::{MigrationFlags, MigrationRequest};
use serde::Deserialize;

use crate::audit::{self, NewEntry};
use crate::auth::{Operate, ViewFleet};
use crate::clock::unix_ms_now;
use crate::fleet::{Act, ActError, ActKind, Executor, new_id};
use crate::http::auth::{ClientAddr, Require};
use crate::http::error::{ApiError, Json, Path, Query};
use crate::{policy, presets};

/// How long the adaptive preset measures a guest's dirty rate before starting, seconds.
const DIRTY_RATE_PERIOD_S: u32 = 1;
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
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Unprocessable(
            "limit must be between 1 and 500".into(),
        ));
    }
    crate::store::history(&state.db, limit, page.before_ms)
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
    crate::store::migration_detail(&state.db, &id)
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

pub(crate) async fn start(
    Require(principal, ..): Require<Operate>,
    ClientAddr(client_addr): ClientAddr,
    State(state): State<AppState>,
    Json(request): Json<StartMigration>,
) -> Result<(StatusCode, Json<Migration>), ApiError> {
    let presets = presets::all(&state.config.presets);
    let preset_name = request
        .preset
        .clone()
        .unwrap_or_else(|| state.config.migrations.default_preset.clone());
    let preset = presets
        .iter()
        .find(|p| p.name == preset_name)
        .ok_or_else(|| {
            let names: Vec<&str> = presets.iter().map(|p| p.name.as_str()).collect();
            ApiError::Unprocessable(format!(
                "no preset called \"{preset_name}\"; presets are: {}",
                names.join(", ")
            ))
        })?;
    let settings = request
        .settings
        .clone()
        .unwrap_or_else(|| preset.settings.clone());
    let plan = state
        .fleet
        .read()
        .plan_start(&request.vm_uuid, &request.destination)?;
    if let Some(why) = refusal(&lint(&settings, plan.memory_bytes)) {
        return Err(ApiError::Unprocessable(why));
    }
    let (Some(source), Some(destination)) = (
        state.hypervisors.get(&plan.source),
        state.hypervisors.get(&plan.destination),
    ) else {
        return Err(ApiError::internal(
            "start migration",
            "planned host has no worker",
        ));
    };
    // Adaptive: measure the guest and read its past before choosing capabilities.
    let (settings, adapted) = if settings.adaptive {
        let dirty_rate = source
            .measure_dirty_rate(plan.vm_uuid.clone(), DIRTY_RATE_PERIOD_S)
            .await
            .unwrap_or_else(|err| {
                tracing::info!(vm = %plan.vm_name, error = %err, "no dirty-rate measurement");
                None
            });
        let history = crate::store::migrations_of_vm(&state.db, &plan.vm_uuid, 5)
            .await
            .map_err(|err| ApiError::internal("reading a VM's past migrations", err))?;
        let facts = policy::StartFacts {
            memory_bytes: plan.memory_bytes,
            dirty_rate,
            history: &history,
        };
        let (chosen, why) = policy::adapt_start(&settings, &facts);
        if let Some(refused) = refusal(&lint(&chosen, plan.memory_bytes)) {
            return Err(ApiError::internal("adaptive start", refused));
        }
        (chosen, Some(why))
    } else {
        (settings, None)
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
    migration.preset = Some(preset_name.clone());
    migration.settings = Some(settings.clone());
    if let Some(why) = &adapted {
        migration.actions.push(ActionRecord {
            at_ms: migration.started_at_ms,
            actor: "policy".into(),
            what: "chose the capabilities".into(),
            reason: why.clone(),
            result: "ok".into(),
        });
    }
    state
        .fleet
        .update(|fleet, _| fleet.begin(migration.clone()))?;
    // On disk before libvirt is asked: a crash from here on leaves a record to finish.
    let entry = NewEntry::request(&principal.user.username, client_addr, "start")
        .about(Some(plan.vm_name.clone()), &migration.id)
        .with_details(match &adapted {
            Some(why) => format!(
                "{} → {}, preset {preset_name}: {why}",
                plan.source, plan.destination
            ),
            None => format!(
                "{} → {}, preset {preset_name}",
                plan.source, plan.destination
            ),
        });
    let recorded = match state.fleet.persist_now(migration.clone()).await {
        Ok(()) => audit::begin(&state.db, migration.started_at_ms, &entry).await,
        Err(err) => Err(err),
    };
    let audit_id = match recorded {
        Ok(id) => id,
        Err(err) => {
            let id = migration.id.clone();
            state
                .fleet
                .update(|fleet, now| fleet.start_failed(&id, "could not be recorded".into(), now));
            return Err(ApiError::internal("recording a migration", err));
        }
    };
    tracing::info!(
        migration = %migration.id, vm = %plan.vm_name, source = %plan.source,
        destination = %plan.destination, preset = %preset_name,
        user = %principal.user.username, "starting a migration"
    );
    let request = libvirt_request(&settings, &destination.config);
    let downtime = settings
        .downtime_steps
        .map(|steps| steps.start_ms)
        .or(settings.downtime_limit_ms);
    let started = source
        .migrate(plan.vm_uuid.clone(), request, downtime)
        .await;
    let result = match &started {
        Ok(()) => "ok".to_owned(),
        Err(message) => format!("failed: {message}"),
    };
    if let Err(err) = audit::finish(&state.db, audit_id, &result).await {
        tracing::error!(audit_id, error = %err, "cannot complete an audit entry");
    }
    if let Err(message) = started {
        let id = migration.id.clone();
        state
            .fleet
            .update(|fleet, now| fleet.start_failed(&id, message.to_string(), now));
        return Err(ApiError::Conflict(format!(
            "libvirt refused to start the migration: {message}"
        )));
    }
    let current = state.fleet.read().migration(&migration.id).cloned();
    Ok((StatusCode::CREATED, Json(current.unwrap_or(migration))))
}

/// The libvirt request for `settings`, to the destination host's migration address.
fn libvirt_request(
    settings: &MigrationSettings,
    destination: &crate::config::HostConfig,
) -> MigrationRequest {
    let caps = &settings.capabilities;
    MigrationRequest {
        destination_uri: destination.uri.clone(),
        migration_uri: destination.migration_uri.clone(),
        listen_address: destination.listen_address.clone(),
        bandwidth_mib_s: settings.bandwidth_mib_s,
        flags: MigrationFlags {
            xbzrle_cache_bytes: caps.xbzrle_cache_bytes,
            auto_converge: caps.auto_converge.is_some(),
            postcopy: caps.postcopy,
            parallel_connections: caps.parallel_connections,
        },
        auto_converge_initial_pct: caps.auto_converge.map(|a| a.initial_pct),
        auto_converge_increment_pct: caps.auto_converge.map(|a| a.increment_pct),
    }
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
    let read_back = executor(&state)
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
    executor(&state)
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
    }
}

/// Records a refused request (so the log shows attempts too), before answering it.
async fn refused(state: &AppState, entry: &NewEntry, error: &ApiError) -> Result<(), ApiError> {
    audit::record(
        &state.db,
        unix_ms_now(&*state.clock),
        entry,
        &format!("refused: {error}"),
    )
    .await
    .map(drop)
    .map_err(|err| ApiError::internal("recording a refused request", err))
}

fn executor(state: &AppState) -> Executor {
    Executor {
        fleet: state.fleet.clone(),
        hypervisors: state.hypervisors.clone(),
        db: state.db.clone(),
    }
}

fn current(state: &AppState, id: &str) -> Result<Migration, ApiError> {
    state
        .fleet
        .read()
        .migration(id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))
}
