//! One thread per host: owns the connection, serves commands, samples migrations.
//!
//! libvirt calls block (and a migration call blocks for the whole migration), so none of
//! this runs on the async executor. The thread talks to the rest of the server through
//! two channels: [`Msg`]s in (commands, libvirt events, the close notice) and
//! [`Report`]s out.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use converge_api::{LeverChange, Levers};
use converge_libvirt::{
    Connection, DomainEvent, DomainEventKind, DomainState, EventSubscription, JobStats,
};
use time::OffsetDateTime;
use tokio::sync::mpsc as tokio_mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Command, ConnectionReport, JobEndedReport, MigrateReturnedReport, Report, SampleReport,
};
use crate::config::HostConfig;

/// First wait before reconnecting; doubles up to the configured maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest the loop sleeps before checking for shutdown.
const MAX_IDLE: Duration = Duration::from_millis(200);
/// `VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT`: the jobs Converge samples.
const OPERATION_MIGRATION_OUT: i64 = 5;

/// What reaches the worker.
#[derive(Debug)]
pub(super) enum Msg {
    Command(Command),
    Event(DomainEvent),
    Closed(String),
    Returned {
        vm_uuid: String,
        result: Result<(), converge_libvirt::Error>,
    },
}

/// How often the worker does what.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) sample_every: Duration,
    pub(super) scan_every: Duration,
    pub(super) max_backoff: Duration,
}

