//! The real binary stopped mid-migration: killed, the next one finds the migration and
//! follows it to the end under the same id; stopped with SIGTERM, what its stream had
//! published is on disk.

use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{start, state, vm_uuid, wait_sampled, wait_until};
use converge_e2e::samples::Recorder;
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
    // Taken back, not found anew: the one migration of the VM is the first server's.
    let all = admin.get("/api/migrations").await;
    let of_vm: Vec<&serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["vm_uuid"] == uuid.as_str())
        .collect();
    assert_eq!(of_vm.len(), 1, "{all}");
    assert_eq!(of_vm[0]["id"], id.as_str());
    second.stop();

    lab.remove_vm("t-kill").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_migration_leaves_on_disk_what_the_stream_had_published() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-term", "loop", 64, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("converge.db");
    let config = config_text(&workspace_root().join("dist"), &db_path, HOSTS_CONFIG);
    let server = ServerProcess::start(&converge_binary(), &config, dir.path(), "info");
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let recorder = Recorder::open(&server.url, &admin.cookie).await;
    let uuid = vm_uuid(&admin, "t-term", "a").await;
    // Never converges over 4 MiB/s: sampled, pass after pass, until the server stops.
    let id = start(&admin, &uuid, "b", 4).await;
    wait_sampled(&admin, &id).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.stop();
    // What the stream had published before the server went.
    let seen = recorder.samples();
    let last = seen
        .iter()
        .filter(|s| s.id == id)
        .map(|s| s.at_ms)
        .max()
        .expect("samples were published");
    let passes: Vec<u64> = recorder
        .iterations
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| *m == id)
        .map(|(_, i)| *i)
        .collect();
    drop(recorder);

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db_path);
    let db = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let summary: String = sqlx::query_scalar("SELECT summary_json FROM migrations WHERE id = ?")
        .bind(&id)
        .fetch_one(&db)
        .await
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        summary["last_sample"]["at_ms"].as_i64(),
        Some(last),
        "the migration on disk ends with the last reading the stream published"
    );
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT at_ms FROM migration_samples WHERE migration_id = ?")
            .bind(&id)
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(
        stored.contains(&last),
        "the last reading is in the history: {stored:?}"
    );
    let marks: Vec<i64> =
        sqlx::query_scalar("SELECT iteration FROM migration_iterations WHERE migration_id = ?")
            .bind(&id)
            .fetch_all(&db)
            .await
            .unwrap();
    for pass in &passes {
        assert!(
            marks.contains(&i64::try_from(*pass).unwrap()),
            "pass {pass} was announced but is not on disk: {marks:?}"
        );
    }
    println!(
        "SIGTERM: {} readings and {} pass boundaries published; the last ({last}) and every boundary on disk",
        seen.iter().filter(|s| s.id == id).count(),
        passes.len()
    );
    db.close().await;
    lab.remove_vm("t-term").await;
}
