//! What a migration is started with: capabilities (fixed at start), levers' first values,
//! and the deadline policy — plus the linter that explains, before start, why a
//! combination will be refused. The server enforces the same rules with the same code.

use serde::{Deserialize, Serialize};

/// Capabilities: fixed when the migration starts (QEMU refuses changes mid-flight).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// XBZRLE: send only the changed bytes of re-dirtied pages, using a cache of pages
    /// already sent, this many bytes large. Best for guests that rewrite the same memory.
    pub xbzrle_cache_bytes: Option<u64>,
    /// Auto-converge: throttle the guest's vCPUs while the migration does not converge.
    pub auto_converge: Option<AutoConverge>,
    /// Allow switching to post-copy mid-flight.
    pub postcopy: bool,
    /// Migrate over this many parallel connections (multifd).
    pub parallel_connections: Option<u32>,
}

/// Auto-converge's throttle steps (QEMU's `cpu-throttle-initial` / `-increment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct AutoConverge {
    /// First throttle, percent of vCPU time taken from the guest (QEMU default 20).
    pub initial_pct: u32,
    /// Added at each further step, percent (QEMU default 10).
    pub increment_pct: u32,
}

/// What the deadline does when it fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Abort: the VM keeps running on the source.
    #[default]
    Abort,
    /// Switch to post-copy (needs post-copy allowed at start): always completes, the
    /// guest slows on page faults until the last page arrives.
    PostCopy,
    /// Pause the guest so the last pass completes; it resumes on the destination.
    Pause,
}

wire_names!(TimeoutAction {
    Abort => "abort",
    PostCopy => "post_copy",
    Pause => "pause",
});

/// When policy gives up on pre-copy converging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields, default)]
pub struct Deadline {
    /// Completion timeout, seconds per GiB of guest memory (Nova: 800).
    pub completion_s_per_gib: Option<u64>,
    /// Cap on the completion timeout, seconds: keep it below the lifetime of whatever
    /// waits on the migration (e.g. a 1-hour identity token: 3400).
    pub completion_max_s: Option<u64>,
    /// Act when the smallest dirty set at a pass boundary has not improved for this
    /// many seconds (raw samples saw-tooth within passes and would trigger falsely).
    pub stall_s: Option<u64>,
    /// What to do when either fires.
    pub action: TimeoutAction,
}

/// How the downtime limit grows while the migration does not converge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// In equal steps from the first to the last value.
    Linear,
    /// Doubling at each step, up to the last value.
    Double,
}

wire_names!(Growth {
    Linear => "linear",
    Double => "double",
});

/// A downtime stepping schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct DowntimeSteps {
    /// Limit at start, ms.
    pub start_ms: u64,
    /// Highest limit, ms.
    pub max_ms: u64,
    /// Linear or doubling.
    pub growth: Growth,
    /// Number of steps from start to max (linear growth).
    pub steps: Option<u32>,
    /// Step every this many seconds.
    pub every_s: Option<u64>,
    /// Step every this many seconds per GiB of guest memory (Nova's
    /// `live_migration_downtime_delay`).
    pub every_s_per_gib: Option<u64>,
    /// Step every this many pre-copy passes, instead of by time.
    pub every_iterations: Option<u32>,
}

/// Everything a migration starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields, default)]
pub struct MigrationSettings {
    /// Capabilities (fixed at start).
    pub capabilities: Capabilities,
    /// Bandwidth limit, MiB/s; `None`: unlimited.
    pub bandwidth_mib_s: Option<u64>,
    /// Downtime limit at start, ms (overridden by `downtime_steps.start_ms`); `None`:
    /// QEMU's default (300 ms).
    pub downtime_limit_ms: Option<u64>,
    /// Downtime stepping, if any.
    pub downtime_steps: Option<DowntimeSteps>,
    /// Deadline policy.
    pub deadline: Deadline,
    /// Let the forecast act: choose capabilities at start from a dirty-rate measurement
    /// and the VM's past migrations, raise the downtime limit when that alone suffices,
    /// switch to post-copy when pre-copy will not finish, abort early with the reason.
    pub adaptive: bool,
}

/// A named set of settings an operator starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Short name, e.g. `nova`.
    pub name: String,
    /// What it reproduces and when to use it.
    pub description: String,
    /// Its settings.
    pub settings: MigrationSettings,
}

/// How bad a lint finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The server refuses to start with this.
    Refused,
    /// Allowed, but know the cost.
    Warning,
}

wire_names!(Severity {
    Refused => "refused",
    Warning => "warning",
});

/// One finding of [`lint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Finding {
    /// Refused or a warning.
    pub severity: Severity,
    /// Dotted path of the setting, e.g. `capabilities.parallel_connections`.
    pub field: String,
    /// Why, in a sentence.
    pub message: String,
}

