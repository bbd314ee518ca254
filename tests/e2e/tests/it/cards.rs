//! A live migration card in real Chromium: started from the dialog, numbers moving,
//! both charts drawing, aborted with confirmation.

use std::sync::Arc;
use std::time::Duration;

use converge_e2e::browser::Browser;
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};

/// Number of chart lines on the card with at least `points` points.
async fn drawn_lines(browser: &Browser, points: usize) -> usize {
    let script = format!(
        "return [...document.querySelectorAll('[data-testid=migration-card] path.line')]\
         .filter(p => (p.getAttribute('d') || '').split('L').length > {points}).length;"
    );
    let value = browser
        .client
        .execute(&script, vec![])
        .await
        .expect("run script");
    value.as_u64().unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_migration_gets_a_live_card_with_both_charts() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-card", "loop", 128, 100).await;
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), HOSTS_CONFIG).await;
    let browser = Browser::start(&server.url).await;
    browser.goto("/").await;
    browser.fill("input[name=username]", "admin").await;
    browser.fill("input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.login-card button[type=submit]").await;
    browser.find(".host.connected[data-host=a]").await;
    browser.find(".host.connected[data-host=b]").await;
    browser.wait_for_text("[data-testid=stream]", "Live").await;

    browser
        .click("tr[data-vm=t-card] [data-testid=migrate]")
        .await;
    browser
        .find("[data-testid=start-dialog] select[name=destination]")
        .await;
    browser
        .fill("[data-testid=start-dialog] input[name=bandwidth]", "32")
        .await;
    browser.click("[data-testid=start-submit]").await;

    browser.find("[data-testid=migration-card]").await;
    browser
        .wait_for_text("[data-testid=transfer]", "MiB/s")
        .await;
    // Both charts (transfer vs dirty, remaining) draw lines that grow with the samples.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while drawn_lines(&browser, 8).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the charts never drew 3 lines of 8+ points"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // By the third pass the trouble shows: the dirty rate is up against the transfer rate.
    browser
        .wait_for_text_within("[data-testid=iteration]", "3", Duration::from_secs(90))
        .await;
    let before = browser.wait_for_text("[data-testid=data-sent]", "of").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = browser.wait_for_text("[data-testid=data-sent]", "of").await;
    assert_ne!(before, after, "the numbers move");
    let shot = browser.screenshot("migration-card").await;
    println!("screenshot: {}", shot.display());

    browser.click("[data-testid=abort]").await;
    browser.click("[data-testid=abort-confirm]").await;
    browser
        .wait_for_text("[data-testid=outcome]", "Aborted")
        .await;
    browser.screenshot("migration-card-aborted").await;
    assert_eq!(
        lab.state_on("a", "t-card").await.as_deref(),
        Some("running")
    );

    browser.close().await;
    lab.remove_vm("t-card").await;
    server.stop().await;
}
