//! Host drains: emptying hosts for maintenance with a plan that knows which VMs will
//! converge, and the drain's progress as it runs.

use serde::{Deserialize, Serialize};

use crate::fleet::DirtyRate;

/// How many migrations a drain runs at once, and how fast each may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields, default)]
pub struct DrainLimits {
    /// Migrations out of one host at once.
    pub per_source: u32,
    /// Migrations into one host at once.
    pub per_destination: u32,
    /// Migrations at once in all.
    pub total: u32,
    /// Bandwidth limit of each migration, MiB/s; `None`: unlimited (the link's speed).
    pub bandwidth_mib_s: Option<u64>,
    /// What all migrations between one source and one destination may use together,
    /// MiB/s; `None`: no budget per link.
    pub link_budget_mib_s: Option<u64>,
}

impl Default for DrainLimits {
    fn default() -> Self {
        Self {
            per_source: 2,
            per_destination: 2,
            total: 4,
            bandwidth_mib_s: None,
            link_budget_mib_s: None,
        }
    }
}

/// What a drain may do to a migration that does not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields, default)]
pub struct DrainPolicy {
    /// Apply the forecast's one-click advice (a downtime limit, a bandwidth, post-copy
    /// when allowed) to a migration that will not converge.
    pub apply_advice: bool,
    /// Allow post-copy: the guest runs on the destination while its last pages follow.
    /// A failure of either host or the network during post-copy loses the guest.
    pub allow_post_copy: bool,
    /// Attempts per VM within the window (the first and the retries).
    pub max_tries: u32,
    /// Longest one attempt may run before it is aborted to be retried later, s;
    /// `None`: the rest of the window.
    pub attempt_max_s: Option<u64>,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            apply_advice: true,
            allow_post_copy: true,
            max_tries: 3,
            attempt_max_s: None,
        }
    }
}

/// A drain as an operator asks for it (`POST /api/drains`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// The hosts to empty.
    pub hosts: Vec<String>,
    /// Where VMs may go; `None` or empty: every other connected host that is not draining.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub destinations: Option<Vec<String>>,
    /// The drain must be over within this many minutes of its start.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub window_minutes: Option<u64>,
    /// Concurrency and bandwidth.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub limits: Option<DrainLimits>,
    /// What it may do to a migration that does not finish.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub policy: Option<DrainPolicy>,
    /// The preset every migration starts from; `None`: the server's default.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub preset: Option<String>,
    /// Destinations chosen by the operator, by VM (the rest are placed by Converge).
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub placements: Option<Vec<Placement>>,
    /// VMs to move first, in this order (the rest follow in Converge's order).
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub order: Option<Vec<String>>,
    /// Only plan: answer the plan, start nothing.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub dry_run: bool,
}

/// An operator's choice of destination for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The VM's UUID.
    pub vm_uuid: String,
    /// Where it goes.
    pub destination: String,
}

/// What the plan expects of one VM's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// Pre-copy finishes as is: the guest dirties well below what the link carries.
    Converges,
    /// Pre-copy finishes only with xbzrle: the guest keeps rewriting the same memory.
    NeedsXbzrle,
    /// Pre-copy will not finish: it moves by switching to post-copy.
    NeedsPostCopy,
    /// It dirties memory faster than the link carries and nothing the drain may do
    /// helps: it will be tried, aborted before it wastes the window, and retried when
    /// it is quieter.
    LikelyToStall,
    /// Not measured yet: the adaptive preset measures it before it starts.
    Unknown,
}

wire_names!(Outlook {
    Converges => "converges",
    NeedsXbzrle => "needs_xbzrle",
    NeedsPostCopy => "needs_post_copy",
    LikelyToStall => "likely_to_stall",
    Unknown => "unknown",
});

/// Where one VM of a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Waiting for its turn.
    Pending,
    /// Its migration runs.
    Migrating,
    /// An attempt did not finish; it is tried again when the guest is quieter.
    Waiting,
    /// It runs on its destination.
    Moved,
    /// It stays on its host; `reason` says why.
    Left,
    /// An operator took it out of the drain; it stays on its host.
    Skipped,
}

