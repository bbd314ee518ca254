//! What tenants see: their projects' VMs and the moves of those VMs, in plain language
//! (the projection; `http::tenant` serves it).
//!
//! Everything here is built from scratch for tenants rather than filtered from the fleet's
//! types, so nothing an operator sees (hosts, who started a move, the forecast's numbers,
//! other projects) can reach a tenant by a field someone adds later.

use converge_api::{
    LiveEvent, Migration, MigrationState, TenantMove, TenantVm, Verdict, Vm, VmState,
};

use super::FleetState;

/// The VM as a host lists it now or, for a moment around a switchover when it is on
/// neither host's list, as its latest migration last saw it. `None` for a VM of no
/// project that no host lists.
pub(crate) fn vm_or_last_seen(fleet: &FleetState, uuid: &str) -> Option<Vm> {
    if let Some(vm) = fleet.vm(uuid) {
        return Some(vm);
    }
    let project = fleet.project_of(uuid)?;
    let m = fleet.latest_migration_of(uuid)?;
    Some(Vm {
        uuid: m.vm_uuid.clone(),
        name: m.vm_name.clone(),
        host: String::new(),
        state: if m.state.is_active() || m.state == MigrationState::Completed {
            VmState::Running
        } else {
            VmState::Other
        },
        memory_bytes: 0,
        vcpus: 0,
        migration_id: None,
        project: Some(project.to_owned()),
        nova_managed: false,
        dirty_rate: None,
    })
}

pub(crate) fn in_scope(project: Option<&str>, projects: &[String]) -> bool {
    project.is_some_and(|p| projects.iter().any(|mine| mine == p))
}

/// The tenant views a fleet event implies: `(project, view)` pairs, one per VM of a
/// project that the fleet event is about, each to go out as a `tenant_vm` event.
pub(crate) fn events_for(fleet: &FleetState, event: &LiveEvent) -> Vec<(String, TenantVm)> {
    let view = |vm: &Vm, latest: Option<&Migration>| {
        let project = vm.project.clone()?;
        let scheduled = fleet.scheduled_notice(&vm.uuid);
        Some((project, tenant_vm(vm, latest, scheduled)?))
    };
    match event {
        LiveEvent::Migration(update) => {
            let m = &update.migration;
            vm_or_last_seen(fleet, &m.vm_uuid)
                .and_then(|vm| view(&vm, Some(m)))
                .into_iter()
                .collect()
        }
        LiveEvent::Vms(update) => update
            .vms
            .iter()
            .filter_map(|vm| view(vm, fleet.latest_migration_of(&vm.uuid)))
            .collect(),
        LiveEvent::Host(_) | LiveEvent::Resync(_) | LiveEvent::Tenant(_) | LiveEvent::Drain(_) => {
            Vec::new()
        }
    }
}

/// A VM as its tenant sees it (`None` for a VM of no project); `scheduled` is a
/// maintenance notice for a move to come, shown while no move is under way.
pub(crate) fn tenant_vm(
    vm: &Vm,
    latest: Option<&Migration>,
    scheduled: Option<&str>,
) -> Option<TenantVm> {
    let moving = latest.is_some_and(|m| m.state.is_active());
    Some(TenantVm {
        uuid: vm.uuid.clone(),
        name: vm.name.clone(),
        project: vm.project.clone()?,
        state: vm.state,
        latest_move: latest.map(tenant_move),
        scheduled: scheduled.filter(|_| !moving).map(str::to_owned),
    })
}

