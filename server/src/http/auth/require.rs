//! The extractor that enforces the permission table on every protected handler.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::Principal;
use crate::auth::{Needed, allows};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// A signed-in user whose role has permission `P`: 401 without a session, 403 without
/// the permission.
#[derive(Debug)]
pub struct Require<P: Needed>(pub Principal, pub PhantomData<P>);

impl<S, P> FromRequestParts<S> for Require<P>
where
    S: Send + Sync,
    AppState: FromRef<S>,
    P: Needed,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if allows(principal.user.role, P::PERMISSION) {
            Ok(Self(principal, PhantomData))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}
