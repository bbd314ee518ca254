//! The forecast and the adaptive preset against real QEMU.

use std::time::Duration;

use converge_e2e::client::Client;
use converge_e2e::fleet::{
    abort_and_wait, ended, link_outrun_by, start_with, state, vm_uuid, wait_ended, wait_until,
    wait_verdict,
};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::Lab;
use serde_json::{Value, json};

fn actions(detail: &Value) -> Vec<(String, String, String)> {
    detail["migration"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let t = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (t("actor"), t("what"), t("reason"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn will_not_converge_is_said_within_a_few_passes_with_its_numbers() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-verdict", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-verdict", "a").await;
    let id = start_with(&admin, &uuid, "b", json!({ "bandwidth_mib_s": 32 })).await;
    let said = wait_verdict(&admin, &id, Duration::from_secs(90), "will_not_converge").await;
    let pass = said["migration"]["last_sample"]["iteration"]
        .as_u64()
        .unwrap();
    assert!(pass <= 4, "the verdict came at pass {pass}");
    let f = &said["migration"]["forecast"];
    let reason = f["reason"].as_str().unwrap();
    assert!(reason.contains("the link carries 3"), "{reason}");
    assert!(reason.contains("a dirty set of"), "{reason}");
    assert!(f["eta_max_s"].is_null(), "no end in sight: {f}");
    let advice: Vec<&str> = f["advice"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        advice.last(),
        Some(&"Abort and retry when the guest is idle")
    );
    // The restart it advises, followed: abort, start again with xbzrle at the advised
    // cache, and it completes.
    let xbzrle = advice
        .iter()
        .find_map(|a| a.strip_prefix("Abort, then start again with xbzrle (cache "))
        .unwrap_or_else(|| panic!("no xbzrle restart advised: {advice:?}"));
    let cache_mib: u64 = xbzrle.trim_end_matches(" MiB)").parse().unwrap();
    abort_and_wait(&admin, &id).await;
    let settings = json!({
        "bandwidth_mib_s": 32,
        "capabilities": { "xbzrle_cache_bytes": cache_mib << 20 },
    });
    let again = start_with(&admin, &uuid, "b", settings).await;
    let done = wait_ended(&admin, &again, Duration::from_secs(90)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    println!("restarted with the advised {cache_mib} MiB xbzrle cache: completed");
    lab.remove_vm("t-verdict").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_xbzrle_the_same_guest_is_called_converging_and_ends_inside_its_eta() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-eta", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-eta", "a").await;
    let settings = json!({
        "bandwidth_mib_s": 32,
        "capabilities": { "xbzrle_cache_bytes": 256u64 << 20 },
    });
    let id = start_with(&admin, &uuid, "b", settings).await;
    // The first ETA range once xbzrle's deltas flow (pass 3 on), from a "converging" or
    // (when the passes shrink faster than a reading) "switching over" verdict, and the
    // sample it was made at; whether it was called converging (or, when the deltas finish
    // between two readings, switching over) on the way; and any verdict that gave it up.
    let mut first: Option<(i64, u64, u64)> = None;
    let mut called_converging = false;
    let mut given_up = Vec::new();
    let mut trace = Vec::new();
    let done = wait_until(&admin, &id, Duration::from_secs(120), "ended", |d| {
        let m = &d["migration"];
        let f = &m["forecast"];
        let seen = (
            m["last_sample"]["iteration"].as_u64(),
            f["verdict"].as_str().map(str::to_owned),
            f["eta_min_s"].as_u64(),
            f["eta_max_s"].as_u64(),
        );
        if trace.last() != Some(&seen) {
            println!("{seen:?} {}", f["reason"]);
            trace.push(seen);
        }
        let pass = m["last_sample"]["iteration"].as_u64().unwrap_or(0);
        called_converging |=
            pass >= 3 && (f["verdict"] == "converging" || f["verdict"] == "switching_over");
        if pass >= 3 && (f["verdict"] == "will_not_converge" || f["verdict"] == "stalled") {
            given_up.push(format!("pass {pass}: {} — {}", f["verdict"], f["reason"]));
        }
        if first.is_none()
            && pass >= 3
            && (f["verdict"] == "converging" || f["verdict"] == "switching_over")
            && let (Some(at), Some(lo), Some(hi)) = (
                m["last_sample"]["at_ms"].as_i64(),
                f["eta_min_s"].as_u64(),
                f["eta_max_s"].as_u64(),
            )
        {
            first.replace((at, lo, hi));
        }
        ended(d)
    })
    .await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    assert!(
        called_converging,
        "never called converging once deltas flowed"
    );
    assert!(
        given_up.is_empty(),
        "a guest that finished was given up on: {given_up:?}"
    );
    let (at, lo, hi) = first.expect("an ETA range before the end");
    let ended = done["migration"]["ended_at_ms"].as_i64().unwrap();
    let took_s = (ended - at) as f64 / 1000.0;
    println!("ETA {lo}..{hi} s, ended after {took_s:.1} s");
    // The range is in whole seconds and the end is seen by the next one-second sample.
    assert!(
        took_s >= lo as f64 - 1.0 && took_s <= hi as f64 + 1.0,
        "ended {took_s:.1} s after a forecast of {lo}..{hi} s"
    );
    lab.remove_vm("t-eta").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xbzrle_cache_too_small_is_called_out_and_the_advised_restart_completes() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-cache", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-cache", "a").await;
    let with_cache = |mib: u64| {
        json!({
            "bandwidth_mib_s": 32,
            "capabilities": { "xbzrle_cache_bytes": mib << 20 },
        })
    };
    // Half the ~130 MiB the guest rewrites: pages collide and half are sent whole.
    let id = start_with(&admin, &uuid, "b", with_cache(64)).await;
    let said = wait_verdict(&admin, &id, Duration::from_secs(90), "will_not_converge").await;
    let f = &said["migration"]["forecast"];
    assert!(f["xbzrle_hit_pct"].as_u64().unwrap() < 80, "{f}");
    let advice = &f["advice"][0];
    assert_eq!(
        advice["action"], "Abort, then start again with an xbzrle cache of 256 MiB",
        "{advice}"
    );
    abort_and_wait(&admin, &id).await;
    let id = start_with(&admin, &uuid, "b", with_cache(256)).await;
    let done = wait_ended(&admin, &id, Duration::from_secs(90)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    lab.remove_vm("t-cache").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_adaptive_preset_completes_a_loop_guest_with_xbzrle() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-adapt-loop", "loop", 128, 100).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-adapt-loop", "a").await;
    let presets = admin.get("/api/presets").await;
    let mut settings = presets[0]["settings"].clone();
    assert_eq!(presets[0]["name"], "converge");
    settings["bandwidth_mib_s"] = json!(32);
    let id = start_with(&admin, &uuid, "b", settings).await;
    let done = wait_ended(&admin, &id, Duration::from_secs(120)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let chose = &actions(&done)[0];
    assert_eq!(
        (chose.0.as_str(), chose.1.as_str()),
        ("policy", "chose the capabilities")
    );
    assert!(chose.2.contains("dirty rate measured"), "{}", chose.2);
    assert!(chose.2.contains("xbzrle"), "{}", chose.2);
    assert!(done["migration"]["settings"]["capabilities"]["xbzrle_cache_bytes"].is_u64());
    lab.remove_vm("t-adapt-loop").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_adaptive_preset_rescues_a_fresh_guest_with_post_copy() {
    let lab = Lab::acquire().await;
    lab.start_vm("t-adapt-fresh", "fresh", 128, 0).await;
    let server = TestServer::lab("").await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let uuid = vm_uuid(&admin, "t-adapt-fresh", "a").await;
    let link = link_outrun_by(&admin, &uuid, 3).await;
    let id = start_with(
        &admin,
        &uuid,
        "b",
        json!({ "bandwidth_mib_s": link, "adaptive": true, "deadline": { "completion_max_s": 3400 } }),
    )
    .await;
    let done = wait_ended(&admin, &id, Duration::from_secs(150)).await;
    assert_eq!(state(&done), "completed", "{}", done["migration"]);
    let policy: Vec<(String, String, String)> = actions(&done)
        .into_iter()
        .filter(|a| a.0 == "policy")
        .collect();
    let post_copy = policy
        .iter()
        .find(|a| a.1 == "switch to post-copy")
        .unwrap_or_else(|| panic!("the policy switched to post-copy: {policy:?}"));
    assert!(post_copy.2.starts_with("forecast: "), "{}", post_copy.2);
    assert!(
        post_copy.2.contains("Pre-copy will not finish"),
        "{}",
        post_copy.2
    );
    assert_eq!(
        lab.state_on("b", "t-adapt-fresh").await.as_deref(),
        Some("running")
    );
    lab.remove_vm("t-adapt-fresh").await;
    server.stop().await;
}
