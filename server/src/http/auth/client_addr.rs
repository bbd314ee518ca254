//! The client's IP address, for throttling and the log.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::config::ProxyNet;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The address a request came from: the peer of the TCP connection or, when that peer is
/// a trusted proxy (`server.trusted_proxies`), the rightmost `X-Forwarded-For` entry that
/// is not one.
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
        // The extractor, not the raw extension, so `MockConnectInfo` works in tests.
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, &state)
            .await
            .map_err(|err| ApiError::internal("client address", err.body_text()))?;
        Ok(Self(client_of(
            peer.ip(),
            &parts.headers,
            &state.config.server.trusted_proxies,
        )))
    }
}

/// Who sent a request that reached us from `peer` with these headers. Each proxy appends
/// the address it saw, so the list is read from the right: while the hop is a trusted
/// proxy, the entry before it is believed. An entry that is not an address ends the walk
/// at the last trusted hop — the client could have written anything to the left of it.
pub(crate) fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[ProxyNet]) -> IpAddr {
    let is_trusted = |addr: IpAddr| trusted.iter().any(|net| net.contains(addr));
    let mut hop = unmap(peer);
    if !is_trusted(hop) {
        return hop;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            v.to_str()
                .map_or(vec!["(not text)"], |v| v.split(',').collect())
        })
        .collect();
    for entry in entries.iter().rev() {
        let Some(addr) = parse_entry(entry) else {
            return hop;
        };
        hop = addr;
        if !is_trusted(hop) {
            return hop;
        }
    }
    hop
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(addr) = entry.parse::<IpAddr>() {
        return Some(unmap(addr));
    }
    entry.parse::<SocketAddr>().ok().map(|s| unmap(s.ip()))
}

fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies() -> Vec<ProxyNet> {
        vec!["10.0.0.5".parse().unwrap(), "10.1.0.0/16".parse().unwrap()]
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let spoofed = forwarded(&["203.0.113.9"]);
        assert_eq!(
            client_of(ip("198.51.100.1"), &spoofed, &proxies()),
            ip("198.51.100.1")
        );
        assert_eq!(client_of(ip("10.0.0.5"), &spoofed, &[]), ip("10.0.0.5"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_wins() {
        // The client wrote "1.1.1.1"; the first proxy (10.1.2.3) saw 198.51.100.7.
        let headers = forwarded(&["1.1.1.1, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            client_of(ip("10.0.0.5"), &headers, &proxies()),
            ip("198.51.100.7")
        );
        // A port and an IPv4-mapped peer are understood.
        let headers = forwarded(&["198.51.100.8:4711"]);
        assert_eq!(
            client_of(ip("::ffff:10.0.0.5"), &headers, &proxies()),
            ip("198.51.100.8")
        );
    }

    #[test]
    fn junk_ends_the_walk_at_the_last_trusted_hop() {
        // Before the fix, the junk was skipped and the client's own "1.1.1.1" won.
        let headers = forwarded(&["1.1.1.1, not-an-address, 10.1.0.9"]);
        assert_eq!(
            client_of(ip("10.0.0.5"), &headers, &proxies()),
            ip("10.1.0.9")
        );
        assert_eq!(
            client_of(ip("10.0.0.5"), &HeaderMap::new(), &proxies()),
            ip("10.0.0.5")
        );
    }
}