wire_names!(ItemState {
    Pending => "pending",
    Migrating => "migrating",
    Waiting => "waiting",
    Moved => "moved",
    Left => "left",
    Skipped => "skipped",
});

impl ItemState {
    /// Whether the VM's part in the drain is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Moved | ItemState::Left | ItemState::Skipped
        )
    }
}

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Moving VMs.
    Running,
    /// No new migrations start; those running finish.
    Paused,
    /// Cancelled: running migrations are being aborted.
    Cancelling,
    /// Over: every VM moved or left with its reason.
    Done,
    /// Cancelled: VMs stay where they are, finished moves stay.
    Cancelled,
}

wire_names!(DrainState {
    Running => "running",
    Paused => "paused",
    Cancelling => "cancelling",
    Done => "done",
    Cancelled => "cancelled",
});

impl DrainState {
    /// Whether the drain still holds its hosts (nothing moves into them).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DrainState::Running | DrainState::Paused | DrainState::Cancelling
        )
    }
}

/// One VM of a drain: the plan for it and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct DrainItem {
    /// The VM's UUID.
    pub vm_uuid: String,
    /// Its name.
    pub vm_name: String,
    /// The host it leaves.
    pub source: String,
    /// Where it goes (none when no destination has room).
    pub destination: Option<String>,
    /// Its memory, bytes.
    pub memory_bytes: u64,
    /// Its dirty rate as last measured, when it was.
    pub dirty_rate: Option<DirtyRate>,
    /// What the plan expects.
    pub outlook: Outlook,
    /// Why, in words with the numbers.
    pub outlook_reason: String,
    /// Predicted length of its move, s (none when it is not expected to finish).
    pub predicted_s: Option<u64>,
    /// When the plan expects it to start, s after the drain's start.
    #[cfg(not(target_arch = "wasm32"))]
    pub predicted_start_s: Option<u64>,
    /// Where it stands.
    pub state: ItemState,
    /// Attempts so far.
    pub attempts: u32,
    /// The migration of its current or latest attempt.
    pub migration_id: Option<String>,
    /// Every attempt's migration, oldest first.
    pub migration_ids: Vec<String>,
    /// Why it waits, was left or skipped; what needs attention.
    pub reason: Option<String>,
    /// When it reached its final state (unix ms).
    #[cfg(not(target_arch = "wasm32"))]
    pub ended_at_ms: Option<i64>,
    /// When its move is expected to start, while it waits (unix ms, to 10 s).
    pub expected_at_ms: Option<i64>,
    /// The drain's own bookkeeping of the current attempt (not for display).
    #[cfg(not(target_arch = "wasm32"))]
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub attempt: AttemptState,
}

/// What the drain keeps of an item's current attempt, to act on it once and to retry it
/// at the right time. Survives a restart with the drain.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct AttemptState {
    /// When the current attempt started (unix ms).
    pub started_at_ms: Option<i64>,
    /// Since when its forecast has said it will not converge (unix ms).
    pub stuck_since_ms: Option<i64>,
    /// The forecast's advice was applied in this attempt.
    pub advice_applied: bool,
    /// An abort was asked for in this attempt.
    pub abort_sent: bool,
    /// Why the drain aborted this attempt (the words for the VM's reason after).
    pub abort_reason: Option<String>,
    /// An operator skipped the VM while it migrated: once the attempt ends it is skipped.
    pub skip_requested: bool,
    /// While waiting: retry once a dirty-rate reading after `waiting_since_ms` is below
    /// this, bytes/s.
    pub retry_below_bytes_per_s: Option<u64>,
    /// While waiting: since when (unix ms).
    pub waiting_since_ms: Option<i64>,
}

