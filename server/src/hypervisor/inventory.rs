//! The host's domain list, refreshed on its own thread: at the configured interval, and
//! at once after a lifecycle or job event.
//!
//! Only calls that answer at once on both sides of a migration are made (list, state,
//! info, Nova's metadata; measured by `scripts/probe-libvirt-locks`): never the domain
//! XML, which waits on the destination for the whole incoming migration. What a domain
//! said once (its size, Nova's metadata) is kept by UUID, so a domain whose call fails
//! this time is listed with what was known, and one unreadable domain never blanks the
//! host's list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use converge_libvirt::{Connection, Domain, DomainState, DomainSummary, NovaInstance};

use super::worker::{MAX_IDLE, OPERATION_MIGRATION_OUT, Shared};
use super::{Report, SampleReport};

/// What is kept of a domain between refreshes.
#[derive(Debug, Clone, Default)]
struct Known {
    name: String,
    memory_bytes: u64,
    vcpus: u32,
    /// Nova's metadata, once read (`Some(None)`: read, and there is none).
    nova: Option<Option<NovaInstance>>,
}

/// Starts the inventory thread (it ends at shutdown).
pub(super) fn spawn(shared: Arc<Shared>) -> Option<std::thread::JoinHandle<()>> {
    let (kick, kicked) = mpsc::channel();
    *shared
        .refresh
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(kick);
    let name = format!("inventory-{}", shared.config.name);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&shared, &kicked))
        .inspect_err(|err| tracing::error!(error = %err, "cannot start the inventory thread"))
        .ok()
}

fn run(shared: &Arc<Shared>, kicked: &mpsc::Receiver<()>) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut next = Instant::now();
    while !shared.shutdown.is_cancelled() {
        let wait = next.saturating_duration_since(Instant::now()).min(MAX_IDLE);
        match kicked.recv_timeout(wait) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) if Instant::now() < next => continue,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Several kicks at once make one refresh.
        while kicked.try_recv().is_ok() {}
        next = Instant::now() + shared.timing.scan_every;
        let Some((generation, conn)) = shared.conn() else {
            continue;
        };
        match list(shared, &conn, &mut known) {
            Ok(domains) => {
                shared.report(Report::Domains {
                    host: shared.config.name.clone(),
                    domains,
                });
                // What a drain may place here.
                if let Ok(free_bytes) = shared
                    .calls
                    .run("virNodeGetFreeMemory", "", || conn.free_memory_bytes())
                {
                    shared.report(Report::Memory {
                        host: shared.config.name.clone(),
                        free_bytes,
                    });
                }
            }
            Err(err) => {
                tracing::debug!(host = %shared.config.name, error = %err, "cannot list the host's domains");
                shared.check_alive(generation, &conn, &err);
            }
        }
    }
}

/// Lists the host's domains, and finds outgoing migrations nobody told the host about
/// (started before the server, or by another tool).
fn list(
    shared: &Arc<Shared>,
    conn: &Connection,
    known: &mut HashMap<String, Known>,
) -> Result<Vec<DomainSummary>, converge_libvirt::Error> {
    let calls = &shared.calls;
    let all = calls.run("virConnectListAllDomains", "", || conn.all_domains())?;
    let mut listed = Vec::with_capacity(all.len());
    let mut seen = HashMap::with_capacity(all.len());
    for domain in all {
        // UUID and name are kept by the client: no call to the daemon.
        let Ok(uuid) = domain.uuid() else { continue };
        let mut entry = known.remove(&uuid).unwrap_or_default();
        if entry.name.is_empty() {
            entry.name = domain.name().unwrap_or_default();
        }
        let state = match calls.run("virDomainGetState", &entry.name, || domain.state()) {
            Ok(state) => state,
            Err(err) if err.is_no_domain() => continue,
            Err(err) => {
                tracing::debug!(vm = %entry.name, error = %err, "cannot read a domain's state");
                DomainState::Other
            }
        };
        match calls.run("virDomainGetInfo", &entry.name, || domain.size()) {
            Ok((memory_bytes, vcpus)) => (entry.memory_bytes, entry.vcpus) = (memory_bytes, vcpus),
            Err(err) if err.is_no_domain() => continue,
            // The last size known stands.
            Err(_) => {}
        }
        if entry.nova.is_none() {
            entry.nova = calls
                .run("virDomainGetMetadata", &entry.name, || domain.nova())
                .ok();
        }
        if !shared.is_watched(&uuid) {
            find_outgoing_migration(shared, &domain, &uuid, &entry.name, state);
        }
        listed.push(DomainSummary {
            name: entry.name.clone(),
            uuid: uuid.clone(),
            state,
            memory_bytes: entry.memory_bytes,
            vcpus: entry.vcpus,
            nova: entry.nova.clone().flatten(),
        });
        seen.insert(uuid, entry);
    }
    // Domains no longer listed are forgotten.
    *known = seen;
    Ok(listed)
}

/// Starts watching `domain` if it has an outgoing migration job.
fn find_outgoing_migration(
    shared: &Arc<Shared>,
    domain: &Domain,
    uuid: &str,
    name: &str,
    state: DomainState,
) {
    // (Paused too: the source of a migration in post-copy is paused. On the incoming side
    // libvirt refuses at once, "only on the source host"; that domain is skipped.)
    if !matches!(state, DomainState::Running | DomainState::Paused { .. }) {
        return;
    }
    let Ok(Some(stats)) = shared
        .calls
        .run("virDomainGetJobStats", name, || domain.job_stats(false))
    else {
        return;
    };
    if stats.kind.is_active() && stats.i64("operation") == Some(OPERATION_MIGRATION_OUT) {
        tracing::info!(host = %shared.config.name, vm = %name, "found a running migration");
        shared.watch(uuid);
        shared.report_if_watched(
            uuid,
            Report::Sample(SampleReport {
                host: shared.config.name.clone(),
                vm_uuid: uuid.to_owned(),
                vm_name: name.to_owned(),
                stats,
                at: time::OffsetDateTime::now_utc(),
                iteration_started: None,
                levers: Default::default(),
            }),
        );
    }
}
