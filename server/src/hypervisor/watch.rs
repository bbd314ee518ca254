//! One thread per outgoing migration: reads its job at the sampling interval and at each
//! pass boundary, and reports how it ended. A domain whose calls are slow delays only its
//! own readings.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use converge_api::Levers;
use converge_libvirt::{Connection, Domain, JobStats};
use time::OffsetDateTime;

use super::worker::{MAX_IDLE, Shared};
use super::{Report, SampleReport};

/// Starts watching `uuid`; returns where its pass boundaries go. The thread ends when the
/// sender is dropped (the watch was ended), when the job ends, or at shutdown.
pub(super) fn spawn(shared: Arc<Shared>, uuid: String) -> mpsc::Sender<u32> {
    let (tx, rx) = mpsc::channel();
    let name = format!("watch-{}", &uuid[..uuid.len().min(8)]);
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&shared, &uuid, &rx));
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start a migration's watch thread");
    }
    tx
}

/// What a reading found.
enum Flow {
    Continue,
    Ended,
}

fn run(shared: &Shared, uuid: &str, boundaries: &mpsc::Receiver<u32>) {
    let every = shared.timing.sample_every;
    let mut next = Instant::now();
    while !shared.shutdown.is_cancelled() {
        let wait = next.saturating_duration_since(Instant::now()).min(MAX_IDLE);
        let boundary = match boundaries.recv_timeout(wait) {
            Ok(iteration) => Some(iteration),
            Err(RecvTimeoutError::Timeout) if Instant::now() < next => continue,
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if boundary.is_none() {
            next += every;
            let now = Instant::now();
            if next <= now {
                next = now + every;
            }
        }
        // Without a connection the watch waits for the next one.
        let Some((generation, conn)) = shared.conn() else {
            continue;
        };
        if let Flow::Ended = read(shared, generation, &conn, uuid, boundary) {
            return;
        }
    }
}

/// Reads the domain's job once; reports a sample, or that the job ended.
fn read(
    shared: &Shared,
    generation: u64,
    conn: &Connection,
    uuid: &str,
    iteration_started: Option<u32>,
) -> Flow {
    let calls = &shared.calls;
    let domain = match calls.run("virDomainLookupByUUIDString", uuid, || conn.domain(uuid)) {
        Ok(domain) => domain,
        Err(err) if err.is_no_domain() => {
            shared.job_ended(uuid, None, true);
            return Flow::Ended;
        }
        Err(err) => {
            shared.check_alive(generation, conn, &err);
            return Flow::Continue;
        }
    };
    match calls.run("virDomainGetJobStats", uuid, || domain.job_stats(false)) {
        Ok(Some(stats)) if stats.kind.is_active() => {
            let name = domain.name().unwrap_or_default();
            let levers = read_levers(shared, uuid, &domain, &stats);
            let report = Report::Sample(SampleReport {
                host: shared.config.name.clone(),
                vm_uuid: uuid.to_owned(),
                vm_name: name,
                stats,
                at: OffsetDateTime::now_utc(),
                iteration_started,
                levers,
            });
            if shared.report_if_watched(uuid, report) {
                Flow::Continue
            } else {
                Flow::Ended
            }
        }
        Ok(_) => {
            // Between our migrate call and QEMU starting the job there is no job yet:
            // only the call's return decides for migrations started here.
            if shared.in_flight(uuid) {
                return Flow::Continue;
            }
            let completed = calls
                .run("virDomainGetJobStats", uuid, || domain.job_stats(true))
                .ok()
                .flatten();
            shared.job_ended(uuid, completed, false);
            Flow::Ended
        }
        Err(err) if err.is_no_domain() => {
            shared.job_ended(uuid, None, true);
            Flow::Ended
        }
        Err(err) => {
            shared.check_alive(generation, conn, &err);
            Flow::Continue
        }
    }
}

/// The levers' values: downtime and bandwidth asked of libvirt (both answer at once on
/// the source), the xbzrle cache from the job statistics (present only when xbzrle is on).
fn read_levers(shared: &Shared, uuid: &str, domain: &Domain, stats: &JobStats) -> Levers {
    let calls = &shared.calls;
    Levers {
        downtime_limit_ms: calls
            .run("virDomainMigrateGetMaxDowntime", uuid, || {
                domain.max_downtime_ms()
            })
            .ok(),
        // libvirt reports "unlimited" as about 8 PiB/s.
        bandwidth_mib_s: calls
            .run("virDomainMigrateGetMaxSpeed", uuid, || {
                domain.max_speed_mib_s()
            })
            .ok()
            .filter(|&v| v <= converge_api::MAX_BANDWIDTH_MIB_S),
        xbzrle_cache_bytes: stats.u64("compression_cache"),
    }
}
