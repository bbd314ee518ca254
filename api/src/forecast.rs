//! What the server expects a migration to do next, and what would fix it.

use serde::{Deserialize, Serialize};

use crate::migration::LeverChange;

/// Where a migration is heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Each pass leaves less to send; it will switch over.
    Converging,
    /// The dirty set has stopped shrinking, but something (the throttle) may still help.
    Stalled,
    /// The guest dirties memory as fast as the link carries it: pre-copy alone never ends.
    WillNotConverge,
    /// What remains fits in the downtime limit: switchover is imminent.
    SwitchingOver,
    /// Running on the destination, fetching the last pages.
    PostCopy,
    /// Done.
    Completed,
    /// Failed; the VM runs on the source.
    Failed,
    /// Aborted; the VM runs on the source.
    Aborted,
}

wire_names!(Verdict {
    Converging => "converging",
    Stalled => "stalled",
    WillNotConverge => "will_not_converge",
    SwitchingOver => "switching_over",
    PostCopy => "post_copy",
    Completed => "completed",
    Failed => "failed",
    Aborted => "aborted",
});

/// How a figure was found: what the forecast knows, and how well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Basis {
    /// Measured: libvirt's dirty-rate measurement of the guest before it migrated, or
    /// dirty sets that follow the pass lengths (the guest dirtied in proportion to time).
    Measured,
    /// A lower bound: the dirty set was the same every pass (the guest rewrote all it
    /// touches within each pass), so the guest dirties at least this, perhaps far more.
    AtLeast,
    /// An upper bound: QEMU switches over only once the pause fits the downtime limit, so
    /// a converging migration pauses the guest for at most the limit.
    AtMost,
    /// Not known yet.
    #[default]
    Unknown,
}

wire_names!(Basis {
    Measured => "measured",
    AtLeast => "at_least",
    AtMost => "at_most",
    Unknown => "unknown",
});

/// Which lever an advice moves (a flat form the dashboard can decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeverKind {
    /// The downtime limit, ms.
    DowntimeLimit,
    /// The bandwidth limit, MiB/s.
    Bandwidth,
    /// The xbzrle cache, bytes.
    XbzrleCache,
    /// Switch to post-copy.
    PostCopy,
}

wire_names!(LeverKind {
    DowntimeLimit => "downtime_limit",
    Bandwidth => "bandwidth",
    XbzrleCache => "xbzrle_cache",
    PostCopy => "post_copy",
});

/// A lever and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct LeverMove {
    /// Which lever.
    pub lever: LeverKind,
    /// Its new value (none for post-copy).
    pub value: Option<u64>,
}

impl From<LeverChange> for LeverMove {
    fn from(change: LeverChange) -> Self {
        let (lever, value) = match change {
            LeverChange::DowntimeLimit { ms } => (LeverKind::DowntimeLimit, Some(ms)),
            LeverChange::Bandwidth { mib_s } => (LeverKind::Bandwidth, Some(mib_s)),
            LeverChange::XbzrleCache { bytes } => (LeverKind::XbzrleCache, Some(bytes)),
            LeverChange::PostCopy => (LeverKind::PostCopy, None),
        };
        Self { lever, value }
    }
}

impl LeverMove {
    /// The `PATCH` body that carries it out.
    pub fn change(self) -> Option<LeverChange> {
        Some(match (self.lever, self.value) {
            (LeverKind::DowntimeLimit, Some(ms)) => LeverChange::DowntimeLimit { ms },
            (LeverKind::Bandwidth, Some(mib_s)) => LeverChange::Bandwidth { mib_s },
            (LeverKind::XbzrleCache, Some(bytes)) => LeverChange::XbzrleCache { bytes },
            (LeverKind::PostCopy, _) => LeverChange::PostCopy,
            _ => return None,
        })
    }
}

/// One way to make a migration finish, with its expected effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Advice {
    /// The lever to move now, when the fix is a mid-flight lever (one click).
    pub lever: Option<LeverMove>,
    /// What to do, in plain words.
    pub action: String,
    /// What should happen then, with the numbers.
    pub effect: String,
}

/// An advice as it was shown on a migration, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct AdviceRecord {
    /// What it said to do.
    pub action: String,
    /// The lever it would move, when it was one click.
    pub lever: Option<LeverMove>,
    /// When it was first shown (unix ms).
    pub first_at_ms: i64,
    /// When it was last shown (unix ms).
    pub last_at_ms: i64,
    /// When that lever was moved to the advised value, and by whom.
    pub applied_at_ms: Option<i64>,
    /// Who moved it (a user, or `policy`).
    pub applied_by: Option<String>,
    /// What happened after it was applied ("completed 2 s later").
    pub outcome: Option<String>,
}

