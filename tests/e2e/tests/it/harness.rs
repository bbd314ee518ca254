//! The test harness itself: a browser dropped by a failing test leaves nothing running.

use std::time::Duration;

use converge_e2e::browser::Browser;
use converge_e2e::server::TestServer;

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_dropped_without_closing_leaves_no_chromium_running() {
    let server = TestServer::start().await;
    let browser = Browser::start(&server.url).await;
    browser.goto("/").await;
    browser.find("input[name=username]").await;
    let pids = browser.browser_pids();
    assert!(
        pids.len() >= 2,
        "Chromium runs under chromedriver: {pids:?}"
    );
    // As when an assertion fails mid-test: no `close`.
    drop(browser);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "still running after the drop: {left:?}");
    server.stop().await;
}
