//! Lab benchmark (prints a table, asserts nothing): each configuration on each workload,
//! through the real server and the real two-host lab.
//!
//! Workloads: `loop` (rewrites 128 MiB at 100 MiB/s), `fresh` (new random data into a
//! 128 MiB ring, as fast as it can), `hot` (a small hot set: 16 MiB at 200 MiB/s),
//! `phases` (128 MiB at 100 MiB/s for 45 s, then 40 s idle, and again) and `large-idle`
//! (a 2 GiB guest that does nothing). The lab's link is emulated by a 32 MiB/s bandwidth
//! limit on every run (presets leave bandwidth unlimited, and loopback is far faster
//! than a real link). A run that has not ended within the bound is stopped and reported
//! as not completed.
//!
//! Usage: `preset-matrix [bound_s] [config…]`, with `WORKLOADS=hot,phases` to run some
//! workloads only; a config given twice or more runs that often (the target compares medians);
//! `TRACE=1` prints every change of each run's forecast. Configs are preset names; `nothing`, `xbzrle`, `auto-converge`, `both`
//! (static capabilities); `advised` (nothing, then the forecast's first one-click advice
//! applied once it says *will not converge*); `retry-idle` (nothing; aborted once it will
//! not converge, started again when the background measurement finds the guest quiet).
//!
//! Besides the table it prints the two figures that say how right the forecast is: the
//! share of applied one-click advice that led to completion, and ETA interval coverage —
//! for each completed run, whether the real end fell inside the ETA range the forecast gave
//! when 30 %, 60 % and 90 % of the run had passed (with a second either side for the
//! readings' granularity), and the median width of those ranges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_e2e::client::Client;
use converge_e2e::fleet::{ended, start_with, state, vm_uuid, wait_dirty_rate};
use converge_e2e::server::{ADMIN_PASSWORD, TestServer};
use converge_testkit::lab::{HOSTS_CONFIG, Lab};
use serde_json::{Value, json};

