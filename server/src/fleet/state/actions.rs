//! Requests about running migrations: levers, abort, and recording what was done.

use converge_api::{
    ActionRecord, LeverChange, MAX_BANDWIDTH_MIB_S, MAX_DOWNTIME_MS, MIN_XBZRLE_CACHE,
    MigrationState,
};

use super::{Change, FleetState, Refusal};
use crate::fleet::ActKind;

/// Where a lever goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeverTarget {
    /// The source host.
    pub source: String,
    /// The VM's UUID.
    pub vm_uuid: String,
    /// The VM's name.
    pub vm_name: String,
}

impl FleetState {
    /// Marks an abort as requested; returns the source host and VM to send it to.
    pub fn request_abort(&mut self, id: &str) -> Result<(String, String), Refusal> {
        let record = self
            .migrations
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("no migration {id}")))?;
        if !record.migration.state.is_active() {
            return Err(Refusal::Conflict(format!(
                "migration {id} is already over ({}); nothing to abort",
                record.migration.state.wire_name()
            )));
        }
        record.abort_requested = true;
        Ok((
            record.migration.source.clone(),
            record.migration.vm_uuid.clone(),
        ))
    }

    /// Checks that `change` may be applied to migration `id` now.
    pub fn check_lever(&self, id: &str, change: LeverChange) -> Result<LeverTarget, Refusal> {
        let record = self
            .migrations
            .get(id)
            .ok_or_else(|| Refusal::NotFound(format!("no migration {id}")))?;
        let m = &record.migration;
        if m.state != MigrationState::Running && m.state != MigrationState::Starting {
            return Err(Refusal::Conflict(format!(
                "migration {id} is {}; levers move only while pre-copy runs",
                match m.state {
                    MigrationState::PostCopy => "in post-copy",
                    _ => "already over",
                }
            )));
        }
        let caps = m.settings.as_ref().map(|s| &s.capabilities);
        let memory = m.last_sample.as_ref().map_or(0, |s| s.mem_total_bytes);
        match change {
            LeverChange::DowntimeLimit { ms } if !(1..=MAX_DOWNTIME_MS).contains(&ms) => {
                return Err(Refusal::Invalid(format!(
                    "the downtime limit must be between 1 and {MAX_DOWNTIME_MS} ms"
                )));
            }
            LeverChange::Bandwidth { mib_s } if !(1..=MAX_BANDWIDTH_MIB_S).contains(&mib_s) => {
                return Err(Refusal::Invalid(format!(
                    "the bandwidth limit must be between 1 and {MAX_BANDWIDTH_MIB_S} MiB/s"
                )));
            }
            LeverChange::XbzrleCache { bytes } => {
                if caps.is_some_and(|c| c.xbzrle_cache_bytes.is_none()) {
                    return Err(Refusal::Invalid(
                        "xbzrle is off for this migration: QEMU fixes capabilities when a migration starts, so the cache can be resized only when xbzrle was on from the start".into(),
                    ));
                }
                if bytes < MIN_XBZRLE_CACHE || (memory > 0 && bytes > memory) {
                    return Err(Refusal::Invalid(format!(
                        "the xbzrle cache must be between 1 MiB and the guest's memory ({} MiB)",
                        memory >> 20
                    )));
                }
            }
            LeverChange::PostCopy if caps.is_some_and(|c| !c.postcopy) => {
                return Err(Refusal::Invalid(
                    "post-copy was not allowed when this migration started: QEMU fixes capabilities at start; start it again with post-copy allowed".into(),
                ));
            }
            _ => {}
        }
        Ok(LeverTarget {
            source: m.source.clone(),
            vm_uuid: m.vm_uuid.clone(),
            vm_name: m.vm_name.clone(),
        })
    }

    /// Notes that Converge is about to ask for `kind` on migration `id`, so that the
    /// events it causes are not taken for someone else's doing.
    pub fn note_request(&mut self, id: &str, kind: ActKind) {
        if let Some(record) = self.migrations.get_mut(id) {
            match kind {
                ActKind::Lever(LeverChange::PostCopy) => record.asked_postcopy = true,
                ActKind::Pause => record.asked_pause = true,
                _ => {}
            }
        }
    }

    /// Records an action's outcome on migration `id`. `succeeded` carries libvirt's
    /// read-back value when the action worked.
    pub fn record_action(
        &mut self,
        id: &str,
        action: ActionRecord,
        kind: ActKind,
        succeeded: Option<Option<u64>>,
    ) -> Vec<Change> {
        let Some(record) = self.migrations.get_mut(id) else {
            return Vec::new();
        };
        if succeeded.is_some()
            && let ActKind::Lever(change) = kind
        {
            record.note_applied(change, &action.actor, action.at_ms);
        }
        record.push_action(action);
        if let Some(read_back) = succeeded {
            let levers = &mut record.migration.levers;
            match kind {
                ActKind::Lever(LeverChange::DowntimeLimit { .. }) => {
                    levers.downtime_limit_ms = read_back.or(levers.downtime_limit_ms);
                }
                ActKind::Lever(LeverChange::Bandwidth { .. }) => {
                    levers.bandwidth_mib_s = read_back.or(levers.bandwidth_mib_s);
                }
                ActKind::Lever(LeverChange::XbzrleCache { .. }) => {
                    levers.xbzrle_cache_bytes = read_back.or(levers.xbzrle_cache_bytes);
                }
                ActKind::Pause => record.paused_by_policy = true,
                _ => {}
            }
        }
        self.changed(id, None, true)
    }
}
