//! A server killed mid-migration: the next one finds the migration and follows it to
//! the end under the same id.

use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{start, state, vm_uuid, wait_sampled, wait_until};
use converge_e2e::server::{ADMIN_PASSWORD, config_text};
use converge_e2e::{converge_binary, workspace_root};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use converge_testkit::process::ServerProcess;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_is_replaced_and_the_migration_reported_to_completion() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-kill", "idle", 0, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(
        &workspace_root().join("dist"),
        &dir.path().join("converge.db"),
        HOSTS_CONFIG,
    );
    let binary = converge_binary();

    let first = ServerProcess::start(&binary, &config, dir.path(), "info");
    let admin = Client::login(&first.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-kill", "a").await;
    // Slow enough (~4 MiB/s for ~90 MiB) to outlive the first server.
    let id = start(&admin, &uuid, "b", 4).await;
    wait_sampled(&admin, &id).await;
    first.kill();

    let second = ServerProcess::start(&binary, &config, dir.path(), "info");
    let admin = Client::login(&second.url, "admin", ADMIN_PASSWORD).await;
    let running = wait_until(
        &admin,
        &id,
        Duration::from_secs(30),
        "was found again",
        |d| d["migration"]["last_sample"].is_object(),
    )
    .await;
    assert_eq!(
        running["migration"]["started_by"], "admin",
        "the same record, not a new one"
    );
    let done = wait_until(&admin, &id, Duration::from_secs(120), "completed", |d| {
        state(d) == "completed"
    })
    .await;
    assert_eq!(done["migration"]["vm_name"], "t-kill");
    assert_eq!(
        lab.state_on("b", "t-kill").await.as_deref(),
        Some("running")
    );
    let log = second.stop();
    assert!(log.contains("found a running migration"), "{log}");

    lab.remove_vm("t-kill").await;
}
