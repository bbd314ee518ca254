//! Migrations, their samples and final statistics.

use serde::{Deserialize, Serialize};

use crate::settings::{MigrationSettings, TimeoutAction};

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// Requested; libvirt has not reported a job yet.
    Starting,
    /// Pre-copy passes are running.
    Running,
    /// Switched to post-copy: the guest runs on the destination, pages follow on demand.
    PostCopy,
    /// The VM runs on the destination.
    Completed,
    /// libvirt or QEMU gave up; the VM keeps running on the source.
    Failed,
    /// Aborted on request; the VM keeps running on the source.
    Aborted,
    /// Ended while Converge was not watching, and the outcome could not be read back.
    Unknown,
}

wire_names!(MigrationState {
    Starting => "starting",
    Running => "running",
    PostCopy => "post_copy",
    Completed => "completed",
    Failed => "failed",
    Aborted => "aborted",
    Unknown => "unknown",
});

impl MigrationState {
    /// Whether the migration is still in flight.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            MigrationState::Starting | MigrationState::Running | MigrationState::PostCopy
        )
    }
}

/// xbzrle (delta compression of re-dirtied pages) counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct XbzrleStats {
    /// Size of the cache of previously sent pages.
    pub cache_bytes: u64,
    /// Bytes sent compressed.
    pub bytes: u64,
    /// Pages sent compressed.
    pub pages: u64,
    /// Pages not found in the cache (sent whole).
    pub cache_misses: u64,
    /// Pages whose delta overflowed (sent whole).
    pub overflow: u64,
}

impl XbzrleStats {
    /// Share of the pages looked up in the cache that were found there, whole percent;
    /// `None` before any page was looked up. Counters are libvirt's word: any values,
    /// even absurd ones, give an answer in 0–100 and never overflow.
    pub fn hit_rate_pct(&self) -> Option<u32> {
        let looked_up = u128::from(self.pages) + u128::from(self.cache_misses);
        (100 * u128::from(self.pages))
            .checked_div(looked_up)
            .and_then(|pct| u32::try_from(pct).ok())
    }
}

/// One reading of a migration's job statistics (`virsh domjobinfo`), with derived values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Sample {
    /// When it was read (unix ms).
    pub at_ms: i64,
    /// Time since the migration started, as libvirt counts it.
    pub elapsed_ms: u64,
    /// All data to send (memory and disks), bytes.
    pub data_total_bytes: u64,
    /// Data sent so far, bytes; exceeds the total when pages are re-sent.
    pub data_processed_bytes: u64,
    /// Data still to send in this pass, bytes.
    pub data_remaining_bytes: u64,
    /// Guest memory to send, bytes.
    pub mem_total_bytes: u64,
    /// Memory sent so far, bytes.
    pub mem_processed_bytes: u64,
    /// Memory still to send in this pass, bytes.
    pub mem_remaining_bytes: u64,
    /// Transfer rate, bytes/s (libvirt's `memory_bps`).
    pub transfer_rate_bytes_per_s: u64,
    /// Dirty rate as libvirt reports it, pages/s. It saturates near the transfer rate per
    /// pass; it is not the guest's real write rate.
    pub dirty_rate_pages_per_s: u64,
    /// The same in bytes/s (pages/s × page size).
    pub dirty_rate_bytes_per_s: u64,
    /// Guest page size, bytes.
    pub page_size_bytes: u64,
    /// Pre-copy pass number (1 = the first full copy).
    pub iteration: u32,
    /// Pages sent as "all the same byte" (mostly zero pages).
    pub constant_pages: u64,
    /// Pages sent whole.
    pub normal_pages: u64,
    /// Bytes of pages sent whole.
    pub normal_bytes: u64,
    /// QEMU's estimate of the pause if it switched over now, ms.
    pub expected_downtime_ms: Option<u64>,
    /// Time spent setting up before the first byte, ms.
    pub setup_time_ms: Option<u64>,
    /// Auto-converge's current vCPU throttle, percent.
    pub throttle_pct: Option<u32>,
    /// xbzrle counters, when xbzrle is on.
    pub xbzrle: Option<XbzrleStats>,
    /// Pages the destination requested during post-copy.
    pub postcopy_requests: Option<u64>,
    /// Disk data to copy (storage migration), bytes.
    pub disk_total_bytes: Option<u64>,
    /// Disk data copied, bytes.
    pub disk_processed_bytes: Option<u64>,
}

/// Remaining memory when a pre-copy pass began: the guest's dirty set from the previous
/// pass. Unlike raw samples, these do not saw-tooth within a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct IterationMark {
    /// The pass that began (2 = the first re-send).
    pub iteration: u32,
    /// When (unix ms).
    pub at_ms: i64,
    /// Time since the migration started, ms.
    pub elapsed_ms: u64,
    /// Memory left to send at that moment, bytes.
    pub mem_remaining_bytes: u64,
}

