//! What a lever will do, in words, from the migration's latest figures — shown before the
//! lever is applied.

use converge_api::{LeverChange, Migration};

use crate::format;

/// Bytes in a MiB: lever values typed in MiB.
const MIB: u64 = 1 << 20;

/// The dirty set the latest pass left (its value at the latest known pass boundary),
/// bytes; before any, what the latest sample has still to send.
pub fn dirty_set(m: &Migration, boundaries: &[converge_api::IterationMark]) -> Option<u64> {
    boundaries
        .iter()
        .filter(|b| b.iteration >= 2 && b.mem_remaining_bytes > 0)
        .map(|b| b.mem_remaining_bytes)
        .next_back()
        .or_else(|| m.last_sample.as_ref().map(|s| s.mem_remaining_bytes))
}

/// One sentence on the likely effect of `change`.
pub fn hint(change: LeverChange, m: &Migration, dirty: Option<u64>) -> String {
    let rate = m
        .last_sample
        .as_ref()
        .map_or(0, |s| s.transfer_rate_bytes_per_s);
    match change {
        LeverChange::DowntimeLimit { ms } => {
            let fits = rate.saturating_mul(ms) / 1000;
            let tail = match dirty {
                Some(d) if d <= fits => format!(
                    "the last pass left {}, so it would switch over at the next pass and pause the guest up to {}",
                    format::bytes(d),
                    format::duration_ms(ms)
                ),
                Some(d) => format!(
                    "the last pass left {}: not enough yet to switch over",
                    format::bytes(d)
                ),
                None => "no pass has ended yet".into(),
            };
            format!(
                "QEMU switches over once what remains fits in {} at {}: up to {}; {tail}.",
                format::duration_ms(ms),
                format::rate(rate),
                format::bytes(fits)
            )
        }
        LeverChange::Bandwidth { mib_s } => {
            let bytes_per_s = mib_s.saturating_mul(MIB);
            match dirty.and_then(|d| {
                d.saturating_mul(1000)
                    .checked_div(bytes_per_s)
                    .map(|ms| (d, ms))
            }) {
                Some((d, ms)) => format!(
                    "At {} a pass over the dirty set of {} takes about {}; the guest's writes compete with the migration for the link.",
                    format::rate(bytes_per_s),
                    format::bytes(d),
                    format::duration_ms(ms)
                ),
                None => format!("Caps the migration at {}.", format::rate(bytes_per_s)),
            }
        }
        LeverChange::XbzrleCache { bytes } => {
            let hits = m
                .last_sample
                .as_ref()
                .and_then(|s| s.xbzrle)
                .map(|x| x.hit_rate_pct().unwrap_or(0));
            format!(
                "A {} cache sends re-dirtied pages as small deltas{}; make it half as big again as the dirty set ({}). Resizing empties it and did not raise the hit rate in the lab; starting again with a larger cache did.",
                format::bytes(bytes),
                hits.map(|h| format!(" (hits now {h} %)"))
                    .unwrap_or_default(),
                dirty
                    .map(format::bytes)
                    .unwrap_or_else(|| "not known yet".into())
            )
        }
        LeverChange::PostCopy => {
            let remaining = m.last_sample.as_ref().map_or(0, |s| s.mem_remaining_bytes);
            let eta = remaining
                .saturating_mul(1000)
                .checked_div(rate)
                .map(|ms| format!(", about {} at the current rate", format::duration_ms(ms)))
                .unwrap_or_default();
            format!(
                "The guest runs on {} at once and fetches the {} still missing over the network{eta}; it slows on page faults meanwhile, and a network failure then loses it.",
                m.destination.as_deref().unwrap_or("the destination"),
                format::bytes(remaining)
            )
        }
    }
}

#[cfg(test)]
mod tests;