const LINK_MIB_S: u64 = 32;
/// Name, dirtier mode, MiB, MiB/s, guest memory in MiB.
const WORKLOADS: [(&str, &str, u32, u32, u32); 5] = [
    ("loop", "loop", 128, 100, 512),
    ("fresh", "fresh", 128, 0, 512),
    ("hot", "loop", 16, 200, 512),
    ("phases", "phases", 128, 100, 512),
    ("large-idle", "idle", 0, 0, 2048),
];
/// `phases`: busy and idle spells, s. A busy spell longer than the first pass at the link's
/// rate (512 MiB at 32 MiB/s is 16 s), so that a migration started while busy meets it.
const PHASES: (&str, &str) = ("45", "40");
/// The background measurement often enough for `retry-idle` to see a quiet spell.
const MEASURE_OFTEN: &str = "\n[dirty_rate]\nevery_s = 10\ngap_s = 0\n";
/// A guest dirtying less than this is quiet enough to start again (`retry-idle`).
const QUIET_BYTES_S: u64 = 8 << 20;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bound = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(150));
    let mut configs: Vec<String> = args.collect();
    if configs.is_empty() {
        configs = ["converge", "nova", "ovirt-minimal-downtime", "proxmox"]
            .map(String::from)
            .to_vec();
    }
    let only: Option<Vec<String>> = std::env::var("WORKLOADS")
        .ok()
        .map(|w| w.split(',').map(str::to_owned).collect());
    let workloads: Vec<_> = WORKLOADS
        .into_iter()
        .filter(|w| only.as_ref().is_none_or(|o| o.iter().any(|n| n == w.0)))
        .collect();
    let mut results: Vec<Outcome> = Vec::new();
    let lab = Lab::acquire().await;
    let config = format!("{HOSTS_CONFIG}{MEASURE_OFTEN}");
    let server = TestServer::start_with(Arc::new(tempfile::tempdir().unwrap()), &config).await;
    let admin = Client::login(&server.url, "admin", ADMIN_PASSWORD).await;
    let presets = admin.get("/api/presets").await;
    println!(
        "preset-matrix: link {LINK_MIB_S} MiB/s, bound {} s per run",
        bound.as_secs()
    );
    println!(
        "{:<7} {:<24} {:<22} {:>9} {:>10} {:>10} {:>11}",
        "load", "config", "outcome", "time s", "throttle", "pause ms", "sent MiB"
    );
    for &(load, mode, mb, rate, memory) in &workloads {
        for config in &configs {
            let name = format!("bench-{load}");
            lab.remove_vm(&name).await;
            let (mb, rate, memory) = (mb.to_string(), rate.to_string(), memory.to_string());
            lab.run_with(
                &["start-vm", &name, mode, &mb, &rate, "a"],
                &[
                    ("LAB_VM_MEMORY_MIB", &memory),
                    ("LAB_DIRTY_BUSY_S", PHASES.0),
                    ("LAB_DIRTY_IDLE_S", PHASES.1),
                ],
            )
            .await;
            let booted_ms = now_ms();
            let uuid = vm_uuid(&admin, &name, "a").await;
            // A reading of the guest at work, not of its boot: as a VM that has run a while
            // would have (the background measurement is every 10 s here).
            wait_dirty_rate(&admin, &uuid, booted_ms).await;
            let settings = settings_for(config, &presets);
            let started = Instant::now();
            let requested_ms = now_ms();
            let id = start_with(&admin, &uuid, "b", settings.clone()).await;
            let until = started + bound;
            let mut run = follow(&admin, &id, until, config == "advised").await;
            if config == "retry-idle" && state(&run.detail) == "running" {
                run = retry_when_quiet(&admin, &id, &uuid, settings, until).await;
            }
            let detail = run.detail.clone();
            let m = &detail["migration"];
            // From the request to libvirt's end as the server recorded it (the polls here
            // are half a second apart); a run still going, to when it was given up.
            let elapsed = m["ended_at_ms"]
                .as_i64()
                .map_or(started.elapsed().as_secs_f64(), |end| {
                    (end - requested_ms) as f64 / 1000.0
                });
            let samples = detail["samples"].as_array().cloned().unwrap_or_default();
            let throttle = samples
                .iter()
                .filter_map(|s| s["throttle_pct"].as_u64())
                .max()
                .unwrap_or(0);
            let outcome = match state(&detail) {
                "completed" => "completed".to_owned(),
                "running" => format!("not done in {} s", bound.as_secs()),
                other => format!("{other} by policy"),
            };
            let sent = m["final_stats"]["data_sent_bytes"]
                .as_u64()
                .or_else(|| m["last_sample"]["data_processed_bytes"].as_u64())
                .unwrap_or(0);
            println!(
                "{:<7} {:<24} {:<22} {:>9.1} {:>9}% {:>10} {:>11}",
                load,
                config,
                outcome,
                elapsed,
                throttle,
                m["final_stats"]["downtime_ms"]
                    .as_u64()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                sent >> 20
            );
            if let Some(at) = m["started_at_ms"].as_i64() {
                println!(
                    "        libvirt migration started {} ms after the request",
                    at - requested_ms
                );
            }
            // What the policy did and why, so a number in the table can be explained.
            for action in m["actions"].as_array().into_iter().flatten() {
                if action["actor"] == "policy" {
                    println!(
                        "        policy: {}: {}",
                        action["what"].as_str().unwrap_or_default(),
                        action["reason"].as_str().unwrap_or_default()
                    );
                }
            }
            if let Some(applied) = &run.applied {
                println!("        applied: {applied}");
            }
            let eta = eta_checks(&run);
            for c in &eta {
                println!(
                    "        ETA at {} % (at {:.1} s): {}..{} s, ended {:.1} s later: {}",
                    c.pct,
                    c.seen_s,
                    c.lo,
                    c.hi,
                    c.end_after_s,
                    if c.covered { "held" } else { "MISSED" }
                );
            }
            results.push(Outcome {
                load,
                config: config.clone(),
                completed: state(&detail) == "completed",
                seconds: elapsed,
                throttle,
                advice_applied: run.applied.is_some(),
                eta,
            });
            if state(&detail) == "running" {
                let id = detail["migration"]["id"].as_str().unwrap_or(&id).to_owned();
                let _ = admin
                    .post(&format!("/api/migrations/{id}/abort"), json!({}))
                    .await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            lab.remove_vm(&name).await;
        }
    }
    server.stop().await;
    report_target(&results, &workloads);
    report_accuracy(&results);
}