/// One move in a customer's words: no hosts, no operator names, no jargon.
pub(crate) fn tenant_move(m: &Migration) -> TenantMove {
    let sample = m.last_sample.as_ref();
    let throttle_now = sample.and_then(|s| s.throttle_pct).filter(|t| *t > 0);
    let limit_ms = m.levers.downtime_limit_ms;
    let progress = m.progress_pct.map(|p| p.clamp(0.0, 100.0).round() as u32);
    let (headline, detail, outlook, pause_ms, slowdown_pct) = match m.state {
        MigrationState::Starting | MigrationState::Running => {
            let mut parts = Vec::new();
            if let Some(p) = progress {
                parts.push(format!("{p} % moved"));
            }
            let pause = m
                .forecast
                .as_ref()
                .filter(|f| {
                    matches!(f.verdict, Verdict::Converging | Verdict::SwitchingOver)
                })
                .and(limit_ms);
            if let Some(ms) = pause {
                parts.push(format!("expect a pause under {ms} ms"));
            }
            if let Some(t) = throttle_now {
                parts.push(format!("CPU slowed {t} % right now"));
            }
            let detail = if parts.is_empty() {
                "Getting ready.".to_owned()
            } else {
                sentence(&parts.join(", "))
            };
            (
                "Being moved for maintenance",
                detail,
                m.forecast.as_ref().map(|f| {
                    // In the first pass every move looks on track: whether the guest lets
                    // it finish shows only from the second pass on.
                    if f.verdict == Verdict::Converging && sample.is_some_and(|s| s.iteration <= 1) {
                        "Copying its memory the first time; how long the rest takes shows after that.".to_owned()
                    } else {
                        outlook(f.verdict, f.eta_min_s, f.eta_max_s)
                    }
                }),
                pause,
                throttle_now,
            )
        }
        MigrationState::PostCopy => (
            "Almost moved",
            "It runs at its new location; the last of its memory is following, so it may be slower for a few seconds.".to_owned(),
            None,
            None,
            throttle_now,
        ),
        MigrationState::Completed => {
            let pause = m.final_stats.as_ref().and_then(|f| f.downtime_ms);
            let mut detail = match pause {
                Some(ms) => format!("It was paused for {ms} ms"),
                None => "It was paused briefly".to_owned(),
            };
            match m.max_throttle_pct.filter(|t| *t > 0) {
                Some(t) => detail.push_str(&format!(" and its CPU slowed by up to {t} % while it moved.")),
                None => detail.push_str(" and not slowed down."),
            }
            ("Moved", detail, None, pause, m.max_throttle_pct)
        }
        MigrationState::Aborted | MigrationState::Failed => (
            "Move called off",
            "It kept running where it was; nothing changed for it.".to_owned(),
            None,
            None,
            m.max_throttle_pct,
        ),
        MigrationState::Unknown => (
            "Move status unknown",
            "The move's outcome was not recorded; it is running normally if you can reach it.".to_owned(),
            None,
            None,
            None,
        ),
    };
    TenantMove {
        id: m.id.clone(),
        state: m.state,
        headline: headline.to_owned(),
        detail,
        outlook,
        progress_pct: m.state.is_active().then_some(progress).flatten(),
        started_at_ms: m.started_at_ms,
        ended_at_ms: m.ended_at_ms,
        pause_ms,
        slowdown_pct,
    }
}

fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        format!("{}{}.", first.to_uppercase(), chars.as_str())
    })
}

fn outlook(verdict: Verdict, eta_min_s: Option<u64>, eta_max_s: Option<u64>) -> String {
    match verdict {
        Verdict::Converging => match (eta_min_s, eta_max_s) {
            (Some(lo), Some(hi)) => format!("On track, {} left.", span(lo, hi)),
            _ => "On track.".to_owned(),
        },
        Verdict::SwitchingOver => "Finishing now.".to_owned(),
        Verdict::Stalled => {
            "Progress has slowed; the operators are watching it.".to_owned()
        }
        Verdict::WillNotConverge => {
            "It is busy enough that the move cannot finish on its own; the operators have been told and will adjust it or try again later.".to_owned()
        }
        Verdict::PostCopy => "Almost done.".to_owned(),
        Verdict::Completed | Verdict::Failed | Verdict::Aborted => String::new(),
    }
}

/// "about 40 seconds", "1–2 minutes".
fn span(lo_s: u64, hi_s: u64) -> String {
    if hi_s < 60 {
        let (lo, hi) = (lo_s.max(1), hi_s.max(1));
        return if lo >= hi {
            format!("about {hi} s")
        } else {
            format!("{lo}–{hi} s")
        };
    }
    let (lo, hi) = (lo_s / 60, hi_s.div_ceil(60));
    if lo == 0 {
        format!("under {hi} min")
    } else if lo >= hi {
        format!("about {hi} min")
    } else {
        format!("{lo}–{hi} min")
    }
}

#[cfg(test)]
mod tests;
