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

/// `base` with `patch` applied (a JSON merge patch, RFC 7386): a field the patch names
/// replaces the base's, `null` resets it (to none, or to its default), a field it does
/// not name keeps the base's value. Returns the settings and the fields whose value the
/// patch changed, as dotted paths (`deadline.stall_s`); a whole settings object is a
/// patch too, and then only the fields that differ are listed.
pub fn apply_patch(
    base: &MigrationSettings,
    patch: &serde_json::Value,
) -> Result<(MigrationSettings, Vec<String>), String> {
    if !patch.is_object() {
        return Err("settings must be an object of the fields to change".into());
    }
    let before = serde_json::to_value(base).map_err(|err| err.to_string())?;
    let mut merged = before.clone();
    merge(&mut merged, patch);
    let settings: MigrationSettings = serde_path_to_error::deserialize(merged).map_err(|err| {
        let field = err.path().to_string();
        let why = err.into_inner();
        if field == "." {
            format!("settings: {why}")
        } else {
            format!("settings.{field}: {why}")
        }
    })?;
    let after = serde_json::to_value(&settings).map_err(|err| err.to_string())?;
    let mut changed = Vec::new();
    differences(&before, &after, "", &mut changed);
    Ok((settings, changed))
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
        *target = patch.clone();
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else if value.is_object() && target.get(key).is_some_and(serde_json::Value::is_object) {
            if let Some(inner) = target.get_mut(key) {
                merge(inner, value);
            }
        } else {
            target.insert(key.clone(), value.clone());
        }
    }
}

fn differences(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let null = serde_json::Value::Null;
            differences(
                a.get(key).unwrap_or(&null),
                b.get(key).unwrap_or(&null),
                &path,
                out,
            );
        }
    } else if a != b {
        out.push(at.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn converge() -> MigrationSettings {
        builtin().remove(0).settings
    }

    #[test]
    fn a_partial_patch_keeps_the_presets_deadline() {
        let (settings, changed) =
            apply_patch(&converge(), &json!({ "bandwidth_mib_s": 32 })).unwrap();
        assert_eq!(settings.bandwidth_mib_s, Some(32));
        assert!(settings.adaptive);
        assert_eq!(settings.deadline, converge().deadline);
        assert_eq!(changed, ["bandwidth_mib_s"]);
    }

    #[test]
    fn nested_fields_merge_and_null_resets() {
        let patch = json!({
            "deadline": { "stall_s": 30, "completion_max_s": null },
            "capabilities": { "postcopy": true },
        });
        let (settings, changed) = apply_patch(&converge(), &patch).unwrap();
        assert_eq!(settings.deadline.stall_s, Some(30));
        assert_eq!(settings.deadline.completion_max_s, None);
        assert_eq!(settings.deadline.completion_s_per_gib, Some(800), "kept");
        assert!(settings.capabilities.postcopy);
        assert_eq!(
            changed,
            [
                "capabilities.postcopy",
                "deadline.completion_max_s",
                "deadline.stall_s"
            ]
        );
    }

    #[test]
    fn a_whole_settings_object_lists_only_what_differs() {
        let mut mine = converge();
        mine.downtime_limit_ms = Some(500);
        let whole = serde_json::to_value(&mine).unwrap();
        let (settings, changed) = apply_patch(&converge(), &whole).unwrap();
        assert_eq!(settings, mine);
        assert_eq!(changed, ["downtime_limit_ms"]);
    }

    #[test]
    fn a_patch_that_is_not_settings_is_refused_with_the_field() {
        let typo = apply_patch(&converge(), &json!({ "bandwith_mib_s": 32 })).unwrap_err();
        assert!(typo.contains("bandwith_mib_s"), "{typo}");
        let wrong = apply_patch(&converge(), &json!({ "adaptive": "yes" })).unwrap_err();
        assert!(wrong.starts_with("settings.adaptive: "), "{wrong}");
        let deep = apply_patch(&converge(), &json!({ "deadline": { "stall_s": -1 } }));
        assert!(deep.unwrap_err().starts_with("settings.deadline.stall_s: "));
        assert!(apply_patch(&converge(), &json!([1])).is_err());
    }

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
