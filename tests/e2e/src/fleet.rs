//! Helpers for tests that drive migrations through the API.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Client;

/// Polls the JSON list at `path` (within 30 s) until an entry satisfies `wanted`.
async fn wait_listed(
    client: &Client,
    path: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    for _ in 0..120 {
        let list = client.get(path).await;
        if let Some(found) = list.as_array().into_iter().flatten().find(|v| wanted(v)) {
            return Some(found.clone());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// UUID of the VM called `name` on `host`, once the server lists it (within 30 s).
pub async fn vm_uuid(client: &Client, name: &str, host: &str) -> String {
    let vm = wait_listed(client, "/api/vms", |vm| {
        vm["name"] == name && vm["host"] == host && vm["state"] == "running"
    })
    .await
    .unwrap_or_else(|| panic!("the server never listed {name} running on {host}"));
    vm["uuid"].as_str().unwrap_or_default().to_owned()
}

/// The VM's dirty rate as the background measurement read it, bytes/s, once there is a
/// reading taken after `after_ms` (unix ms; within 30 s).
pub async fn wait_dirty_rate(client: &Client, uuid: &str, after_ms: i64) -> u64 {
    let vm = wait_listed(client, "/api/vms", |vm| {
        vm["uuid"] == uuid
            && vm["dirty_rate"]["bytes_per_s"].is_u64()
            && vm["dirty_rate"]["at_ms"]
                .as_i64()
                .is_some_and(|at| at > after_ms)
    })
    .await
    .unwrap_or_else(|| panic!("VM {uuid} was never measured"));
    vm["dirty_rate"]["bytes_per_s"].as_u64().unwrap_or_default()
}

/// A bandwidth limit, MiB/s, that the guest `uuid` outruns `times` over, from the server's
/// background measurement of its dirty rate (within 30 s), at least 4 MiB/s.
///
/// A busy guest's speed under TCG is the machine's: the `fresh` guest (new random data
/// into fresh pages, as fast as it can) wrote well over 100 MiB/s on one machine and
/// about 35 MiB/s on CI's, where a migration "too fast for it" at 100 MiB/s completed in
/// 5 s. A test that needs a guest to outrun its link sets the link from the guest.
pub async fn link_outrun_by(client: &Client, uuid: &str, times: u64) -> u64 {
    let rate = wait_dirty_rate(client, uuid, 0).await;
    let link = (rate >> 20) / times.max(1);
    println!(
        "the guest dirties {} MiB/s (measured); a link of {} MiB/s",
        rate >> 20,
        link.max(4)
    );
    link.max(4)
}

/// Waits (within 30 s) until the server holds a connection to `host`.
pub async fn wait_connected(client: &Client, host: &str) {
    wait_listed(client, "/api/hosts", |h| {
        h["name"] == host && h["state"] == "connected"
    })
    .await
    .unwrap_or_else(|| panic!("the server never connected to host {host}"));
}

/// Starts a migration of `vm_uuid` to `destination` at `bandwidth_mib_s`, with no
/// capabilities and no deadline, and returns its id.
pub async fn start(
    client: &Client,
    vm_uuid: &str,
    destination: &str,
    bandwidth_mib_s: u64,
) -> String {
    start_with(
        client,
        vm_uuid,
        destination,
        json!({ "bandwidth_mib_s": bandwidth_mib_s }),
    )
    .await
}

/// Starts a migration with `settings` over empty settings (no capabilities, no deadline,
/// nothing adaptive): the whole object is sent, which replaces every field of the
/// server's preset. (`StartMigration.settings` is a patch over the preset; a partial one
/// would keep the preset's deadline and adaptive policy, which these tests do not want.)
pub async fn start_with(
    client: &Client,
    vm_uuid: &str,
    destination: &str,
    settings: Value,
) -> String {
    let mut whole =
        serde_json::to_value(converge_api::MigrationSettings::default()).expect("encode");
    merge(&mut whole, &settings);
    let settings = whole;
    // A test's server connects to both hosts in parallel; the source VM being listed
    // says nothing of the destination.
    wait_connected(client, destination).await;
    let (status, body) = client
        .post(
            "/api/migrations",
            json!({ "vm_uuid": vm_uuid, "destination": destination, "settings": settings }),
        )
        .await;
    assert_eq!(status, 201, "start: {body}");
    body["id"].as_str().expect("an id").to_owned()
}

/// Polls `GET /api/migrations/{id}` until `done` holds (within `timeout`); returns the
/// migration detail.
pub async fn wait_until(
    client: &Client,
    id: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        last = client.get(&format!("/api/migrations/{id}")).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "migration {id} never {what} within {timeout:?}; last: {}",
        last["migration"]
    );
}

/// Whether a migration's detail says it has ended (completed, failed or aborted).
pub fn ended(detail: &Value) -> bool {
    !["starting", "running", "post_copy"].contains(&state(detail))
}

/// Waits (within `timeout`) until migration `id` has ended; returns its detail.
pub async fn wait_ended(client: &Client, id: &str, timeout: Duration) -> Value {
    wait_until(client, id, timeout, "ended", ended).await
}

/// Waits (within `timeout`) until migration `id`'s forecast says `verdict`.
pub async fn wait_verdict(client: &Client, id: &str, timeout: Duration, verdict: &str) -> Value {
    wait_until(client, id, timeout, &format!("said {verdict}"), |d| {
        d["migration"]["forecast"]["verdict"] == verdict
    })
    .await
}

/// Aborts migration `id` (the request must be accepted) and waits (within 30 s) until it
/// has stopped running.
pub async fn abort_and_wait(client: &Client, id: &str) {
    let (status, body) = client
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 202, "abort: {body}");
    wait_until(client, id, Duration::from_secs(30), "ended", |d| {
        state(d) != "running"
    })
    .await;
}

/// The migration's state as text.
pub fn state(detail: &Value) -> &str {
    detail["migration"]["state"].as_str().unwrap_or_default()
}

/// Waits until the server has sampled the migration at least once (within 30 s).
pub async fn wait_sampled(client: &Client, id: &str) -> Value {
    wait_until(client, id, Duration::from_secs(30), "was sampled", |d| {
        d["samples"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await
}

/// `patch` merged into `target` (JSON merge patch, as the server applies settings).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        _ => *target = patch.clone(),
    }
}
