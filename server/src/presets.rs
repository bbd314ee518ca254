//! Presets are data: the built-in ones reproduce well-known behaviours, and operators add
//! or replace presets in the configuration (`[[presets]]`).

use converge_api::{
    AutoConverge, Capabilities, Deadline, DowntimeSteps, Growth, MigrationSettings, Preset,
    TimeoutAction,
};

/// The preset used when a start request names none: the adaptive one.
pub const DEFAULT_PRESET: &str = "converge";

/// The built-in presets.
pub fn builtin() -> Vec<Preset> {
    vec![
        Preset {
            name: DEFAULT_PRESET.into(),
            description: "Adaptive: measures the guest's dirty rate and reads its past \
                migrations to choose capabilities (none for a quiet guest; xbzrle and \
                post-copy allowed for a busy one), then acts on the forecast — raises the \
                downtime limit when that alone suffices, switches to post-copy when pre-copy \
                will not finish, aborts early with the reason when nothing else can help. \
                Deadline as the safe preset."
                .into(),
            settings: MigrationSettings {
                downtime_limit_ms: Some(300),
                adaptive: true,
                deadline: Deadline {
                    completion_s_per_gib: Some(800),
                    completion_max_s: Some(3400),
                    stall_s: Some(600),
                    action: TimeoutAction::Abort,
                },
                ..MigrationSettings::default()
            },
        },
        Preset {
            name: "converge-safe".into(),
            description: "Converge's safe default: the guest is never slowed unless you ask; \
                the completion timeout is 800 s per GiB capped at 3400 s (below a 1-hour \
                identity token), and a migration whose dirty set has not shrunk for 10 minutes \
                is aborted so it can be retried when the guest is idle."
                .into(),
            settings: MigrationSettings {
                downtime_limit_ms: Some(300),
                deadline: Deadline {
                    completion_s_per_gib: Some(800),
                    completion_max_s: Some(3400),
                    stall_s: Some(600),
                    action: TimeoutAction::Abort,
                },
                ..MigrationSettings::default()
            },
        },
        Preset {
            name: "nova".into(),
            description: "OpenStack Nova's defaults: no xbzrle, no auto-converge, downtime from \
                50 to 500 ms in 10 steps every 75 s per GiB, abort after 800 s per GiB (no cap, \
                so a 16 GiB VM waits 12,800 s)."
                .into(),
            settings: MigrationSettings {
                downtime_steps: Some(DowntimeSteps {
                    start_ms: 50,
                    max_ms: 500,
                    growth: Growth::Linear,
                    steps: Some(10),
                    every_s: None,
                    every_s_per_gib: Some(75),
                    every_iterations: None,
                }),
                deadline: Deadline {
                    completion_s_per_gib: Some(800),
                    action: TimeoutAction::Abort,
                    ..Deadline::default()
                },
                ..MigrationSettings::default()
            },
        },
        Preset {
            name: "ovirt-minimal-downtime".into(),
            description: "oVirt's \"minimal downtime\" policy: auto-converge on, downtime raised \
                from 100 to 500 ms pass by pass, abort after 64 s per GiB."
                .into(),
            settings: MigrationSettings {
                capabilities: Capabilities {
                    auto_converge: Some(AutoConverge {
                        initial_pct: 20,
                        increment_pct: 10,
                    }),
                    ..Capabilities::default()
                },
                downtime_steps: Some(DowntimeSteps {
                    start_ms: 100,
                    max_ms: 500,
                    growth: Growth::Linear,
                    steps: Some(4),
                    every_s: None,
                    every_s_per_gib: None,
                    every_iterations: Some(1),
                }),
                deadline: Deadline {
                    completion_s_per_gib: Some(64),
                    action: TimeoutAction::Abort,
                    ..Deadline::default()
                },
                ..MigrationSettings::default()
            },
        },
        Preset {
            name: "proxmox".into(),
            description: "Proxmox VE-like: xbzrle (64 MiB cache) and auto-converge on, downtime \
                doubling pass by pass from 100 ms up to 2 s, no deadline."
                .into(),
            settings: MigrationSettings {
                capabilities: Capabilities {
                    xbzrle_cache_bytes: Some(64 << 20),
                    auto_converge: Some(AutoConverge {
                        initial_pct: 20,
                        increment_pct: 10,
                    }),
                    ..Capabilities::default()
                },
                downtime_steps: Some(DowntimeSteps {
                    start_ms: 100,
                    max_ms: 2000,
                    growth: Growth::Double,
                    steps: None,
                    every_s: None,
                    every_s_per_gib: None,
                    every_iterations: Some(1),
                }),
                ..MigrationSettings::default()
            },
        },
    ]
}

/// Built-in presets with the configured ones added; a configured preset with a built-in's
/// name replaces it.
pub fn all(configured: &[Preset]) -> Vec<Preset> {
    let mut presets = builtin();
    for preset in configured {
        match presets.iter_mut().find(|p| p.name == preset.name) {
            Some(slot) => *slot = preset.clone(),
            None => presets.push(preset.clone()),
        }
    }
    presets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_preset_passes_the_linter() {
        for preset in builtin() {
            let findings = converge_api::lint(&preset.settings, 512 << 20);
            assert_eq!(converge_api::refusal(&findings), None, "{}", preset.name);
        }
    }

    #[test]
    fn a_configured_preset_replaces_a_builtin_of_the_same_name() {
        let mine = Preset {
            name: "nova".into(),
            description: "ours".into(),
            settings: MigrationSettings::default(),
        };
        let all = all(&[mine]);
        assert_eq!(all.len(), builtin().len());
        assert_eq!(
            all.iter().find(|p| p.name == "nova").unwrap().description,
            "ours"
        );
    }
}
