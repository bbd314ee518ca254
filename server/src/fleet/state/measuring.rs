//! The guests' dirty rates, measured in the background while they do not migrate: which VM
//! is due, the readings, and the rule that a measurement never overlaps a migration.

use converge_api::{DirtyRate, LiveEvent, VmState, VmsUpdate};

use super::{Change, FleetState};

/// A reading counts as the guest's rate before its migration for this long (the forecast's
/// measured rate).
pub const FRESH_DIRTY_RATE_MS: i64 = 5 * 60 * 1000;
/// A VM a drain waits on to go quiet is measured again after this at most, ms.
const SOON_MS: i64 = 10_000;

impl FleetState {
    /// The running, not migrating VM on `host` whose reading is oldest (or missing), if it
    /// was last tried at least `every_ms` ago (a VM a drain waits on: at least [`SOON_MS`]);
    /// it is marked as being measured.
    pub fn begin_measurement(&mut self, host: &str, every_ms: i64, now_ms: i64) -> Option<String> {
        if self.measuring.values().any(|h| h == host) {
            return None;
        }
        let entry = self.hosts.get(host)?;
        let due = entry
            .domains
            .iter()
            .filter(|d| {
                matches!(d.state, converge_libvirt::DomainState::Running)
                    && !self.active_by_vm.contains_key(&d.uuid)
            })
            .map(|d| (self.measure_tried.get(&d.uuid).copied(), &d.uuid))
            .filter(|(tried, uuid)| {
                let every = if self.measure_soon.contains(*uuid) {
                    every_ms.min(SOON_MS)
                } else {
                    every_ms
                };
                tried.is_none_or(|t| now_ms.saturating_sub(t) >= every)
            })
            .min_by_key(|(tried, _)| tried.unwrap_or(i64::MIN))
            .map(|(_, uuid)| uuid.clone())?;
        self.measure_tried.insert(due.clone(), now_ms);
        self.measuring.insert(due.clone(), host.to_owned());
        Some(due)
    }

    /// Marks the VM on `host` as being measured by someone else than the background
    /// (the adaptive preset's own second); `false` when it already is. End it with
    /// [`Self::end_measurement`].
    pub fn claim_measurement(&mut self, vm_uuid: &str, host: &str) -> bool {
        if self.measuring.contains_key(vm_uuid) {
            return false;
        }
        self.measuring.insert(vm_uuid.to_owned(), host.to_owned());
        true
    }

    /// Whether the VM's dirty rate is being measured right now.
    pub fn is_measuring(&self, vm_uuid: &str) -> bool {
        self.measuring.contains_key(vm_uuid)
    }

    /// A measurement over `period_s` ended. A reading (bytes/s) is kept and published unless a migration
    /// of the VM began meanwhile: it would have measured the migration too.
    pub fn end_measurement(
        &mut self,
        vm_uuid: &str,
        reading: Option<u64>,
        period_s: u32,
        now_ms: i64,
    ) -> Vec<Change> {
        if self.measuring.remove(vm_uuid).is_none() {
            return Vec::new();
        }
        match reading {
            Some(bytes_per_s) => self.record_dirty_rate(vm_uuid, bytes_per_s, period_s, now_ms),
            None => Vec::new(),
        }
    }

    /// Keeps a reading of the VM's dirty rate (bytes/s) and publishes it with its host's VM
    /// list; a reading taken while a migration of the VM began is dropped, since it would
    /// have measured the migration too.
    fn record_dirty_rate(
        &mut self,
        vm_uuid: &str,
        bytes_per_s: u64,
        period_s: u32,
        now_ms: i64,
    ) -> Vec<Change> {
        if self.active_by_vm.contains_key(vm_uuid) {
            return Vec::new();
        }
        let Some(host) = self
            .hosts
            .iter()
            .find(|(_, e)| e.domains.iter().any(|d| d.uuid == vm_uuid))
            .map(|(name, _)| name.clone())
        else {
            return Vec::new();
        };
        let previous = self.dirty_rates.get(vm_uuid).map(|r| r.bytes_per_s);
        self.dirty_rates.insert(
            vm_uuid.to_owned(),
            DirtyRate {
                bytes_per_s,
                at_ms: now_ms,
                previous_bytes_per_s: previous,
                period_s,
            },
        );
        let Some(entry) = self.hosts.get(&host) else {
            return Vec::new();
        };
        let vms = self.vms_of(&host, &entry.domains);
        vec![Change::Publish(LiveEvent::Vms(VmsUpdate { host, vms }))]
    }

    /// The VM's latest reading, when it is younger than [`FRESH_DIRTY_RATE_MS`] at `now_ms`.
    pub fn fresh_dirty_rate(&self, vm_uuid: &str, now_ms: i64) -> Option<DirtyRate> {
        self.dirty_rates
            .get(vm_uuid)
            .filter(|r| now_ms.saturating_sub(r.at_ms) <= FRESH_DIRTY_RATE_MS)
            .copied()
    }

    /// Every VM's latest reading with its host, for the metrics (where it runs now).
    pub fn dirty_rates(&self) -> Vec<(String, String, DirtyRate)> {
        self.vms()
            .into_iter()
            .filter(|vm| vm.state != VmState::Incoming)
            .filter_map(|vm| vm.dirty_rate.map(|r| (vm.name, vm.host, r)))
            .collect()
    }
}
