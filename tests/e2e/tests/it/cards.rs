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
    // The conservative preset, so the run stays non-converging long enough to watch.
    browser
        .find("[data-testid=start-dialog] select[name=preset]")
        .await
        .select_by_value("converge-safe")
        .await
        .unwrap();
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
    // The verdict badge (upper-cased by CSS, so found by its class).
    browser.find(".verdict-will_not_converge").await;
    browser.find("[data-testid=advice] li").await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_started_from_the_dialog_with_xbzrle_completes_and_is_in_history() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-dialog", "loop", 128, 100).await;
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), HOSTS_CONFIG).await;
    let browser = Browser::start(&server.url).await;
    browser.goto("/").await;
    browser.fill("input[name=username]", "admin").await;
    browser.fill("input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.login-card button[type=submit]").await;
    browser.find(".host.connected[data-host=b]").await;

    browser
        .click("tr[data-vm=t-dialog] [data-testid=migrate]")
        .await;
    let dialog = "[data-testid=start-dialog]";
    browser
        .find(&format!("{dialog} select[name=preset] option[value=nova]"))
        .await;
    browser
        .find(&format!("{dialog} select[name=preset]"))
        .await
        .select_by_value("converge-safe")
        .await
        .unwrap();
    // The linter explains a refused combination before anything is sent.
    browser.click(&format!("{dialog} input[name=xbzrle]")).await;
    browser
        .click(&format!("{dialog} input[name=parallel]"))
        .await;
    browser
        .wait_for_text(
            "[data-testid=lint]",
            "QEMU refuses xbzrle together with parallel connections",
        )
        .await;
    let disabled = browser
        .find("[data-testid=start-submit]")
        .await
        .attr("disabled")
        .await
        .unwrap();
    assert!(
        disabled.is_some(),
        "Start is disabled while the linter refuses"
    );
    browser
        .click(&format!("{dialog} input[name=parallel]"))
        .await;
    browser
        .fill(&format!("{dialog} input[name=cache_mib]"), "256")
        .await;
    browser
        .fill(&format!("{dialog} input[name=bandwidth]"), "32")
        .await;
    browser.screenshot("start-dialog").await;
    browser.click("[data-testid=start-submit]").await;

    browser.find("[data-testid=migration-card]").await;
    browser
        .wait_for_text_within(
            "[data-testid=outcome]",
            "Completed",
            Duration::from_secs(120),
        )
        .await;
    let hits = browser.wait_for_text("[data-testid=xbzrle]", "%").await;
    assert_ne!(
        hits.trim(),
        "0 %",
        "xbzrle found re-dirtied pages in its cache"
    );

    browser.click("header.top nav a[href='/history']").await;
    browser.wait_for_path("/history").await;
    browser
        .wait_for_text("[data-testid=history]", "t-dialog")
        .await;
    browser
        .wait_for_text("[data-testid=history]", "Completed")
        .await;
    browser.screenshot("history").await;
    browser.click("[data-testid=history] a").await;
    browser.find("[data-testid=migration-card]").await;
    browser
        .wait_for_text("[data-testid=outcome]", "Completed")
        .await;
    // The replay draws the charts from the stored samples.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while drawn_lines(&browser, 2).await < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replay never drew its charts"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shot = browser.screenshot("history-replay").await;
    println!("screenshot: {}", shot.display());

    // The audit page shows the start, with who and from where.
    browser.click("header.top nav a[href='/audit']").await;
    browser
        .wait_for_text("[data-testid=audit]", "t-dialog")
        .await;
    let row = browser
        .wait_for_text("[data-testid=audit] tbody tr", "start")
        .await;
    assert!(row.contains("admin") && row.contains("127.0.0.1"), "{row}");
    browser.screenshot("audit").await;

    browser.close().await;
    lab.remove_vm("t-dialog").await;
    server.stop().await;
}
