//! Signing in and out through the dashboard.

use converge_e2e::browser::Browser;
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};

const USERNAME: &str = "input[name=username]";
const PASSWORD: &str = "input[name=password]";
const SUBMIT: &str = "form.login-card button[type=submit]";

async fn sign_in(browser: &Browser, password: &str) {
    browser.fill(USERNAME, "admin").await;
    browser.fill(PASSWORD, password).await;
    browser.click(SUBMIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_see_the_fleet_sign_out() {
    let server = TestServer::start().await;
    let browser = Browser::start(&server.url).await;

    browser.goto("/").await;
    browser.find(USERNAME).await;
    browser.wait_for_path("/login").await;
    browser.screenshot("login").await;

    sign_in(&browser, "not the password").await;
    browser
        .wait_for_text("[role=alert]", "wrong username or password")
        .await;

    sign_in(&browser, ADMIN_PASSWORD).await;
    browser
        .wait_for_text("[data-testid=fleet-empty]", "No hosts connected yet")
        .await;
    browser.wait_for_path("/").await;
    browser
        .wait_for_text("[data-testid=username]", "admin")
        .await;
    browser.find(".role.role-admin").await;
    let shot = browser.screenshot("fleet-empty").await;
    println!("screenshot: {}", shot.display());

    browser.click("button.sign-out").await;
    browser.find(USERNAME).await;
    browser.wait_for_path("/login").await;

    // Signed out for real: a reload does not bring the fleet back.
    browser.goto("/").await;
    browser.find(USERNAME).await;
    browser.wait_for_path("/login").await;

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ended_on_the_server_returns_the_browser_to_sign_in() {
    let server = TestServer::start().await;
    let browser = Browser::start(&server.url).await;
    browser.goto("/").await;
    sign_in(&browser, ADMIN_PASSWORD).await;
    browser.find("[data-testid=fleet-empty]").await;

    server.end_all_sessions().await;
    browser.refocus().await;
    browser.wait_for_text(".notice", "sign in first").await;
    browser.wait_for_path("/login").await;

    browser.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_link_survives_signing_in() {
    let server = TestServer::start().await;
    let browser = Browser::start(&server.url).await;
    browser.goto("/no/such/page").await;
    browser.wait_for_path("/login").await;
    sign_in(&browser, ADMIN_PASSWORD).await;
    browser.wait_for_path("/no/such/page").await;
    browser
        .wait_for_text("main", "There is no page at /no/such/page")
        .await;

    browser.close().await;
    server.stop().await;
}
