//! Host workers' reports: connection state, VM lists, and how jobs end.

use converge_api::{HostState, HostUpdate, LiveEvent, MigrationState, VmsUpdate};
use converge_libvirt::{DomainSummary, JobKind, LifecycleEvent};

use super::{Change, FleetState, SUSPENDED_POSTCOPY};
use crate::fleet::record::MigrationRecord;
use crate::hypervisor::{
    ConnectionReport, HealthReport, JobEndedReport, MigrateReturnedReport, Report, final_stats,
};

/// What a migration cancelled by someone else (virsh, Nova) is recorded as.
const ABORTED_OUTSIDE: &str = "aborted outside Converge";
/// Who the actions record names for what someone else did to a migration.
const OUTSIDE_ACTOR: &str = "outside Converge";
/// `VIR_DOMAIN_EVENT_SUSPENDED_PAUSED`: paused by a client (`virsh suspend`, Nova).
const SUSPENDED_PAUSED: i32 = 0;

impl FleetState {
    /// Applies a host worker's report.
    pub fn apply(&mut self, report: Report, now_ms: i64) -> Vec<Change> {
        match report {
            Report::Connection(report) => self.connection(report, now_ms),
            Report::Domains { host, domains } => self.domains(&host, domains),
            Report::Sample(report) => self.sample(report, now_ms),
            Report::JobCompleted {
                host,
                vm_uuid,
                stats,
            } => {
                let Some(id) = self.latest_from(&host, &vm_uuid) else {
                    return Vec::new();
                };
                if let Some(record) = self.migrations.get_mut(&id) {
                    record.migration.final_stats = Some(final_stats(&stats));
                }
                self.finish(&id, MigrationState::Completed, None, now_ms)
            }
            Report::JobEnded(report) => self.job_ended(report, now_ms),
            Report::MigrateReturned(report) => self.migrate_returned(report, now_ms),
            Report::Health(report) => self.health(report),
            Report::Memory { host, free_bytes } => {
                if let Some(entry) = self.hosts.get_mut(&host) {
                    entry.free_bytes = Some(free_bytes);
                }
                Vec::new()
            }
            Report::Lifecycle {
                host,
                vm_uuid,
                event,
            } => {
                let id = self.active_by_vm.get(&vm_uuid).cloned();
                let Some((id, record)) = id.and_then(|id| {
                    let record = self.migrations.get_mut(&id)?;
                    (record.migration.source == host).then_some((id, record))
                }) else {
                    return Vec::new();
                };
                let outside = |what: &str| converge_api::ActionRecord {
                    at_ms: now_ms,
                    actor: OUTSIDE_ACTOR.into(),
                    what: what.into(),
                    reason: "not asked of Converge (virsh, Nova or another tool)".into(),
                    result: "ok".into(),
                };
                match event {
                    LifecycleEvent::Suspended(SUSPENDED_POSTCOPY) => {
                        record.migration.state = MigrationState::PostCopy;
                        if !record.asked_postcopy {
                            record.push_action(outside("switched to post-copy"));
                        }
                    }
                    LifecycleEvent::Suspended(SUSPENDED_PAUSED)
                        if !record.asked_pause
                            && record.migration.state == MigrationState::Running =>
                    {
                        record.push_action(outside("paused the guest"));
                    }
                    _ => return Vec::new(),
                }
                self.changed(&id, None, true)
            }
        }
    }

    /// Notes on `vm_uuid`'s migration under way that a report about it could not be
    /// applied (the server's fault, logged), so that its card does not silently freeze.
    pub fn report_failed(&mut self, vm_uuid: &str, now_ms: i64) -> Vec<Change> {
        let Some(id) = self.active_by_vm.get(vm_uuid).cloned() else {
            return Vec::new();
        };
        if let Some(record) = self.migrations.get_mut(&id) {
            record.push_action(converge_api::ActionRecord {
                at_ms: now_ms,
                actor: "converge".into(),
                what: "a report was not processed".into(),
                reason: "an internal error in Converge (the server log has it); this \
                         migration's figures may lag until the next reading"
                    .into(),
                result: "internal error".into(),
            });
        }
        self.changed(&id, None, true)
    }

    /// A host's libvirt stopped answering a call, or answers again.
    fn health(&mut self, report: HealthReport) -> Vec<Change> {
        let Some(entry) = self.hosts.get_mut(&report.host) else {
            return Vec::new();
        };
        if entry.host.degraded == report.degraded {
            return Vec::new();
        }
        entry.host.degraded = report.degraded;
        vec![Change::Publish(LiveEvent::Host(HostUpdate {
            host: entry.host.clone(),
        }))]
    }

