//! `GET /api/hosts` and `GET /api/vms`: the whole fleet, for those who may see it.
//! Tenants see their own VMs through `http::tenant` instead.

use axum::extract::State;
use converge_api::{Host, Vm};

use crate::auth::ViewFleet;
use crate::fleet::Fleet;
use crate::http::auth::Require;
use crate::http::error::Json;

pub(crate) async fn hosts(_: Require<ViewFleet>, State(fleet): State<Fleet>) -> Json<Vec<Host>> {
    Json(fleet.read().hosts())
}

pub(crate) async fn vms(_: Require<ViewFleet>, State(fleet): State<Fleet>) -> Json<Vec<Vm>> {
    Json(fleet.read().vms())
}
