//! `GET /api/tenant/vms` and `/api/tenant/vms/{uuid}`: a tenant's own VMs and their moves,
//! through the fleet's tenant projection.

use axum::extract::State;
use converge_api::{Migration, TenantVm, TenantVmDetail, Vm};

use crate::auth::ViewOwnVms;
use crate::fleet::tenant::{in_scope, tenant_move, tenant_vm, vm_or_last_seen};
use crate::http::auth::Require;
use crate::http::error::{ApiError, Json, Path};
use crate::http::state::AppState;

/// Moves of one VM a tenant's detail page lists at most.
const MAX_MOVES: i64 = 50;

/// `GET /api/tenant/vms`: the caller's projects' VMs, each with its latest move.
pub(crate) async fn list(
    Require(principal, _): Require<ViewOwnVms>,
    State(state): State<AppState>,
) -> Result<Json<Vec<TenantVm>>, ApiError> {
    let projects = &principal.user.projects;
    let in_memory: Vec<(Vm, Option<Migration>, Option<String>)> = {
        let fleet = state.fleet.read();
        fleet
            .vms_in(projects)
            .into_iter()
            .map(|vm| {
                let latest = fleet.latest_migration_of(&vm.uuid).cloned();
                let scheduled = fleet.scheduled_notice(&vm.uuid).map(str::to_owned);
                (vm, latest, scheduled)
            })
            .collect()
    };
    let mut out = Vec::with_capacity(in_memory.len());
    for (vm, latest, scheduled) in in_memory {
        // After a restart the latest move is only in the history.
        let latest = match latest {
            Some(m) => Some(m),
            None => state
                .store
                .migrations_of_vm(&vm.uuid, 1)
                .await
                .map_err(|err| ApiError::internal("reading a VM's moves", err))?
                .pop(),
        };
        out.extend(tenant_vm(&vm, latest.as_ref(), scheduled.as_deref()));
    }
    Ok(Json(out))
}

/// `GET /api/tenant/vms/{uuid}`: one of the caller's VMs and its moves. A VM outside the
/// caller's projects is "not found", exactly like one that does not exist.
pub(crate) async fn detail(
    Require(principal, _): Require<ViewOwnVms>,
    State(state): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<TenantVmDetail>, ApiError> {
    // Not echoing the UUID: the answer is the same whoever's VM it names.
    let not_found = || ApiError::NotFound("you have no VM with that UUID".into());
    let (vm, current, scheduled) = {
        let fleet = state.fleet.read();
        let vm = vm_or_last_seen(&fleet, &uuid)
            .filter(|vm| in_scope(vm.project.as_deref(), &principal.user.projects))
            .ok_or_else(not_found)?;
        let current = fleet.latest_migration_of(&uuid).cloned();
        let scheduled = fleet.scheduled_notice(&uuid).map(str::to_owned);
        (vm, current, scheduled)
    };
    let mut moves = state
        .store
        .migrations_of_vm(&uuid, MAX_MOVES)
        .await
        .map_err(|err| ApiError::internal("reading a VM's moves", err))?;
    // The one under way is newer in memory than on disk.
    if let Some(current) = &current {
        match moves.iter_mut().find(|m| m.id == current.id) {
            Some(stored) => *stored = current.clone(),
            None => moves.insert(0, current.clone()),
        }
    }
    let vm = tenant_vm(&vm, moves.first(), scheduled.as_deref()).ok_or_else(not_found)?;
    Ok(Json(TenantVmDetail {
        vm,
        moves: moves.iter().map(tenant_move).collect(),
    }))
}
