//! Advice proven by applying it: each one-click lever the forecast advises is applied
//! through the API on a real migration that was not finishing, and it then completes;
//! a lever that would not help is not advised.

use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{
    abort_and_wait, link_outrun_by, start_with, state, vm_uuid, wait_dirty_rate, wait_ended,
    wait_until, wait_verdict,
};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::Lab;
use reqwest::Method;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// The advised move of `lever`, if the forecast gives one.
fn advised(detail: &Value, lever: &str) -> Option<Value> {
    detail["migration"]["forecast"]["advice"]
        .as_array()?
        .iter()
        .find(|a| a["lever"]["lever"] == lever)
        .cloned()
}

/// Applies an advice's lever as the dashboard's button does.
async fn apply(client: &Client, id: &str, advice: &Value) {
    let lever = &advice["lever"];
    let body = match lever["lever"].as_str().unwrap() {
        "downtime_limit" => json!({ "lever": "downtime_limit", "ms": lever["value"] }),
        "bandwidth" => json!({ "lever": "bandwidth", "mib_s": lever["value"] }),
        "post_copy" => json!({ "lever": "post_copy" }),
        other => panic!("no such lever: {other}"),
    };
    let (status, reply) = client
        .send(Method::PATCH, &format!("/api/migrations/{id}"), Some(body))
        .await;
    assert_eq!(status, 200, "{reply}");
}

