//! The dashboard's event stream after the browser gives up on it. A dropped connection is
//! retried by the browser itself; an error *answer* (here a 503 from whatever holds the
//! address while Converge restarts, as a proxy would give) closes an `EventSource` for
//! good. Every page that follows the stream must then open a new one by itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use converge_e2e::browser::Browser;
use converge_e2e::server::{ADMIN_PASSWORD, TestServer, password_hash};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Answers every request on `addr` with 503 and counts those for the event stream.
async fn answer_503(addr: SocketAddr) -> (JoinHandle<()>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let streams = Arc::new(AtomicUsize::new(0));
    let counted = streams.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = conn.read(&mut head).await.unwrap_or(0);
                if String::from_utf8_lossy(&head[..n]).starts_with("GET /api/events ") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
                          content-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (task, streams)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_the_browser_gave_up_on_is_opened_again_on_the_fleet_and_tenant_pages() {
    let extra = format!(
        r#"
[[users]]
username = "tina"
password_hash = "{}"
role = "tenant"
projects = ["acme"]
"#,
        password_hash()
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_with(dir.clone(), &extra).await;
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();

    for (user, page) in [
        ("admin", "[data-testid=fleet-empty]"),
        ("tina", "[data-testid=tenant-empty]"),
    ] {
        let browser = Browser::start(&server.url).await;
        browser.goto("/").await;
        browser.fill("input[name=username]", user).await;
        browser.fill("input[name=password]", ADMIN_PASSWORD).await;
        browser.click("form.login-card button[type=submit]").await;
        browser.find(page).await;
        browser.wait_for_text("[data-testid=stream]", "Live").await;

        // Converge goes away and something answers 503 in its place: the browser closes
        // the stream for good.
        server.stop().await;
        let (stub, refused) = answer_503(addr).await;
        browser
            .wait_for_text_within(
                "[data-testid=stream]",
                "Disconnected",
                Duration::from_secs(20),
            )
            .await;
        // The page keeps trying (every two seconds) while the 503s last.
        let seen = refused.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            refused.load(Ordering::SeqCst) > seen,
            "{user}'s page stopped asking for the stream after it closed"
        );

        // Converge is back, with the same database (so the same session): the page
        // follows it again without a reload.
        stub.abort();
        let _ = stub.await;
        server = TestServer::start_at(dir.clone(), &extra, addr).await;
        browser
            .wait_for_text_within("[data-testid=stream]", "Live", Duration::from_secs(20))
            .await;
        browser.find(page).await;
        browser.close().await;
    }
    server.stop().await;
}
