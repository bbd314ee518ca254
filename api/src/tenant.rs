//! What a tenant sees of its own VMs: plain language, no hosts, no controls, nothing of
//! anyone else's.

use serde::{Deserialize, Serialize};

use crate::fleet::VmState;
use crate::migration::MigrationState;

/// One move of a tenant's VM, in words a customer understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct TenantMove {
    /// The migration's id (to tell moves apart).
    pub id: String,
    /// Where it stands.
    pub state: MigrationState,
    /// One line: "Being moved for maintenance", "Moved", "Move cancelled".
    pub headline: String,
    /// The details in a sentence: progress, the pause to expect, the slowdown now; or, once
    /// over, the actual pause and slowdown.
    pub detail: String,
    /// Whether it is on track, in words ("on track, about 1–2 minutes left").
    pub outlook: Option<String>,
    /// Share moved so far, percent (while it runs).
    pub progress_pct: Option<u32>,
    /// When it started (unix ms).
    pub started_at_ms: i64,
    /// When it ended (unix ms).
    pub ended_at_ms: Option<i64>,
    /// The pause the VM had or is expected to have, ms.
    pub pause_ms: Option<u64>,
    /// How much the VM's CPU is (or was at most) slowed to let the move finish, percent.
    pub slowdown_pct: Option<u32>,
}

/// A tenant's VM and its current or latest move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct TenantVm {
    /// The VM's UUID.
    pub uuid: String,
    /// Its name.
    pub name: String,
    /// The project it belongs to.
    pub project: String,
    /// Running, paused, shut off…
    pub state: VmState,
    /// The move under way, or the latest one.
    pub latest_move: Option<TenantMove>,
    /// A maintenance move to come, in words ("Scheduled to be moved for maintenance,
    /// expected within about 10 minutes."), while it waits for its turn.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub scheduled: Option<String>,
}

/// Answer of `GET /api/tenant/vms/{uuid}`: the VM and every recorded move, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct TenantVmDetail {
    /// The VM now.
    pub vm: TenantVm,
    /// Its moves, newest first.
    pub moves: Vec<TenantMove>,
}
