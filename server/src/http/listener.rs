//! The accept loop: HTTP/1.1 connections with a header deadline, a cap on connections in
//! total and per client address, and a graceful end.
//!
//! `axum::serve` has none of these knobs (its hyper builder has no timer, so hyper's
//! header-read timeout never fires): 50 connections that sent half a request header were
//! all still open 79 s later. Here hyper gets a timer and `header_read_timeout`, which
//! runs whenever a connection waits for a request head — after connecting and between
//! keep-alive requests alike — so it is both the slow-header limit and the idle limit. A
//! response in progress (a live event stream) is never cut by it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::{ProxyNet, ServerConfig};

/// How long connections get to finish their current request after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the accept loop enforces; from `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    max_per_address: usize,
    exempt: Arc<[ProxyNet]>,
}

impl Limits {
    pub(crate) fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(server.header_timeout_s),
            max_connections: server.max_connections,
            max_per_address: server.max_connections_per_address,
            exempt: server.trusted_proxies.clone().into(),
        }
    }
}

/// Connections held per client network.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerAddress`]; given back when dropped.
struct AddressSlot(Option<(Arc<PerAddress>, IpAddr)>);

impl PerAddress {
    fn claim(self: &Arc<Self>, addr: IpAddr, max: usize) -> Option<AddressSlot> {
        let network = crate::auth::network_of(addr);
        let mut held = self.lock();
        let count = held.entry(network).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot(Some((self.clone(), network))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((table, network)) = self.0.take() {
            let mut held = table.lock();
            if let Some(count) = held.get_mut(&network) {
                *count -= 1;
                if *count == 0 {
                    held.remove(&network);
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled; then stops accepting, lets each
/// connection finish its request (bounded by [`SHUTDOWN_GRACE`]) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before accept: wait
                    // a moment rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Some(held) = admit(&limits, &total, &per_address, peer.ip()) else {
            refuse(&stream, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            limits.header_timeout,
            stop.clone(),
            held,
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

type Held = (OwnedSemaphorePermit, AddressSlot);

fn admit(
    limits: &Limits,
    total: &Arc<Semaphore>,
    per_address: &Arc<PerAddress>,
    peer: IpAddr,
) -> Option<Held> {
    let permit = total.clone().try_acquire_owned().ok()?;
    let slot = if limits.exempt.iter().any(|net| net.contains(peer)) {
        AddressSlot(None)
    } else {
        per_address.claim(peer, limits.max_per_address)?
    };
    Some((permit, slot))
}

/// Answers a connection over the limits with a short 503 and closes it. One non-blocking
/// write: a refused client gets no task, no buffer and no wait.
fn refuse(stream: &TcpStream, peer: SocketAddr) {
    const BODY: &str = r#"{"error":"the server has too many connections open (from your address or in all); try again in a moment"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\ncache-control: no-store\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
    tracing::debug!(%peer, "connection refused: over the connection limits");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
    _held: Held,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        // The router's error type is `Infallible`: every failure is a response.
        async move { app.oneshot(request.map(Body::new)).await }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
