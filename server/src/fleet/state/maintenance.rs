//! What drains need of the fleet: which hosts are held by a drain (nothing moves into
//! them), each host's memory, the VMs to measure more often, and the notices tenants see
//! before their VM's turn.

use std::collections::{HashMap, HashSet};

use converge_api::{HostUpdate, LiveEvent, VmsUpdate};
use converge_libvirt::DomainState;

use super::{Change, FleetState};

/// A host's memory as a drain's placement counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    /// Free, as libvirt last said (none before the first reading).
    pub free_bytes: Option<u64>,
    /// Memory of the guests it holds: running, paused, and incoming ones.
    pub guests_bytes: u64,
}

impl FleetState {
    /// Marks `hosts` as held by drain `drain_id`, or frees those it held when `None`;
    /// publishes the hosts that changed.
    pub fn set_draining(&mut self, hosts: &[String], drain_id: Option<&str>) -> Vec<Change> {
        let mut changes = Vec::new();
        for name in hosts {
            let Some(entry) = self.hosts.get_mut(name) else {
                continue;
            };
            let next = drain_id.map(str::to_owned);
            if entry.host.draining != next {
                entry.host.draining = next;
                changes.push(Change::Publish(LiveEvent::Host(HostUpdate {
                    host: entry.host.clone(),
                })));
            }
        }
        changes
    }

    /// The drain that holds `host`, if one does.
    pub fn draining(&self, host: &str) -> Option<&str> {
        self.hosts.get(host)?.host.draining.as_deref()
    }

    /// `host`'s memory, if the host is known.
    pub fn host_memory(&self, host: &str) -> Option<HostMemory> {
        let entry = self.hosts.get(host)?;
        let guests_bytes = entry
            .domains
            .iter()
            .filter(|d| matches!(d.state, DomainState::Running | DomainState::Paused { .. }))
            .map(|d| d.memory_bytes)
            .sum();
        Some(HostMemory {
            free_bytes: entry.free_bytes,
            guests_bytes,
        })
    }

    /// The VMs the background measurement takes more often than the rest (replaces the
    /// previous set).
    pub fn set_measure_soon(&mut self, vms: HashSet<String>) {
        self.measure_soon = vms;
    }

    /// Whether `vm_uuid` is to be measured more often.
    pub fn is_measured_soon(&self, vm_uuid: &str) -> bool {
        self.measure_soon.contains(vm_uuid)
    }

    /// Sets the tenants' maintenance notices (replaces them all) and publishes the VM
    /// lists of the hosts whose VMs' notices changed, so that those tenants' views go out.
    pub fn set_scheduled(&mut self, notices: HashMap<String, String>) -> Vec<Change> {
        let changed: HashSet<String> = notices
            .iter()
            .filter(|(uuid, text)| self.scheduled.get(*uuid) != Some(*text))
            .map(|(uuid, _)| uuid.clone())
            .chain(
                self.scheduled
                    .keys()
                    .filter(|uuid| !notices.contains_key(*uuid))
                    .cloned(),
            )
            .collect();
        self.scheduled = notices;
        if changed.is_empty() {
            return Vec::new();
        }
        self.hosts
            .iter()
            .filter(|(_, e)| e.domains.iter().any(|d| changed.contains(&d.uuid)))
            .map(|(name, e)| {
                Change::Publish(LiveEvent::Vms(VmsUpdate {
                    host: name.clone(),
                    vms: self.vms_of(name, &e.domains),
                }))
            })
            .collect()
    }

    /// The maintenance notice for `vm_uuid`, if a drain will move it.
    pub fn scheduled_notice(&self, vm_uuid: &str) -> Option<&str> {
        self.scheduled.get(vm_uuid).map(String::as_str)
    }

    /// The ids of migrations the database had running at the last stop whose host has not
    /// reported them yet.
    pub fn restoring(&self) -> impl Iterator<Item = &str> {
        self.orphans.values().map(|m| m.id.as_str())
    }
}
