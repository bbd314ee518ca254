//! The client's IP address, for throttling and the log.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// The address a request came from: the peer of the TCP connection, or the last entry
/// of `X-Forwarded-For` when the config says a trusted proxy sets it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S> FromRequestParts<S> for ClientAddr
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if state.config.server.trust_forwarded_for {
            // The proxy appends the address it saw; earlier entries are the client's word.
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse::<IpAddr>().ok())
                .next_back();
            if let Some(addr) = forwarded {
                return Ok(Self(addr));
            }
        }
        // The extractor, not the raw extension, so `MockConnectInfo` works in tests.
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, &state)
            .await
            .map_err(|err| ApiError::internal("client address", err.body_text()))?;
        Ok(Self(peer.ip()))
    }
}