/// Final statistics of a finished migration, from libvirt's job-completed event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct FinalStats {
    /// How long the guest was paused at switchover, ms.
    pub downtime_ms: Option<u64>,
    /// Wall time of the whole migration, ms.
    pub total_time_ms: Option<u64>,
    /// Bytes sent in total.
    pub data_sent_bytes: Option<u64>,
    /// Guest memory size, bytes.
    pub mem_total_bytes: Option<u64>,
    /// Setup time, ms.
    pub setup_time_ms: Option<u64>,
    /// Pre-copy passes.
    pub iterations: Option<u32>,
    /// Pages the destination asked for after a switch to post-copy (the guest touched
    /// them before they arrived).
    pub postcopy_requests: Option<u64>,
}

/// One migration attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Migration {
    /// Converge's id for this attempt.
    pub id: String,
    /// The VM's UUID.
    pub vm_uuid: String,
    /// The VM's name.
    pub vm_name: String,
    /// Host it leaves.
    pub source: String,
    /// Host it goes to, when known.
    pub destination: Option<String>,
    /// Where it stands.
    pub state: MigrationState,
    /// When it started (unix ms).
    pub started_at_ms: i64,
    /// When it ended (unix ms).
    pub ended_at_ms: Option<i64>,
    /// Who started it; `None` when Converge found it already running.
    pub started_by: Option<String>,
    /// The preset it was started from.
    pub preset: Option<String>,
    /// The settings the start request changed from the preset's, as dotted paths
    /// (`deadline.stall_s`); empty when it kept the preset as it is, `None` when Converge
    /// did not start it.
    pub settings_changed: Option<Vec<String>>,
    /// What it was started with; `None` when Converge found it already running.
    pub settings: Option<MigrationSettings>,
    /// The levers' current values, as libvirt reports them.
    pub levers: Levers,
    /// The next deadline the policy will act on, while running.
    pub deadline: Option<PendingDeadline>,
    /// What operators and the policy did to it, oldest first.
    pub actions: Vec<ActionRecord>,
    /// Where it is heading and what would fix it (while it runs).
    pub forecast: Option<crate::forecast::Forecast>,
    /// Every advice the forecast gave, oldest first, and what came of those applied.
    /// (Absent from records written before it existed; see `Forecast::dirty_rate_basis`.)
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub advice_log: Vec<crate::forecast::AdviceRecord>,
    /// Share of memory sent, 0–100, from remaining memory at pass boundaries: it never
    /// runs backwards, and stalls when the guest dirties as fast as the link carries.
    pub progress_pct: Option<f64>,
    /// The latest sample.
    pub last_sample: Option<Sample>,
    /// The most auto-converge slowed the guest, percent.
    pub max_throttle_pct: Option<u32>,
    /// Final statistics once completed.
    pub final_stats: Option<FinalStats>,
    /// Why it failed or was aborted.
    pub error: Option<String>,
}

impl Migration {
    /// A migration that has just begun: no samples, no outcome yet.
    pub fn begun(
        id: String,
        vm_uuid: String,
        vm_name: String,
        source: String,
        state: MigrationState,
        started_at_ms: i64,
    ) -> Self {
        Self {
            id,
            vm_uuid,
            vm_name,
            source,
            destination: None,
            state,
            started_at_ms,
            ended_at_ms: None,
            started_by: None,
            preset: None,
            settings_changed: None,
            settings: None,
            levers: Levers::default(),
            deadline: None,
            actions: Vec::new(),
            forecast: None,
            advice_log: Vec::new(),
            progress_pct: None,
            last_sample: None,
            max_throttle_pct: None,
            final_stats: None,
            error: None,
        }
    }
}

/// Mid-flight levers, as libvirt reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Levers {
    /// The downtime limit, ms.
    pub downtime_limit_ms: Option<u64>,
    /// The bandwidth limit, MiB/s (libvirt reports a huge number for "unlimited").
    pub bandwidth_mib_s: Option<u64>,
    /// The xbzrle cache size, bytes.
    pub xbzrle_cache_bytes: Option<u64>,
}

/// The deadline the policy acts on next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct PendingDeadline {
    /// When it fires (unix ms).
    pub at_ms: i64,
    /// Which: `completion` or `stall`.
    pub kind: String,
    /// What happens then.
    pub action: TimeoutAction,
}

/// Something done to a migration after it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct ActionRecord {
    /// When (unix ms).
    pub at_ms: i64,
    /// The user, or `policy`.
    pub actor: String,
    /// What, in words ("downtime limit 100 → 250 ms").
    pub what: String,
    /// Why, in words, with the numbers that justified it.
    pub reason: String,
    /// `ok`, or what went wrong.
    pub result: String,
}

