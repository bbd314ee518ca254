//! The adaptive preset: capabilities chosen at start from what is known of the guest, and
//! mid-flight decisions taken from the forecast, each with the numbers that justified it.

use converge_api::{
    Forecast, LeverChange, LeverKind, Migration, MigrationSettings, TimeoutAction, Verdict,
};

use super::{Decision, PolicyState};

const MIB: u64 = 1 << 20;
/// A guest dirtying under a quarter of the link converges by itself: no capability needed.
const QUIET_SHARE: u64 = 4;
/// Without a known link, below this dirty rate a guest is taken as quiet, bytes/s.
const QUIET_WITHOUT_LINK: u64 = 16 * MIB;
/// The xbzrle cache a quiet guest starts with (in case of a small hot set), at least.
const SMALL_XBZRLE_CACHE: u64 = 64 * MIB;
/// xbzrle that found fewer pages than this in its cache last time is not tried again.
const USEFUL_XBZRLE_HIT_PCT: u32 = 20;
/// QEMU's downtime limit when none is set, ms.
const DEFAULT_DOWNTIME_MS: u64 = 300;
/// Passes of "will not converge" after which an adaptive migration without a lever left
/// aborts rather than waiting for its deadline.
const GIVE_UP_AFTER_PASSES: u32 = 2;

/// What is known of a guest before its migration starts.
#[derive(Debug, Clone, Copy)]
pub struct StartFacts<'a> {
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Dirty rate measured just before the start, bytes/s (none when not measured).
    pub dirty_rate: Option<u64>,
    /// The guest's earlier migrations, newest first.
    pub history: &'a [Migration],
}

/// The settings an adaptive migration starts with, and why, in words.
pub fn adapt_start(
    settings: &MigrationSettings,
    facts: &StartFacts<'_>,
) -> (MigrationSettings, String) {
    let mut out = settings.clone();
    let link = settings.bandwidth_mib_s.map(|b| b * MIB);
    let measured = match (facts.dirty_rate, link) {
        (Some(rate), Some(link)) => format!(
            "dirty rate measured {} MiB/s against a {} MiB/s link",
            rate / MIB,
            link / MIB
        ),
        (Some(rate), None) => format!("dirty rate measured {} MiB/s", rate / MIB),
        (None, _) => "the dirty rate could not be measured".into(),
    };
    let quiet = match (facts.dirty_rate, link) {
        (Some(rate), Some(link)) => rate.saturating_mul(QUIET_SHARE) <= link,
        (Some(rate), None) => rate <= QUIET_WITHOUT_LINK,
        (None, _) => false,
    };
    // xbzrle pays off when the guest rewrites pages it wrote before; its last migration
    // tells whether it did.
    let last_hit = facts
        .history
        .iter()
        .find_map(|m| m.last_sample.as_ref()?.xbzrle?.hit_rate_pct());
    // A hot set reads as about its size per second (see below); one of twice the reading
    // that still fits in the pause at the link is no risk: pre-copy switches over with it
    // in the last pass. (A reading of 0 — no sampled page changed — always fits.)
    let downtime_ms = settings
        .downtime_steps
        .map(|s| s.start_ms)
        .or(settings.downtime_limit_ms)
        .unwrap_or(DEFAULT_DOWNTIME_MS);
    let set_fits = match (facts.dirty_rate, link) {
        (Some(0), _) => true,
        (Some(rate), Some(link)) => {
            rate.saturating_mul(2) <= link.saturating_mul(downtime_ms) / 1000
        }
        _ => false,
    };
    if quiet {
        // What a quiet reading cannot rule out is a small hot set rewritten faster than any
        // pass: libvirt's sampling counts distinct pages over its second, so the lab's
        // 16 MiB set rewritten at 200 MiB/s read 8 MiB/s, and pre-copy alone stalled on
        // it. A small cache sends such pages as deltas; it is held only while the
        // migration runs, and a guest that is really quiet resends almost nothing. A
        // reading too low for a set that would not fit needs no such insurance: the
        // migration then starts exactly as `nothing` would (the preset matrix's 2 GiB idle
        // guest: 5.0–5.2 s either way, within the runs' spread).
        if !set_fits
            && last_hit.is_none_or(|hit| hit >= USEFUL_XBZRLE_HIT_PCT)
            && let Some(rate) = facts.dirty_rate
        {
            let cache = rate.saturating_mul(4).next_power_of_two().clamp(
                SMALL_XBZRLE_CACHE,
                (facts.memory_bytes / 2).max(SMALL_XBZRLE_CACHE),
            );
            out.capabilities.xbzrle_cache_bytes = Some(cache);
            return (
                out,
                format!(
                    "{measured}: pre-copy alone should converge; a {} MiB xbzrle cache in case it keeps rewriting a small hot set",
                    cache / MIB
                ),
            );
        }
        return (
            out,
            format!("{measured}: pre-copy alone converges, no capability needed"),
        );
    }
    let mut chosen = Vec::new();
    match last_hit {
        Some(hit) if hit < USEFUL_XBZRLE_HIT_PCT => {
            chosen.push(format!(
                "no xbzrle (last time it found only {hit} % of pages in its cache)"
            ));
        }
        _ => {
            let cache = (facts.memory_bytes / 2)
                .next_power_of_two()
                .clamp(64 * MIB, facts.memory_bytes.max(64 * MIB));
            out.capabilities.xbzrle_cache_bytes = Some(cache);
            chosen.push(format!("xbzrle with a {} MiB cache", cache / MIB));
        }
    }
    // Post-copy is the way out when pre-copy cannot finish; it costs nothing until used.
    out.capabilities.postcopy = true;
    chosen.push("post-copy allowed".into());
    (out, format!("{measured}: {}", chosen.join(", ")))
}

/// What the adaptive policy does at a reading, given the forecast. Each lever is tried
/// once; switching to post-copy or aborting ends the policy's work.
pub fn adapt(
    settings: &MigrationSettings,
    state: &mut PolicyState,
    forecast: Option<&Forecast>,
    iteration: u32,
) -> Vec<Decision> {
    if !settings.adaptive || state.fired {
        return Vec::new();
    }
    let Some(f) = forecast.filter(|f| f.verdict == Verdict::WillNotConverge) else {
        state.hopeless_since = None;
        return Vec::new();
    };
    let since = *state.hopeless_since.get_or_insert(iteration);
    let downtime = f.advice.iter().find_map(|a| {
        a.lever
            .filter(|l| l.lever == LeverKind::DowntimeLimit)
            .and_then(|l| l.value)
    });
    if let Some(ms) = downtime
        && !state.raised_downtime
    {
        state.raised_downtime = true;
        return vec![Decision::Lever {
            change: LeverChange::DowntimeLimit { ms },
            reason: format!(
                "forecast: {}. A downtime limit of {ms} ms alone lets it switch over",
                f.reason
            ),
        }];
    }
    if settings.capabilities.postcopy {
        state.fired = true;
        return vec![Decision::Deadline {
            action: TimeoutAction::PostCopy,
            reason: format!(
                "forecast: {}. Pre-copy will not finish: switching to post-copy",
                f.reason
            ),
        }];
    }
    if iteration >= since + GIVE_UP_AFTER_PASSES {
        state.fired = true;
        return vec![Decision::Deadline {
            action: TimeoutAction::Abort,
            reason: format!(
                "forecast: {}. No lever is left (post-copy was not allowed): aborting now rather than at the deadline; retry when the guest is idle",
                f.reason
            ),
        }];
    }
    Vec::new()
}