/// Largest bandwidth limit, MiB/s (a 400 Gbit/s link is ~48,000 MiB/s).
pub const MAX_BANDWIDTH_MIB_S: u64 = 100_000;
/// Largest downtime limit, ms: beyond this a "live" migration is a long pause.
pub const MAX_DOWNTIME_MS: u64 = 60_000;
/// Parallel connections QEMU accepts (`multifd-channels`).
pub const MAX_PARALLEL: u32 = 255;
/// Smallest xbzrle cache, bytes: QEMU wants at least one page; less than a MiB is useless.
pub const MIN_XBZRLE_CACHE: u64 = 1 << 20;

/// Checks settings for a guest of `vm_memory_bytes`, before start. Refused findings
/// name what QEMU or the server would refuse and why; warnings name a cost.
pub fn lint(settings: &MigrationSettings, vm_memory_bytes: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut refuse = |field: &str, message: String| {
        out.push(Finding {
            severity: Severity::Refused,
            field: field.to_owned(),
            message,
        })
    };
    let caps = &settings.capabilities;
    if let Some(cache) = caps.xbzrle_cache_bytes {
        if cache < MIN_XBZRLE_CACHE {
            refuse(
                "capabilities.xbzrle_cache_bytes",
                "the xbzrle cache must be at least 1 MiB".into(),
            );
        } else if vm_memory_bytes > 0 && cache > vm_memory_bytes {
            refuse(
                "capabilities.xbzrle_cache_bytes",
                format!(
                    "an xbzrle cache of {} MiB is larger than the guest's {} MiB of memory; it can never fill and takes host memory for nothing",
                    cache >> 20,
                    vm_memory_bytes >> 20
                ),
            );
        }
    }
    if let Some(n) = caps.parallel_connections {
        if !(2..=MAX_PARALLEL).contains(&n) {
            refuse(
                "capabilities.parallel_connections",
                format!("parallel connections must be between 2 and {MAX_PARALLEL}"),
            );
        }
        if caps.xbzrle_cache_bytes.is_some() {
            refuse(
                "capabilities.parallel_connections",
                "QEMU refuses xbzrle together with parallel connections (multifd); choose one"
                    .into(),
            );
        }
        if caps.postcopy {
            refuse(
                "capabilities.postcopy",
                "post-copy with parallel connections needs QEMU 10.1 or newer; the hosts run QEMU 10.0".into(),
            );
        }
    }
    if let Some(ac) = caps.auto_converge {
        for (field, value) in [
            ("capabilities.auto_converge.initial_pct", ac.initial_pct),
            ("capabilities.auto_converge.increment_pct", ac.increment_pct),
        ] {
            if !(1..=99).contains(&value) {
                refuse(
                    field,
                    "auto-converge throttle steps are 1 to 99 percent".into(),
                );
            }
        }
    }
    if let Some(bw) = settings.bandwidth_mib_s
        && !(1..=MAX_BANDWIDTH_MIB_S).contains(&bw)
    {
        refuse(
            "bandwidth_mib_s",
            format!(
                "bandwidth must be between 1 and {MAX_BANDWIDTH_MIB_S} MiB/s (or unset for no limit)"
            ),
        );
    }
    if let Some(d) = settings.downtime_limit_ms
        && !(1..=MAX_DOWNTIME_MS).contains(&d)
    {
        refuse(
            "downtime_limit_ms",
            format!("the downtime limit must be between 1 and {MAX_DOWNTIME_MS} ms"),
        );
    }
    if let Some(steps) = settings.downtime_steps {
        lint_steps(&steps, &mut refuse);
    }
    let deadline = &settings.deadline;
    if deadline.action == TimeoutAction::PostCopy && !caps.postcopy {
        refuse(
            "deadline.action",
            "the deadline can switch to post-copy only if post-copy is allowed at start".into(),
        );
    }
    for (field, value, min, max) in [
        (
            "deadline.completion_s_per_gib",
            deadline.completion_s_per_gib,
            1,
            100_000,
        ),
        (
            "deadline.completion_max_s",
            deadline.completion_max_s,
            10,
            7 * 86_400,
        ),
        ("deadline.stall_s", deadline.stall_s, 5, 7 * 86_400),
    ] {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            refuse(field, format!("must be between {min} and {max} seconds"));
        }
    }
    if caps.auto_converge.is_some() {
        out.push(warning(
            "capabilities.auto_converge",
            "auto-converge slows the guest's vCPUs (up to 99 %) until the migration converges",
        ));
    }
    if caps.postcopy {
        out.push(warning(
            "capabilities.postcopy",
            "after a switch to post-copy the guest runs on the destination with pages on both hosts; a network failure then loses it",
        ));
    }
    if deadline.completion_s_per_gib.is_none()
        && deadline.completion_max_s.is_none()
        && deadline.stall_s.is_none()
    {
        out.push(warning(
            "deadline",
            "no deadline: a migration that never converges runs until someone aborts it",
        ));
    }
    out
}