/// The forecast of a running migration.
///
/// The dashboard (the only wasm32 build) reads the verdict, the reason, the ETA and the
/// advice; the figures behind them are for the API, the metrics and the policy, and are
/// left out of its build, where every decoded field costs bytes of a fixed budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Forecast {
    /// Where it is heading.
    pub verdict: Verdict,
    /// Why, with the numbers ("guest dirties 96 MiB/s, link carries 32 MiB/s").
    pub reason: String,
    /// Transfer rate the estimate uses, bytes/s.
    #[cfg(not(target_arch = "wasm32"))]
    pub transfer_rate_bytes_per_s: u64,
    /// The guest's dirty rate the forecast uses, bytes/s: measured before the migration,
    /// or estimated from pass boundaries (a lower bound when the dirty set refills within
    /// every pass). `dirty_rate_basis` says which.
    #[cfg(not(target_arch = "wasm32"))]
    pub dirty_rate_bytes_per_s: Option<u64>,
    /// How the dirty rate is known. (Absent from records written before it existed; the
    /// dashboard's miniserde has no `default`, and the server always sends it.)
    #[cfg_attr(not(feature = "mini"), serde(default))]
    #[cfg(not(target_arch = "wasm32"))]
    pub dirty_rate_basis: Basis,
    /// The memory the guest keeps rewriting (largest dirty set after the first pass).
    #[cfg(not(target_arch = "wasm32"))]
    pub working_set_bytes: Option<u64>,
    /// How the working set is known: a pass's readings and QEMU's estimate only ever see
    /// part of a dirty set, so at least this. (Absent from older records, as above.)
    #[cfg_attr(not(feature = "mini"), serde(default))]
    #[cfg(not(target_arch = "wasm32"))]
    pub working_set_basis: Basis,
    /// What may remain for QEMU to switch over within the downtime limit, bytes.
    #[cfg(not(target_arch = "wasm32"))]
    pub switchover_bytes: Option<u64>,
    /// Soonest the migration should end, seconds from now.
    pub eta_min_s: Option<u64>,
    /// Latest it should end, seconds from now (none when it will not end by itself).
    pub eta_max_s: Option<u64>,
    /// The pause to expect at switchover, ms.
    #[cfg(not(target_arch = "wasm32"))]
    pub expected_pause_ms: Option<u64>,
    /// How the pause is known: QEMU's own estimate (measured), at most the downtime limit
    /// (converging), or at least the dirty set over the link (when it does not fit).
    /// (Absent from older records, as above.)
    #[cfg_attr(not(feature = "mini"), serde(default))]
    #[cfg(not(target_arch = "wasm32"))]
    pub expected_pause_basis: Basis,
    /// Share of pages xbzrle found in its cache, percent.
    #[cfg(not(target_arch = "wasm32"))]
    pub xbzrle_hit_pct: Option<u32>,
    /// What would fix it, best first.
    pub advice: Vec<Advice>,
}

impl Forecast {
    /// A forecast with its verdict and reason and no figures yet (each basis unknown).
    pub fn new(verdict: Verdict, reason: impl Into<String>) -> Self {
        Self {
            verdict,
            reason: reason.into(),
            #[cfg(not(target_arch = "wasm32"))]
            transfer_rate_bytes_per_s: 0,
            #[cfg(not(target_arch = "wasm32"))]
            dirty_rate_bytes_per_s: None,
            #[cfg(not(target_arch = "wasm32"))]
            dirty_rate_basis: Basis::Unknown,
            #[cfg(not(target_arch = "wasm32"))]
            working_set_bytes: None,
            #[cfg(not(target_arch = "wasm32"))]
            working_set_basis: Basis::Unknown,
            #[cfg(not(target_arch = "wasm32"))]
            switchover_bytes: None,
            eta_min_s: None,
            eta_max_s: None,
            #[cfg(not(target_arch = "wasm32"))]
            expected_pause_ms: None,
            #[cfg(not(target_arch = "wasm32"))]
            expected_pause_basis: Basis::Unknown,
            #[cfg(not(target_arch = "wasm32"))]
            xbzrle_hit_pct: None,
            advice: Vec::new(),
        }
    }
}