fn now_ms() -> i64 {
    converge_testkit::now_ms()
}

/// For a completed run: at 30, 60 and 90 % of it, whether the ETA range the forecast gave
/// then (at the last poll before that point; none if that poll had no range) held the real
/// end (a second either side).
fn eta_checks(run: &Run) -> Vec<EtaCheck> {
    let m = &run.detail["migration"];
    let (Some(start), Some(end)) = (m["started_at_ms"].as_i64(), m["ended_at_ms"].as_i64()) else {
        return Vec::new();
    };
    if m["state"] != "completed" {
        return Vec::new();
    }
    [30u32, 60, 90]
        .into_iter()
        .filter_map(|pct| {
            let at = start + (end - start) * i64::from(pct) / 100;
            let &(seen, range) = run.etas.iter().rev().find(|(seen, _)| *seen <= at)?;
            let (lo, hi) = range?;
            let covered =
                end >= seen + lo as i64 * 1000 - 1000 && end <= seen + hi as i64 * 1000 + 1000;
            Some(EtaCheck {
                pct,
                covered,
                lo,
                hi,
                seen_s: (seen - start) as f64 / 1000.0,
                end_after_s: (end - seen) as f64 / 1000.0,
            })
        })
        .collect()
}

/// One ETA check of a completed run.
struct EtaCheck {
    pct: u32,
    covered: bool,
    /// The range, seconds from when it was seen.
    lo: u64,
    hi: u64,
    /// When it was seen, s after the start, and how long after that the run ended.
    seen_s: f64,
    end_after_s: f64,
}

/// The forecast's record over the runs: applied advice that completed, and ETA coverage.
fn report_accuracy(results: &[Outcome]) {
    let applied: Vec<&Outcome> = results.iter().filter(|r| r.advice_applied).collect();
    let completed = applied.iter().filter(|r| r.completed).count();
    println!(
        "advice: {completed} of {} runs where one-click advice was applied completed{}",
        applied.len(),
        if applied.is_empty() {
            String::new()
        } else {
            format!(
                " ({:.0} %)",
                100.0 * completed as f64 / applied.len() as f64
            )
        }
    );
    for pct in [30u32, 60, 90] {
        let checks: Vec<(bool, u64)> = results
            .iter()
            .flat_map(|r| r.eta.iter())
            .filter(|c| c.pct == pct)
            .map(|c| (c.covered, c.hi.saturating_sub(c.lo)))
            .collect();
        let without = results
            .iter()
            .filter(|r| r.completed && !r.eta.iter().any(|c| c.pct == pct))
            .count();
        if checks.is_empty() {
            println!("ETA at {pct} %: no completed run had a range then ({without} without)");
            continue;
        }
        let held = checks.iter().filter(|(c, _)| *c).count();
        let mut widths: Vec<u64> = checks.iter().map(|(_, w)| *w).collect();
        widths.sort_unstable();
        println!(
            "ETA at {pct} %: the end was inside the range in {held} of {} runs ({:.0} %); median width {} s; {without} completed runs had no range then",
            checks.len(),
            100.0 * held as f64 / checks.len() as f64,
            widths[widths.len() / 2]
        );
    }
}

/// One run's result.
struct Outcome {
    load: &'static str,
    config: String,
    completed: bool,
    seconds: f64,
    throttle: u64,
    /// One-click advice was applied during the run.
    advice_applied: bool,
    /// ETA checks at 30, 60 and 90 % of the run (completed runs only).
    eta: Vec<EtaCheck>,
}

/// What following one migration saw.
struct Run {
    detail: Value,
    /// The ETA range at each poll: (when, unix ms; soonest s and latest s, if a range).
    etas: Vec<(i64, Option<(u64, u64)>)>,
    /// The advice applied, if any.
    applied: Option<String>,
}