/// Body of `PATCH /api/migrations/{id}`: one lever to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lever", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeverChange {
    /// Set the downtime limit, ms.
    DowntimeLimit {
        /// New limit.
        ms: u64,
    },
    /// Set the bandwidth limit, MiB/s.
    Bandwidth {
        /// New limit.
        mib_s: u64,
    },
    /// Resize the xbzrle cache (only with xbzrle on), bytes.
    XbzrleCache {
        /// New size.
        bytes: u64,
    },
    /// Switch to post-copy now (only if post-copy was allowed at start).
    PostCopy,
}

/// `{"lever": "downtime_limit", "ms": 500}` for the dashboard, which encodes with
/// miniserde (its derive does not do tagged enums).
#[cfg(feature = "mini")]
impl miniserde::Serialize for LeverChange {
    fn begin(&self) -> miniserde::ser::Fragment<'_> {
        use std::borrow::Cow;

        struct Fields {
            lever: &'static str,
            value: Option<(&'static str, u64)>,
            at: u8,
        }
        impl miniserde::ser::Map for Fields {
            fn next(&mut self) -> Option<(Cow<'_, str>, &dyn miniserde::Serialize)> {
                self.at += 1;
                match self.at {
                    1 => Some((Cow::Borrowed("lever"), &self.lever)),
                    2 => self.value.as_ref().map(|(key, value)| {
                        (Cow::Borrowed(*key), value as &dyn miniserde::Serialize)
                    }),
                    _ => None,
                }
            }
        }
        let (lever, value) = match *self {
            LeverChange::DowntimeLimit { ms } => ("downtime_limit", Some(("ms", ms))),
            LeverChange::Bandwidth { mib_s } => ("bandwidth", Some(("mib_s", mib_s))),
            LeverChange::XbzrleCache { bytes } => ("xbzrle_cache", Some(("bytes", bytes))),
            LeverChange::PostCopy => ("post_copy", None),
        };
        miniserde::ser::Fragment::Map(Box::new(Fields {
            lever,
            value,
            at: 0,
        }))
    }
}

/// Answer of `PATCH /api/migrations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct LeverResult {
    /// The value libvirt reports after the change (none for post-copy).
    pub read_back: Option<u64>,
    /// The migration as it stands.
    pub migration: Migration,
}

/// A migration with its history, for the detail view and charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct MigrationDetail {
    /// The migration.
    pub migration: Migration,
    /// Samples, oldest first (bounded; older ones are thinned).
    pub samples: Vec<Sample>,
    /// Pass boundaries, oldest first.
    pub iterations: Vec<IterationMark>,
    /// Every field of the latest job-stats reading, by libvirt's name, as text.
    pub raw_job_stats: Vec<RawField>,
}

/// One field of a job-statistics reading, as libvirt named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct RawField {
    /// libvirt's name, e.g. `memory_dirty_rate`.
    pub name: String,
    /// The value as text.
    pub value: String,
}

/// Body of `POST /api/migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct StartMigration {
    /// UUID of the VM to move.
    pub vm_uuid: String,
    /// Name of the destination host.
    pub destination: String,
    /// The preset to start from (the server's default when unset).
    pub preset: Option<String>,
    /// Changes to the preset's settings: a JSON merge patch, so a field not given keeps
    /// the preset's value (its deadline included) and `null` resets one. The dashboard
    /// sends the whole settings object, which is a patch too.
    pub settings: Option<MigrationSettings>,
}

#[cfg(all(test, feature = "mini"))]
mod mini_tests {
    use super::*;

    #[test]
    fn levers_encode_as_serde_reads_them() {
        for change in [
            LeverChange::DowntimeLimit { ms: 500 },
            LeverChange::Bandwidth { mib_s: 48 },
            LeverChange::XbzrleCache { bytes: 1 << 26 },
            LeverChange::PostCopy,
        ] {
            let text = miniserde::json::to_string(&change);
            let back: LeverChange = serde_json::from_str(&text).unwrap();
            assert_eq!(back, change, "{text}");
        }
    }

    #[test]
    fn a_migration_from_the_server_decodes_in_the_dashboard() {
        let mut m = Migration::begun(
            "m1".into(),
            "u".into(),
            "web".into(),
            "a".into(),
            MigrationState::PostCopy,
            7,
        );
        m.settings = Some(crate::MigrationSettings::default());
        m.progress_pct = Some(63.5);
        m.last_sample = Some(Sample {
            iteration: 4,
            throttle_pct: Some(20),
            ..Sample::default()
        });
        let text = serde_json::to_string(&m).unwrap();
        let back: Migration = miniserde::json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn settings_from_the_dashboard_decode_on_the_server() {
        let mut s = crate::MigrationSettings::default();
        s.capabilities.postcopy = true;
        s.deadline.action = crate::TimeoutAction::PostCopy;
        s.deadline.stall_s = Some(30);
        let text = miniserde::json::to_string(&StartMigration {
            vm_uuid: "u".into(),
            destination: "b".into(),
            preset: Some("nova".into()),
            settings: Some(s.clone()),
        });
        let back: StartMigration = serde_json::from_str(&text).unwrap();
        assert_eq!(back.settings, Some(s));
    }
}