/// The advice record of the migration's applied advice.
fn applied(detail: &Value) -> Vec<Value> {
    detail["migration"]["advice_log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["applied_at_ms"].is_i64())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_hot_set_gets_the_downtime_limit_that_fits_and_completes_with_it() {
    let lab = Lab::acquire().await;
    // 8 MiB rewritten at 200 MiB/s: every pass finds it all dirty again, and 8 MiB at
    // 32 MiB/s needs ~250 ms of pause against a 50 ms limit.
    lab.start_vm("t-hot", "loop", 8, 200).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-hot", "a").await;
    let settings = json!({ "bandwidth_mib_s": 32, "downtime_limit_ms": 50 });
    let id = start_with(&admin, &uuid, "b", settings).await;
    let mut verdicts = Vec::new();
    let said = wait_until(
        &admin,
        &id,
        Duration::from_secs(90),
        "advised a downtime limit",
        |d| {
            let f = &d["migration"]["forecast"];
            let seen = (
                d["migration"]["last_sample"]["iteration"].as_u64(),
                f["verdict"].as_str().map(str::to_owned),
            );
            if verdicts.last() != Some(&seen) {
                println!("{seen:?} {}", f["reason"]);
                verdicts.push(seen);
            }
            f["verdict"] == "will_not_converge" && advised(d, "downtime_limit").is_some()
        },
    )
    .await;
    assert_eq!(state(&said), "running", "it did not finish by itself");
    let pass = said["migration"]["last_sample"]["iteration"]
        .as_u64()
        .unwrap();
    assert!(
        pass <= 12,
        "said at pass {pass}; steady passes are judged after five"
    );
    // Once said, it is not taken back while nothing changes.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let d = admin.get(&format!("/api/migrations/{id}")).await;
        let verdict = &d["migration"]["forecast"]["verdict"];
        assert_eq!(
            verdict, "will_not_converge",
            "{}",
            d["migration"]["forecast"]
        );
    }
    let advice = advised(&said, "downtime_limit").unwrap();
    let ms = advice["lever"]["value"].as_u64().unwrap();
    println!("advised: {} ({})", advice["action"], advice["effect"]);
    assert!((100..=1000).contains(&ms), "{advice}");
    apply(&admin, &id, &advice).await;
    let done = wait_ended(&admin, &id, Duration::from_secs(30)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let pause = done["migration"]["final_stats"]["downtime_ms"]
        .as_u64()
        .unwrap();
    println!("completed with a pause of {pause} ms after applying {ms} ms");
    let record = applied(&done);
    assert_eq!(record.len(), 1, "{}", done["migration"]["advice_log"]);
    assert_eq!(record[0]["applied_by"], "admin");
    let outcome = record[0]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("completed "), "{outcome}");
    lab.remove_vm("t-hot").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_measured_dirty_rate_gives_the_bandwidth_that_completes_and_no_useless_downtime() {
    let lab = Lab::acquire().await;
    // 128 MiB rewritten at 50 MiB/s over a 32 MiB/s limit: every 4 s pass finds the whole
    // set dirty, so the passes alone show only "at least 32 MiB/s".
    lab.start_vm("t-bandwidth", "loop", 128, 50).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-bandwidth", "a").await;
    let measured = wait_dirty_rate(&admin, &uuid, 0).await;
    println!(
        "measured before migrating: {:.1} MiB/s",
        measured as f64 / MIB as f64
    );
    assert!(
        (30 * MIB..=80 * MIB).contains(&measured),
        "a guest dirtying 50 MiB/s measured at {measured} B/s"
    );
    let id = start_with(&admin, &uuid, "b", json!({ "bandwidth_mib_s": 32 })).await;
    let said = wait_until(
        &admin,
        &id,
        Duration::from_secs(90),
        "advised a bandwidth",
        |d| advised(d, "bandwidth").is_some(),
    )
    .await;
    let f = &said["migration"]["forecast"];
    assert_eq!(f["verdict"], "will_not_converge", "{f}");
    assert_eq!(f["dirty_rate_basis"], "measured", "{f}");
    // 128 MiB in one pause at 32 MiB/s is 4 s: past what is ever advised.
    assert!(advised(&said, "downtime_limit").is_none(), "{f}");
    let advice = advised(&said, "bandwidth").unwrap();
    println!("advised: {} ({})", advice["action"], advice["effect"]);
    apply(&admin, &id, &advice).await;
    let done = wait_ended(&admin, &id, Duration::from_secs(90)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let record = applied(&done);
    assert_eq!(record.len(), 1, "{}", done["migration"]["advice_log"]);
    let outcome = record[0]["outcome"].as_str().unwrap();
    println!("{}: {outcome}", record[0]["action"]);
    assert!(outcome.starts_with("completed "), "{outcome}");
    lab.remove_vm("t-bandwidth").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_advised_switch_to_post_copy_completes_a_guest_that_outruns_the_link() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-postcopy", "fresh", 128, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-postcopy", "a").await;
    let link = link_outrun_by(&admin, &uuid, 3).await;
    let settings = json!({ "bandwidth_mib_s": link, "capabilities": { "postcopy": true } });
    let id = start_with(&admin, &uuid, "b", settings).await;
    let said = wait_until(
        &admin,
        &id,
        Duration::from_secs(90),
        "advised post-copy",
        |d| {
            d["migration"]["forecast"]["verdict"] == "will_not_converge"
                && advised(d, "post_copy").is_some()
        },
    )
    .await;
    let advice = advised(&said, "post_copy").unwrap();
    println!("advised: {} ({})", advice["action"], advice["effect"]);
    apply(&admin, &id, &advice).await;
    let done = wait_ended(&admin, &id, Duration::from_secs(90)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let record = applied(&done);
    assert_eq!(record.len(), 1, "{}", done["migration"]["advice_log"]);
    let outcome = record[0]["outcome"].as_str().unwrap();
    println!("{}: {outcome}", record[0]["action"]);
    assert!(outcome.starts_with("completed "), "{outcome}");
    assert_eq!(
        lab.state_on("b", "t-postcopy").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-postcopy").await;
    server.stop().await;
}

/// The advice's restart with auto-converge: abort, start again with it, completes.
#[tokio::test(flavor = "multi_thread")]
async fn the_advised_restart_with_auto_converge_completes() {
    let lab = Lab::acquire().await;
    // New random data as fast as the guest can write: no set to find, no xbzrle help.
    lab.start_vm("t-auto", "fresh", 128, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-auto", "a").await;
    let link = json!({ "bandwidth_mib_s": link_outrun_by(&admin, &uuid, 3).await });
    let id = start_with(&admin, &uuid, "b", link.clone()).await;
    let said = wait_verdict(&admin, &id, Duration::from_secs(90), "will_not_converge").await;
    let advice = said["migration"]["forecast"]["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "Abort, then start again with auto-converge")
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no auto-converge restart: {}",
                said["migration"]["forecast"]
            )
        });
    println!("advised: {} ({})", advice["action"], advice["effect"]);
    abort_and_wait(&admin, &id).await;
    let mut settings = link;
    settings["capabilities"] =
        json!({ "auto_converge": { "initial_pct": 20, "increment_pct": 10 } });
    let again = start_with(&admin, &uuid, "b", settings).await;
    // A bound, not the expectation: over a slow machine's slower link the throttle has further
    // to climb (here ~60 s at 59 MiB/s; CI's guest needed a link of ~12).
    let done = wait_ended(&admin, &again, Duration::from_secs(240)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    println!(
        "restarted with auto-converge: completed at up to {} % throttle",
        done["migration"]["max_throttle_pct"]
    );
    lab.remove_vm("t-auto").await;
    server.stop().await;
}

/// "Retry when the guest is idle", followed with Converge's own measurement: a guest busy
/// for 45 s then idle for 40 s will not converge while busy; aborted, it is started again
/// once the VM list's background reading shows it quiet, and completes.
#[tokio::test(flavor = "multi_thread")]
async fn retrying_when_the_measurement_finds_the_guest_idle_completes() {
    let lab = Lab::acquire().await;
    lab.remove_vm("t-phases").await;
    lab.run_with(
        &["start-vm", "t-phases", "phases", "128", "100", "a"],
        &[
            ("LAB_DIRTY_BUSY_S", "45"),
            ("LAB_DIRTY_IDLE_S", "40"),
            ("LAB_VM_MEMORY_MIB", "256"),
        ],
    )
    .await;
    let server = TestServer::lab("\n[dirty_rate]\nevery_s = 10\ngap_s = 0\n").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-phases", "a").await;
    let busy = wait_dirty_rate(&admin, &uuid, 0).await;
    println!("busy: {:.1} MiB/s", busy as f64 / MIB as f64);
    let link = json!({ "bandwidth_mib_s": 32 });
    let id = start_with(&admin, &uuid, "b", link.clone()).await;
    let said = wait_verdict(&admin, &id, Duration::from_secs(40), "will_not_converge").await;
    let last = said["migration"]["forecast"]["advice"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["action"], "Abort and retry when the guest is idle");
    let aborted_at = converge_testkit::now_ms();
    abort_and_wait(&admin, &id).await;
    // The VM list's reading, taken after the abort, says when it has gone quiet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let quiet = loop {
        let vms = admin.get("/api/vms").await;
        let reading = vms
            .as_array()
            .unwrap()
            .iter()
            .find(|vm| vm["uuid"] == uuid.as_str() && vm["host"] == "a")
            .map(|vm| vm["dirty_rate"].clone())
            .unwrap_or(Value::Null);
        let fresh = reading["at_ms"].as_i64().is_some_and(|at| at > aborted_at);
        if let Some(rate) = reading["bytes_per_s"].as_u64().filter(|_| fresh)
            && rate < 8 * MIB
        {
            break rate;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never measured quiet: {reading}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "quiet: {:.1} MiB/s; starting again",
        quiet as f64 / MIB as f64
    );
    let again = start_with(&admin, &uuid, "b", link).await;
    let done = wait_ended(&admin, &again, Duration::from_secs(40)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    lab.remove_vm("t-phases").await;
    server.stop().await;
}