fn lint_steps(steps: &DowntimeSteps, refuse: &mut impl FnMut(&str, String)) {
    if !(1..=MAX_DOWNTIME_MS).contains(&steps.start_ms)
        || !(1..=MAX_DOWNTIME_MS).contains(&steps.max_ms)
    {
        refuse(
            "downtime_steps",
            format!("downtime steps must stay between 1 and {MAX_DOWNTIME_MS} ms"),
        );
    }
    if steps.start_ms > steps.max_ms {
        refuse(
            "downtime_steps.max_ms",
            "the last step must not be below the first".into(),
        );
    }
    let triggers = [
        steps.every_s,
        steps.every_s_per_gib,
        steps.every_iterations.map(u64::from),
    ];
    match triggers.iter().flatten().collect::<Vec<_>>().as_slice() {
        [0] => refuse("downtime_steps", "a step interval must be above 0".into()),
        [_] => {}
        _ => refuse(
            "downtime_steps",
            "step every_s seconds, every_s_per_gib seconds per GiB, or every_iterations passes (exactly one)"
                .into(),
        ),
    }
    if steps.growth == Growth::Linear && !matches!(steps.steps, Some(1..=1000)) {
        refuse(
            "downtime_steps.steps",
            "linear growth needs 1 to 1000 steps".into(),
        );
    }
}

fn warning(field: &str, message: &str) -> Finding {
    Finding {
        severity: Severity::Warning,
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// The first refused finding's message, if any: what the server answers with a 422.
pub fn refusal(findings: &[Finding]) -> Option<String> {
    findings
        .iter()
        .find(|f| f.severity == Severity::Refused)
        .map(|f| format!("{}: {}", f.field, f.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 512 << 20;

    fn refused(settings: &MigrationSettings) -> Vec<String> {
        lint(settings, GUEST)
            .into_iter()
            .filter(|f| f.severity == Severity::Refused)
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn defaults_are_allowed_with_a_warning_about_no_deadline() {
        let findings = lint(&MigrationSettings::default(), GUEST);
        assert!(refusal(&findings).is_none());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].field, "deadline");
    }

    #[test]
    fn parallel_excludes_xbzrle_and_postcopy() {
        let mut s = MigrationSettings::default();
        s.capabilities.parallel_connections = Some(4);
        s.capabilities.xbzrle_cache_bytes = Some(64 << 20);
        s.capabilities.postcopy = true;
        assert_eq!(
            refused(&s),
            vec!["capabilities.parallel_connections", "capabilities.postcopy"]
        );
    }

    #[test]
    fn a_cache_larger_than_the_guest_is_refused() {
        let mut s = MigrationSettings::default();
        s.capabilities.xbzrle_cache_bytes = Some(GUEST + 1);
        let msg = refusal(&lint(&s, GUEST)).unwrap();
        assert!(msg.contains("larger than the guest's 512 MiB"), "{msg}");
        s.capabilities.xbzrle_cache_bytes = Some(GUEST);
        assert!(refused(&s).is_empty());
    }

    #[test]
    fn a_post_copy_deadline_needs_post_copy() {
        let mut s = MigrationSettings::default();
        s.deadline.action = TimeoutAction::PostCopy;
        assert_eq!(refused(&s), vec!["deadline.action"]);
        s.capabilities.postcopy = true;
        assert!(refused(&s).is_empty());
    }

    #[test]
    fn absurd_values_are_refused() {
        let mut s = MigrationSettings {
            bandwidth_mib_s: Some(0),
            downtime_limit_ms: Some(MAX_DOWNTIME_MS + 1),
            ..MigrationSettings::default()
        };
        s.capabilities.auto_converge = Some(AutoConverge {
            initial_pct: 0,
            increment_pct: 100,
        });
        s.deadline.stall_s = Some(1);
        assert_eq!(
            refused(&s),
            vec![
                "capabilities.auto_converge.initial_pct",
                "capabilities.auto_converge.increment_pct",
                "bandwidth_mib_s",
                "downtime_limit_ms",
                "deadline.stall_s",
            ]
        );
    }

    #[test]
    fn downtime_steps_need_one_trigger_and_an_order() {
        let mut steps = DowntimeSteps {
            start_ms: 500,
            max_ms: 100,
            growth: Growth::Linear,
            steps: None,
            every_s: Some(10),
            every_s_per_gib: None,
            every_iterations: Some(2),
        };
        let s = |steps| MigrationSettings {
            downtime_steps: Some(steps),
            ..MigrationSettings::default()
        };
        assert_eq!(
            refused(&s(steps)),
            vec![
                "downtime_steps.max_ms",
                "downtime_steps",
                "downtime_steps.steps"
            ]
        );
        steps.max_ms = 1000;
        steps.every_iterations = None;
        steps.steps = Some(10);
        assert!(refused(&s(steps)).is_empty());
    }
}