/// Starts the worker thread for `config`; returns its inbox and the thread (none when it
/// could not be started, which is logged).
pub(super) fn spawn(
    config: HostConfig,
    timing: Timing,
    reports: tokio_mpsc::UnboundedSender<Report>,
    shutdown: CancellationToken,
) -> (mpsc::Sender<Msg>, Option<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel();
    let name = config.name.clone();
    let worker = Worker {
        config,
        timing,
        reports,
        shutdown,
        tx: tx.clone(),
        rx,
        tracked: BTreeSet::new(),
        in_flight: BTreeSet::new(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("host-{name}"))
        .spawn(move || worker.run())
        .inspect_err(|err| {
            tracing::error!(host = %name, error = %err, "cannot start the host worker thread");
        })
        .ok();
    (tx, thread)
}

/// Why `serve` returned.
enum End {
    Shutdown,
    Lost(String),
}

struct Worker {
    config: HostConfig,
    timing: Timing,
    reports: tokio_mpsc::UnboundedSender<Report>,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    /// Domains with an outgoing migration job to sample.
    tracked: BTreeSet<String>,
    /// Domains whose migrate call (started here) has not returned yet.
    in_flight: BTreeSet<String>,
}

impl Worker {
    fn run(mut self) {
        let host = self.config.name.clone();
        let mut backoff = FIRST_BACKOFF;
        while !self.shutdown.is_cancelled() {
            // A panic in one cycle (a libvirt surprise) must not end the host for good.
            let cycle = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cycle()));
            match cycle {
                Ok(Some(End::Shutdown)) => break,
                Ok(Some(End::Lost(reason))) => {
                    tracing::warn!(%host, %reason, "lost the connection to the host; reconnecting");
                    self.report_down(reason);
                    backoff = FIRST_BACKOFF;
                    self.idle(backoff);
                }
                Ok(None) => {
                    self.idle(backoff);
                    backoff = (backoff * 2).min(self.timing.max_backoff);
                }
                Err(_) => {
                    tracing::error!(%host, "host worker panicked; reconnecting");
                    self.report_down("internal error in the host worker".into());
                    self.idle(backoff);
                }
            }
        }
        tracing::debug!(%host, "host worker stopped");
    }

    /// Connects and serves until the connection is lost or shutdown; `None` when the
    /// connection could not be made (already reported).
    fn cycle(&mut self) -> Option<End> {
        let (conn, _events) = match self.connect() {
            Ok(connected) => connected,
            Err(err) => {
                tracing::debug!(host = %self.config.name, error = %err, "cannot connect");
                self.report_down(err.to_string());
                return None;
            }
        };
        Some(self.serve(&conn))
    }

    fn connect(&self) -> Result<(Connection, EventSubscription), converge_libvirt::Error> {
        let mut conn = Connection::open(&self.config.uri)?;
        let closed = self.tx.clone();
        conn.on_close(move |reason| {
            let _ = closed.send(Msg::Closed(format!(
                "libvirt closed the connection ({reason:?})"
            )));
        })?;
        let events = self.tx.clone();
        let subscription = conn.subscribe(move |event| {
            let _ = events.send(Msg::Event(event));
        })?;
        let hostname = conn.hostname().ok();
        let libvirt_version = conn.libvirt_version().ok();
        tracing::info!(host = %self.config.name, uri = %self.config.uri, ?libvirt_version, "connected to host");
        self.report(Report::Connection(ConnectionReport {
            host: self.config.name.clone(),
            connected: true,
            error: None,
            hostname,
            libvirt_version,
        }));
        Ok((conn, subscription))
    }

    fn serve(&mut self, conn: &Connection) -> End {
        let mut next_sample = Instant::now();
        let mut next_scan = Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                return End::Shutdown;
            }
            let now = Instant::now();
            if now >= next_scan {
                if let Err(err) = self.scan(conn)
                    && !conn.is_alive()
                {
                    return End::Lost(err.to_string());
                }
                next_scan = now + self.timing.scan_every;
            }
            if now >= next_sample {
                if let Err(err) = self.sample_all(conn)
                    && !conn.is_alive()
                {
                    return End::Lost(err.to_string());
                }
                next_sample += self.timing.sample_every;
                if next_sample <= now {
                    next_sample = now + self.timing.sample_every;
                }
            }
            let wait = next_sample
                .min(next_scan)
                .saturating_duration_since(Instant::now())
                .min(MAX_IDLE);
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Closed(reason)) => return End::Lost(reason),
                Ok(Msg::Event(event)) => {
                    if self.on_event(conn, event) {
                        next_scan = Instant::now();
                    }
                }
                Ok(Msg::Command(command)) => self.on_command(conn, command),
                Ok(Msg::Returned { vm_uuid, result }) => {
                    self.on_returned(vm_uuid, result, !conn.is_alive());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return End::Shutdown,
            }
        }
    }

    /// Waits `how_long` without a connection, refusing commands that need one.
    fn idle(&mut self, how_long: Duration) {
        let until = Instant::now() + how_long;
        while !self.shutdown.is_cancelled() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left.min(MAX_IDLE)) {
                Ok(Msg::Command(Command::Track { vm_uuid })) => {
                    self.tracked.insert(vm_uuid);
                }
                Ok(Msg::Command(command)) => self.refuse_disconnected(command),
                Ok(Msg::Returned { vm_uuid, result }) => self.on_returned(vm_uuid, result, true),
                Ok(Msg::Event(_) | Msg::Closed(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Lists domains, and finds outgoing migrations nobody told this worker about (e.g.
    /// started before the server started, or by another tool).
    fn scan(&mut self, conn: &Connection) -> Result<(), converge_libvirt::Error> {
        let domains = conn.list_domains()?;
        for domain in &domains {
            let may_migrate_out = matches!(
                domain.state,
                DomainState::Running | DomainState::Paused { .. }
            );
            if !may_migrate_out || self.tracked.contains(&domain.uuid) {
                continue;
            }
            let stats = match conn.domain(&domain.uuid).and_then(|d| d.job_stats(false)) {
                Ok(stats) => stats,
                Err(err) if err.is_no_domain() => continue,
                Err(err) => return Err(err),
            };
            if let Some(stats) = stats.filter(is_outgoing_migration) {
                tracing::info!(host = %self.config.name, vm = %domain.name, "found a running migration");
                self.tracked.insert(domain.uuid.clone());
                let levers = conn
                    .domain(&domain.uuid)
                    .map(|d| read_levers(&d, &stats))
                    .unwrap_or_default();
                self.report_sample(&domain.uuid, &domain.name, stats, None, levers);
            }
        }
        self.report(Report::Domains {
            host: self.config.name.clone(),
            domains,
        });
        Ok(())
    }

    fn sample_all(&mut self, conn: &Connection) -> Result<(), converge_libvirt::Error> {
        for uuid in self.tracked.clone() {
            self.sample_one(conn, &uuid, None)?;
        }
        Ok(())
    }

    /// Reads one tracked domain's job; reports a sample, or that the job ended.
    fn sample_one(
        &mut self,
        conn: &Connection,
        uuid: &str,
        iteration_started: Option<u32>,
    ) -> Result<(), converge_libvirt::Error> {
        let domain = match conn.domain(uuid) {
            Ok(domain) => domain,
            Err(err) if err.is_no_domain() => {
                self.job_ended(uuid, None, true);
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        match domain.job_stats(false) {
            Ok(Some(stats)) if stats.kind.is_active() => {
                let name = domain.name().unwrap_or_default();
                let levers = read_levers(&domain, &stats);
                self.report_sample(uuid, &name, stats, iteration_started, levers);
            }
            Ok(_) => {
                // Between our migrate call and QEMU starting the job there is no job yet:
                // only the call's return decides for migrations started here.
                if !self.in_flight.contains(uuid) {
                    let completed = domain.job_stats(true).ok().flatten();
                    self.job_ended(uuid, completed, false);
                }
            }
            Err(err) if err.is_no_domain() => self.job_ended(uuid, None, true),
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Handles a libvirt event; returns whether the VM list should be refreshed now.
    fn on_event(&mut self, conn: &Connection, event: DomainEvent) -> bool {
        let host = self.config.name.clone();
        match event.kind {
            DomainEventKind::MigrationIteration(iteration) => {
                // Read the job right at the boundary: remaining memory now is the dirty
                // set of the previous pass, the number that tells convergence.
                self.tracked.insert(event.uuid.clone());
                if let Err(err) = self.sample_one(conn, &event.uuid, Some(iteration)) {
                    tracing::debug!(%host, error = %err, "cannot read job stats at an iteration boundary");
                }
                false
            }
            DomainEventKind::JobCompleted(stats) => {
                if stats.i64("operation") == Some(OPERATION_MIGRATION_OUT)
                    || stats.get("operation").is_none()
                {
                    self.report(Report::JobCompleted {
                        host,
                        vm_uuid: event.uuid,
                        stats,
                    });
                }
                true
            }
            DomainEventKind::Lifecycle(lifecycle) => {
                self.report(Report::Lifecycle {
                    host,
                    vm_uuid: event.uuid,
                    event: lifecycle,
                });
                true
            }
        }
    }

    fn on_command(&mut self, conn: &Connection, command: Command) {
        match command {
            Command::Migrate {
                vm_uuid,
                request,
                downtime_limit_ms,
                reply,
            } => {
                let domain = match conn.domain(&vm_uuid) {
                    Ok(domain) => domain,
                    Err(err) => {
                        let _ = reply.send(Err(err.to_string()));
                        return;
                    }
                };
                // Set before the job starts: QEMU keeps migration parameters across the
                // start, and the first pass already runs under the chosen limit.
                if let Some(ms) = downtime_limit_ms
                    && let Err(err) = domain.set_max_downtime_ms(ms)
                {
                    let _ = reply.send(Err(format!("cannot set the downtime limit: {err}")));
                    return;
                }
                self.tracked.insert(vm_uuid.clone());
                self.in_flight.insert(vm_uuid.clone());
                let done = self.tx.clone();
                let uuid = vm_uuid.clone();
                // The migrate call blocks until the migration ends: its own thread.
                let spawned = std::thread::Builder::new()
                    .name(format!("migrate-{}", &vm_uuid[..vm_uuid.len().min(8)]))
                    .spawn(move || {
                        let result = domain.migrate(&request);
                        let _ = done.send(Msg::Returned {
                            vm_uuid: uuid,
                            result,
                        });
                    });
                match spawned {
                    Ok(_) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(err) => {
                        self.in_flight.remove(&vm_uuid);
                        self.tracked.remove(&vm_uuid);
                        let _ =
                            reply.send(Err(format!("cannot start the migration thread: {err}")));
                    }
                }
            }
            Command::Lever {
                vm_uuid,
                change,
                reply,
            } => {
                let result = conn
                    .domain(&vm_uuid)
                    .and_then(|domain| apply_lever(&domain, change))
                    .map_err(|err| err.to_string());
                let _ = reply.send(result);
            }
            Command::Pause {
                vm_uuid,
                pause,
                reply,
            } => {
                let result = conn
                    .domain(&vm_uuid)
                    .and_then(|domain| match (pause, domain.state()?) {
                        (true, _) => domain.suspend(),
                        // libvirt may already have resumed it where it landed.
                        (false, DomainState::Running) => Ok(()),
                        (false, _) => domain.resume(),
                    })
                    .map_err(|err| err.to_string());
                let _ = reply.send(result);
            }
            Command::MeasureDirtyRate {
                vm_uuid,
                seconds,
                reply,
            } => {
                let started = conn.domain(&vm_uuid).and_then(|domain| {
                    domain
                        .start_dirty_rate_calc(seconds as i32)
                        .map(|()| domain)
                });
                let domain = match started {
                    Ok(domain) => domain,
                    Err(err) => {
                        let _ = reply.send(Err(err.to_string()));
                        return;
                    }
                };
                // The measurement runs in QEMU; wait for it off this thread so sampling
                // of other migrations on the host carries on.
                let spawned =
                    std::thread::Builder::new()
                        .name("dirty-rate".into())
                        .spawn(move || {
                            std::thread::sleep(Duration::from_secs(seconds.into()));
                            let mut result = Ok(None);
                            // QEMU publishes the result just after the period: ask often,
                            // since the migration waits for it.
                            for _ in 0..40 {
                                result = domain.dirty_rate_mib_s().map_err(|err| err.to_string());
                                if !matches!(result, Ok(None)) {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            let _ = reply.send(result.map(|mib| mib.map(|m| m << 20)));
                        });
                if let Err(err) = spawned {
                    tracing::warn!(error = %err, "cannot start the dirty-rate thread");
                }
            }
            Command::Abort { vm_uuid, reply } => {
                let result = conn
                    .domain(&vm_uuid)
                    .and_then(|domain| domain.abort_job())
                    .map_err(|err| err.to_string());
                let _ = reply.send(result);
            }
            Command::Track { vm_uuid } => {
                self.tracked.insert(vm_uuid);
            }
        }
    }

    /// Answers a command that needs a connection while there is none.
    fn refuse_disconnected(&mut self, command: Command) {
        let why = format!(
            "host {} is not connected; Converge is reconnecting",
            self.config.name
        );
        match command {
            Command::Track { vm_uuid } => {
                self.tracked.insert(vm_uuid);
            }
            Command::Migrate { reply, .. }
            | Command::Abort { reply, .. }
            | Command::Pause { reply, .. } => {
                let _ = reply.send(Err(why));
            }
            Command::Lever { reply, .. } | Command::MeasureDirtyRate { reply, .. } => {
                let _ = reply.send(Err(why));
            }
        }
    }

    fn on_returned(
        &mut self,
        vm_uuid: String,
        result: Result<(), converge_libvirt::Error>,
        connection_lost: bool,
    ) {
        self.in_flight.remove(&vm_uuid);
        let lost = result.is_err() && connection_lost;
        if !lost {
            // Finished either way; a lost connection leaves it tracked so the next
            // connection finds out how it really ended.
            self.tracked.remove(&vm_uuid);
        }
        self.report(Report::MigrateReturned(MigrateReturnedReport {
            host: self.config.name.clone(),
            vm_uuid,
            result: result.map_err(|err| err.to_string()),
            connection_lost: lost,
        }));
    }

    fn job_ended(&mut self, uuid: &str, completed: Option<JobStats>, domain_gone: bool) {
        self.tracked.remove(uuid);
        self.report(Report::JobEnded(JobEndedReport {
            host: self.config.name.clone(),
            vm_uuid: uuid.to_owned(),
            completed,
            domain_gone,
        }));
    }

    fn report_sample(
        &self,
        uuid: &str,
        name: &str,
        stats: JobStats,
        iteration_started: Option<u32>,
        levers: Levers,
    ) {
        self.report(Report::Sample(SampleReport {
            host: self.config.name.clone(),
            vm_uuid: uuid.to_owned(),
            vm_name: name.to_owned(),
            stats,
            at: OffsetDateTime::now_utc(),
            iteration_started,
            levers,
        }));
    }

    fn report_down(&self, error: String) {
        self.report(Report::Connection(ConnectionReport {
            host: self.config.name.clone(),
            connected: false,
            error: Some(error),
            hostname: None,
            libvirt_version: None,
        }));
    }

    fn report(&self, report: Report) {
        // The fleet task ends only at shutdown; nothing to do if it is gone.
        let _ = self.reports.send(report);
    }
}

/// The levers' values: downtime and bandwidth asked of libvirt, the xbzrle cache from the
/// job statistics (present only when xbzrle is on).
fn read_levers(domain: &converge_libvirt::Domain, stats: &JobStats) -> Levers {
    Levers {
        downtime_limit_ms: domain.max_downtime_ms().ok(),
        // libvirt reports "unlimited" as about 8 PiB/s.
        bandwidth_mib_s: domain
            .max_speed_mib_s()
            .ok()
            .filter(|&v| v <= converge_api::MAX_BANDWIDTH_MIB_S),
        xbzrle_cache_bytes: stats.u64("compression_cache"),
    }
}

/// Moves one lever and reads its value back from libvirt.
fn apply_lever(
    domain: &converge_libvirt::Domain,
    change: LeverChange,
) -> Result<Option<u64>, converge_libvirt::Error> {
    Ok(match change {
        LeverChange::DowntimeLimit { ms } => {
            domain.set_max_downtime_ms(ms)?;
            Some(domain.max_downtime_ms()?)
        }
        LeverChange::Bandwidth { mib_s } => {
            domain.set_max_speed_mib_s(mib_s)?;
            Some(domain.max_speed_mib_s()?)
        }
        LeverChange::XbzrleCache { bytes } => {
            domain.set_xbzrle_cache_bytes(bytes)?;
            Some(domain.xbzrle_cache_bytes()?)
        }
        LeverChange::PostCopy => {
            domain.start_postcopy()?;
            None
        }
    })
}

fn is_outgoing_migration(stats: &JobStats) -> bool {
    stats.kind.is_active() && stats.i64("operation") == Some(OPERATION_MIGRATION_OUT)
}