    fn connection(&mut self, report: ConnectionReport, now_ms: i64) -> Vec<Change> {
        let ConnectionReport {
            host,
            connected,
            error,
            hostname,
            libvirt_version,
        } = report;
        let Some(entry) = self.hosts.get_mut(&host) else {
            return Vec::new();
        };
        let state = if connected {
            HostState::Connected
        } else {
            HostState::Disconnected
        };
        let h = &mut entry.host;
        if h.state != state {
            h.since_ms = now_ms;
        }
        let unchanged = h.state == state && h.error == error;
        h.state = state;
        h.error = error;
        if connected {
            h.hostname = hostname;
            h.libvirt_version = libvirt_version;
        }
        if unchanged {
            return Vec::new();
        }
        vec![Change::Publish(LiveEvent::Host(HostUpdate {
            host: h.clone(),
        }))]
    }

    fn domains(&mut self, host: &str, domains: Vec<DomainSummary>) -> Vec<Change> {
        let Some(entry) = self.hosts.get_mut(host) else {
            return Vec::new();
        };
        if entry.domains == domains {
            return Vec::new();
        }
        entry.domains = domains;
        entry.host.vm_count = entry.domains.len();
        let (host_view, domains) = (entry.host.clone(), entry.domains.clone());
        let vms = self.vms_of(host, &domains);
        for vm in &vms {
            if let Some(project) = &vm.project {
                self.projects.insert(vm.uuid.clone(), project.clone());
            }
        }
        vec![
            Change::Publish(LiveEvent::Host(HostUpdate { host: host_view })),
            Change::Publish(LiveEvent::Vms(VmsUpdate {
                host: host.to_owned(),
                vms,
            })),
        ]
    }

    fn job_ended(&mut self, report: JobEndedReport, now_ms: i64) -> Vec<Change> {
        let JobEndedReport {
            host,
            vm_uuid,
            completed,
            domain_gone,
        } = report;
        let (host, vm_uuid) = (host.as_str(), vm_uuid.as_str());
        // A migration from before a restart that ended while the server was down.
        if let Some(orphan) = self.orphans.remove(vm_uuid) {
            let id = orphan.id.clone();
            self.active_by_vm.insert(vm_uuid.to_owned(), id.clone());
            self.migrations.insert(id, MigrationRecord::new(orphan));
        }
        let Some(id) = self.active_by_vm.get(vm_uuid).cloned() else {
            return Vec::new();
        };
        let record = &self.migrations[&id];
        if record.migration.source != host || record.call_in_flight {
            return Vec::new();
        }
        let aborted = record.abort_requested;
        let (state, error) = match completed.as_ref().map(|s| s.kind) {
            Some(JobKind::Completed) => (MigrationState::Completed, None),
            Some(JobKind::Cancelled) if aborted => (
                MigrationState::Aborted,
                Some("aborted on request".to_owned()),
            ),
            Some(JobKind::Cancelled) => (MigrationState::Aborted, Some(ABORTED_OUTSIDE.to_owned())),
            Some(JobKind::Failed) => (
                MigrationState::Failed,
                Some(
                    completed
                        .as_ref()
                        .and_then(|s| s.string("errmsg"))
                        .unwrap_or("libvirt reported the migration failed")
                        .to_owned(),
                ),
            ),
            _ if domain_gone => (MigrationState::Completed, None),
            _ if aborted => (MigrationState::Aborted, Some("aborted".to_owned())),
            _ => (
                MigrationState::Unknown,
                Some("the job ended and libvirt kept no statistics of it".to_owned()),
            ),
        };
        if let (Some(stats), MigrationState::Completed) = (&completed, state)
            && let Some(record) = self.migrations.get_mut(&id)
        {
            record.migration.final_stats = Some(final_stats(stats));
        }
        self.finish(&id, state, error, now_ms)
    }

    fn migrate_returned(&mut self, report: MigrateReturnedReport, now_ms: i64) -> Vec<Change> {
        let MigrateReturnedReport {
            host,
            vm_uuid,
            result,
            connection_lost,
            cancelled,
        } = report;
        let (host, vm_uuid) = (host.as_str(), vm_uuid.as_str());
        let Some(id) = self.latest_from(host, vm_uuid) else {
            return Vec::new();
        };
        let Some(record) = self.migrations.get_mut(&id) else {
            return Vec::new();
        };
        record.call_in_flight = false;
        match result {
            Ok(()) => self.finish(&id, MigrationState::Completed, None, now_ms),
            // The source's daemon went away mid-call: the job's fate is read on reconnect.
            Err(_) if connection_lost => Vec::new(),
            Err(_) if record.abort_requested => self.finish(
                &id,
                MigrationState::Aborted,
                Some("aborted on request".into()),
                now_ms,
            ),
            Err(message) if cancelled => self.finish(
                &id,
                MigrationState::Aborted,
                Some(format!("{ABORTED_OUTSIDE} (libvirt: {message})")),
                now_ms,
            ),
            Err(message) => self.finish(&id, MigrationState::Failed, Some(message), now_ms),
        }
    }
}