/// The adaptive preset's target: complete every workload within 1.0× the best static
/// configuration's time, with no more throttle than that configuration. A configuration
/// given more than once is judged by its median run (all its runs must complete).
fn report_target(results: &[Outcome], workloads: &[(&str, &str, u32, u32, u32)]) {
    for &(load, ..) in workloads {
        let best = ["nothing", "xbzrle", "auto-converge", "both"]
            .into_iter()
            .filter_map(|config| median_run(results, load, config))
            .filter(|r| r.completed)
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
        match (median_run(results, load, "converge"), best) {
            (Some(a), Some(b)) => {
                // Slower than the best static's median but not than its slowest run: the
                // difference is within the runs' own spread.
                let verdict = if !a.completed || a.throttle > b.throttle {
                    "MISSED"
                } else if a.seconds <= b.seconds {
                    "MET"
                } else if b.runs.len() > 1
                    && b.runs.last().is_some_and(|slowest| a.seconds <= *slowest)
                {
                    "within the spread of its runs"
                } else {
                    "MISSED"
                };
                println!(
                    "target {load}: adaptive {} in {:.1} s at {}% throttle (runs {}); best static {} {:.1} s at {}% (runs {}) → {:.2}× the time: {}",
                    if a.completed {
                        "completed"
                    } else {
                        "did not complete"
                    },
                    a.seconds,
                    a.throttle,
                    seconds_list(&a.runs),
                    b.config,
                    b.seconds,
                    b.throttle,
                    seconds_list(&b.runs),
                    a.seconds / b.seconds,
                    verdict
                );
            }
            (Some(_), None) => {
                println!("target {load}: no static configuration in this run completed")
            }
            _ => {}
        }
    }
}

/// A configuration's median run on a workload: its time, its highest throttle, whether
/// every run completed.
struct Median {
    config: &'static str,
    completed: bool,
    seconds: f64,
    throttle: u64,
    /// Every run's time, s, shortest first.
    runs: Vec<f64>,
}

/// "5.6, 5.8, 6.1 s".
fn seconds_list(runs: &[f64]) -> String {
    let all: Vec<String> = runs.iter().map(|s| format!("{s:.1}")).collect();
    format!("{} s", all.join(", "))
}

fn median_run(results: &[Outcome], load: &str, config: &'static str) -> Option<Median> {
    let runs: Vec<&Outcome> = results
        .iter()
        .filter(|r| r.load == load && r.config == config)
        .collect();
    let mut seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    Some(Median {
        config,
        completed: runs.iter().all(|r| r.completed),
        seconds: *seconds.get(seconds.len() / 2)?,
        throttle: runs.iter().map(|r| r.throttle).max()?,
        runs: seconds,
    })
}

/// A preset's settings (or a static configuration) on the emulated link.
fn settings_for(config: &str, presets: &Value) -> Value {
    let xbzrle = json!({ "xbzrle_cache_bytes": 256u64 << 20 });
    let auto = json!({ "auto_converge": { "initial_pct": 20, "increment_pct": 10 } });
    let mut settings = match config {
        "nothing" | "advised" | "retry-idle" => json!({}),
        "xbzrle" => json!({ "capabilities": xbzrle }),
        "auto-converge" => json!({ "capabilities": auto }),
        "both" => json!({ "capabilities": {
            "xbzrle_cache_bytes": 256u64 << 20,
            "auto_converge": { "initial_pct": 20, "increment_pct": 10 }
        } }),
        preset => presets
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == preset)
            .unwrap_or_else(|| panic!("no preset {preset}"))["settings"]
            .clone(),
    };
    settings["bandwidth_mib_s"] = json!(LINK_MIB_S);
    settings
}

