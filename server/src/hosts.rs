//! `GET /api/hosts` and `GET /api/vms`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use converge_api::{Host, Vm};

use crate::auth::{Principal, Require, ViewFleet};
use crate::error::Json;
use crate::fleet::Fleet;
use crate::state::AppState;

/// `/hosts`, `/vms`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hosts", get(hosts))
        .route("/vms", get(vms))
}

async fn hosts(_: Require<ViewFleet>, State(fleet): State<Fleet>) -> Json<Vec<Host>> {
    Json(fleet.read().hosts())
}

/// Tenants get only their projects' VMs: none until VMs are mapped to projects.
async fn vms(principal: Principal, State(fleet): State<Fleet>) -> Json<Vec<Vm>> {
    if principal.user.role.sees_whole_fleet() {
        Json(fleet.read().vms())
    } else {
        Json(Vec::new())
    }
}