/// A destination's room as the plan counted it (not in the dashboard's build: it shows
/// the plan's warnings instead).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct HostRoom {
    /// The host.
    pub host: String,
    /// Memory libvirt reports free, bytes (none when not known).
    pub free_bytes: Option<u64>,
    /// Kept free for the host itself, bytes (`[[hosts]] reserve_mib`).
    pub reserve_bytes: u64,
    /// The most guest memory it may hold, bytes (`[[hosts]] max_guest_memory_mib`).
    pub guest_limit_bytes: Option<u64>,
    /// Guest memory on it now, bytes.
    pub guests_bytes: u64,
    /// What the plan puts on it, bytes.
    pub planned_bytes: u64,
    /// What is left for more, bytes.
    pub room_bytes: u64,
}

/// A drain: its plan and, once started, its progress.
///
/// The dashboard (the only wasm32 build) reads what its pages show; the rest is for the API
/// and the server, and left out of its build, where every decoded field costs bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Drain {
    /// Converge's id (`d` and hex); empty for a dry run.
    pub id: String,
    /// The hosts it empties.
    pub hosts: Vec<String>,
    /// Where VMs may go.
    pub destinations: Vec<String>,
    /// Where it stands.
    pub state: DrainState,
    /// Who started it.
    pub created_by: String,
    /// When it started (unix ms).
    pub created_at_ms: i64,
    /// When it ended (unix ms).
    pub ended_at_ms: Option<i64>,
    /// When it must be over (unix ms).
    pub deadline_ms: i64,
    /// The preset its migrations start from.
    #[cfg(not(target_arch = "wasm32"))]
    pub preset: String,
    /// Its limits.
    #[cfg(not(target_arch = "wasm32"))]
    pub limits: DrainLimits,
    /// Its policy.
    #[cfg(not(target_arch = "wasm32"))]
    pub policy: DrainPolicy,
    /// Every VM, in the order they go.
    pub items: Vec<DrainItem>,
    /// How long the whole drain was predicted to take, s (none when some VM is not
    /// expected to finish).
    pub predicted_total_s: Option<u64>,
    /// When it should be over, while it runs (unix ms, to 10 s); none when some VM is
    /// not expected to finish.
    pub eta_at_ms: Option<i64>,
    /// The plan's warnings: a destination without room, a window too short.
    pub warnings: Vec<String>,
    /// The destinations' room as the plan counted it.
    #[cfg(not(target_arch = "wasm32"))]
    pub rooms: Vec<HostRoom>,
    /// The link speed the plan assumed per migration, MiB/s, and how it was known.
    pub link_mib_s: u64,
    /// Where `link_mib_s` came from ("the drain's bandwidth limit", "past migrations
    /// from a", "assumed: no figure known").
    pub link_basis: String,
}

impl Drain {
    /// VMs that have moved.
    pub fn moved(&self) -> usize {
        self.count(ItemState::Moved)
    }

    /// Share of its VMs moved, percent (all of none: 100).
    pub fn moved_pct(&self) -> usize {
        (self.moved() * 100)
            .checked_div(self.items.len())
            .unwrap_or(100)
    }

    /// VMs in `state`.
    pub fn count(&self, state: ItemState) -> usize {
        self.items.iter().filter(|i| i.state == state).count()
    }

    /// VMs that need an operator's attention: waiting to be retried, or left behind.
    pub fn needing_attention(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.state, ItemState::Waiting | ItemState::Left))
            .count()
    }
}

/// `POST /api/drains/{id}/vms/{uuid}`: what to do with one VM of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemAction {
    /// Take it out of the drain (a running migration of it is aborted).
    Skip,
    /// Move it to the front of the queue.
    Forward,
}

wire_names!(ItemAction {
    Skip => "skip",
    Forward => "forward",
});

/// Body of `POST /api/drains/{id}/vms/{uuid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct ItemCommand {
    /// What to do.
    pub action: ItemAction,
}

/// `event: drain` — a drain changed (to the fleet's viewers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct DrainUpdate {
    /// The drain as it stands now.
    pub drain: Drain,
}