/// Polls until the migration ends or `until`; with `apply_advice`, applies the forecast's
/// first one-click advice once it says *will not converge*.
async fn follow(admin: &Client, id: &str, until: Instant, apply_advice: bool) -> Run {
    let mut run = Run {
        detail: Value::Null,
        etas: Vec::new(),
        applied: None,
    };
    // TRACE=1: every change of verdict, range or reason, to explain a miss.
    let trace = std::env::var_os("TRACE").is_some();
    let mut last_trace: Option<String> = None;
    loop {
        let detail = admin.get(&format!("/api/migrations/{id}")).await;
        let f = &detail["migration"]["forecast"];
        let range = f["eta_min_s"].as_u64().zip(f["eta_max_s"].as_u64());
        run.etas.push((now_ms(), range));
        if trace {
            let pass = detail["migration"]["last_sample"]["iteration"].as_u64();
            let seen = format!(
                "pass {}: {} {:?} — {}",
                pass.unwrap_or(0),
                f["verdict"].as_str().unwrap_or("-"),
                range,
                f["reason"].as_str().unwrap_or("")
            );
            if last_trace.as_ref() != Some(&seen) {
                println!("        trace: {seen}");
                last_trace = Some(seen);
            }
        }
        if apply_advice && run.applied.is_none() && f["verdict"] == "will_not_converge" {
            let advice = f["advice"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["lever"].is_object());
            if let Some(advice) = advice {
                let lever = &advice["lever"];
                let body = match lever["lever"].as_str().unwrap_or_default() {
                    "downtime_limit" => json!({ "lever": "downtime_limit", "ms": lever["value"] }),
                    "bandwidth" => json!({ "lever": "bandwidth", "mib_s": lever["value"] }),
                    _ => json!({ "lever": "post_copy" }),
                };
                let (status, _) = admin
                    .send(
                        reqwest::Method::PATCH,
                        &format!("/api/migrations/{id}"),
                        Some(body),
                    )
                    .await;
                if status.is_success() {
                    run.applied = Some(advice["action"].to_string());
                } else {
                    // It ended (or moved on) between the reading and the click.
                    println!(
                        "        advice not applied ({status}): {}",
                        advice["action"]
                    );
                }
            }
        }
        let done = ended(&detail);
        run.detail = detail;
        // A completed migration is followed until its final statistics arrive too.
        if done
            && (state(&run.detail) != "completed"
                || !run.detail["migration"]["final_stats"].is_null())
        {
            return run;
        }
        if Instant::now() >= until {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `retry-idle`: once the first attempt has said *will not converge* for 10 s, aborts it,
/// waits for a background measurement (taken after the abort) to find the guest quiet, and
/// starts again with the same settings; follows the last attempt.
async fn retry_when_quiet(
    admin: &Client,
    id: &str,
    uuid: &str,
    settings: Value,
    until: Instant,
) -> Run {
    let mut hopeless_since: Option<Instant> = None;
    let mut run = follow(admin, id, Instant::now(), false).await;
    while Instant::now() < until {
        if state(&run.detail) != "running" {
            return run;
        }
        if run.detail["migration"]["forecast"]["verdict"] == "will_not_converge" {
            let since = *hopeless_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(10) {
                break;
            }
        } else {
            hopeless_since = None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        run = follow(admin, id, Instant::now(), false).await;
    }
    if state(&run.detail) != "running" {
        return run;
    }
    let _ = admin
        .post(&format!("/api/migrations/{id}/abort"), json!({}))
        .await;
    let aborted_at = now_ms();
    while Instant::now() < until {
        let vms = admin.get("/api/vms").await;
        let quiet = vms.as_array().into_iter().flatten().any(|vm| {
            vm["uuid"] == uuid
                && vm["migration_id"].is_null()
                && vm["dirty_rate"]["at_ms"]
                    .as_i64()
                    .is_some_and(|at| at > aborted_at)
                && vm["dirty_rate"]["bytes_per_s"]
                    .as_u64()
                    .is_some_and(|r| r < QUIET_BYTES_S)
        });
        if quiet {
            println!(
                "        retry-idle: quiet after {} ms; starting again",
                now_ms() - aborted_at
            );
            let again = start_with(admin, uuid, "b", settings).await;
            return follow(admin, &again, until, false).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    follow(admin, id, Instant::now(), false).await
}
