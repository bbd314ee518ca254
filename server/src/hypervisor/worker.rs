//! One host: a control thread that never calls libvirt, and the threads that do.
//!
//! libvirt calls block, some for long: on the destination of a migration,
//! `virDomainGetXMLDesc`, `virDomainMigrateGetMaxDowntime` and `virConnectGetAllDomainStats`
//! wait for the domain's job lock, held by the incoming migration, 30 s and then fail
//! (measured: `scripts/probe-libvirt-locks`); a daemon that is frozen answers nothing.
//! So no queue is shared by calls that may wait:
//!
//! - the **control** thread (this file) owns the connection's life (connecting happens on a
//!   thread of its own), routes libvirt's events, hands each command to a thread of its
//!   own, and runs the watchdog; it never waits on libvirt;
//! - a **watch** thread per outgoing migration samples it at the configured interval and
//!   at each pass boundary (`watch.rs`): one slow domain delays no other;
//! - the **inventory** thread lists the domains (`inventory.rs`), never asking for the XML;
//! - a **command** thread per lever, abort, pause, measurement or start (`commands.rs`).
//!
//! Every call is registered while in flight (`calls.rs`): one unanswered for longer than
//! the bound makes the host degraded, with the call named, until libvirt answers.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use converge_libvirt::{Connection, DomainEvent, DomainEventKind, EventSubscription, JobStats};
use tokio::sync::mpsc as tokio_mpsc;
use tokio_util::sync::CancellationToken;

use super::calls::Calls;
use super::{
    Command, ConnectionReport, HealthReport, JobEndedReport, MigrateReturnedReport, Report,
};
use crate::config::HostConfig;

/// First wait before reconnecting; doubles up to the configured maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest any of the host's loops sleeps before checking for shutdown.
pub(super) const MAX_IDLE: Duration = Duration::from_millis(200);
/// How often the watchdog looks at the calls in flight.
const WATCHDOG_EVERY: Duration = Duration::from_millis(500);
/// `VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT`: the jobs Converge samples.
pub(super) const OPERATION_MIGRATION_OUT: i64 = 5;

/// What reaches the control thread.
pub(super) enum Msg {
    /// A request from the server.
    Command(Command),
    /// A libvirt event, from the connection of generation `generation`.
    Event { generation: u64, event: DomainEvent },
    /// libvirt closed connection `generation`, or a call found it dead.
    Closed { generation: u64, reason: String },
    /// A connection attempt ended.
    Connected(Result<Box<Session>, converge_libvirt::Error>),
    /// A migrate call made here returned.
    Returned {
        vm_uuid: String,
        result: Result<(), converge_libvirt::Error>,
    },
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Command(_) => "Command",
            Msg::Event { .. } => "Event",
            Msg::Closed { .. } => "Closed",
            Msg::Connected(_) => "Connected",
            Msg::Returned { .. } => "Returned",
        })
    }
}

/// A live connection and what came with it.
pub(super) struct Session {
    conn: Arc<Connection>,
    _events: EventSubscription,
    generation: u64,
    hostname: Option<String>,
    libvirt_version: Option<String>,
}

/// How often the workers do what.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) sample_every: Duration,
    pub(super) scan_every: Duration,
    pub(super) max_backoff: Duration,
}

/// What every thread of one host shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: HostConfig,
    pub(super) timing: Timing,
    pub(super) shutdown: CancellationToken,
    pub(super) calls: Calls,
    reports: tokio_mpsc::UnboundedSender<Report>,
    control: mpsc::Sender<Msg>,
    /// The live connection, and its generation.
    conn: RwLock<Option<(u64, Arc<Connection>)>>,
    /// Outgoing migrations being watched: the sender to each one's thread, by UUID.
    /// Dropping a sender ends its thread.
    watches: Mutex<HashMap<String, mpsc::Sender<u32>>>,
    /// Domains whose migrate call (made here) has not returned yet.
    in_flight: Mutex<BTreeSet<String>>,
    /// Wakes the inventory thread for a refresh now.
    pub(super) refresh: Mutex<Option<mpsc::Sender<()>>>,
}

impl Shared {
    /// The live connection and its generation, if any.
    pub(super) fn conn(&self) -> Option<(u64, Arc<Connection>)> {
        self.conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Tells the control thread that connection `generation` looks dead (a call failed
    /// and libvirt says it is not alive).
    pub(super) fn check_alive(
        &self,
        generation: u64,
        conn: &Connection,
        err: &converge_libvirt::Error,
    ) {
        if !conn.is_alive() {
            let _ = self.control.send(Msg::Closed {
                generation,
                reason: err.to_string(),
            });
        }
    }

    pub(super) fn report(&self, report: Report) {
        // The fleet task ends only at shutdown; nothing to do if it is gone.
        let _ = self.reports.send(report);
    }

    pub(super) fn is_watched(&self, uuid: &str) -> bool {
        self.lock_watches().contains_key(uuid)
    }

    /// Starts watching `uuid`'s outgoing migration, unless it is watched already.
    pub(super) fn watch(self: &Arc<Self>, uuid: &str) {
        let mut watches = self.lock_watches();
        if !watches.contains_key(uuid) {
            let boundaries = super::watch::spawn(self.clone(), uuid.to_owned());
            watches.insert(uuid.to_owned(), boundaries);
        }
    }

    /// Hands a pass boundary to `uuid`'s watch, starting one if needed.
    fn boundary(self: &Arc<Self>, uuid: &str, iteration: u32) {
        self.watch(uuid);
        if let Some(watch) = self.lock_watches().get(uuid) {
            let _ = watch.send(iteration);
        }
    }

    /// Sends `report` about `uuid` only while it is watched: decided under the same lock
    /// as the watch's end, so no sample of a migration follows the report of its end.
    pub(super) fn report_if_watched(&self, uuid: &str, report: Report) -> bool {
        let watches = self.lock_watches();
        let watched = watches.contains_key(uuid);
        if watched {
            self.report(report);
        }
        watched
    }

    /// Ends `uuid`'s watch and sends `report` (its end) under one lock; `false` (nothing
    /// sent) when it was not watched.
    pub(super) fn end_watch(&self, uuid: &str, report: Report) -> bool {
        let mut watches = self.lock_watches();
        let watched = watches.remove(uuid).is_some();
        if watched {
            self.report(report);
        }
        watched
    }

    pub(super) fn in_flight(&self, uuid: &str) -> bool {
        self.lock_in_flight().contains(uuid)
    }

    pub(super) fn set_in_flight(&self, uuid: &str, in_flight: bool) {
        let mut set = self.lock_in_flight();
        if in_flight {
            set.insert(uuid.to_owned());
        } else {
            set.remove(uuid);
        }
    }

    /// The control thread's inbox, for threads that report back to it.
    pub(super) fn control(&self) -> mpsc::Sender<Msg> {
        self.control.clone()
    }

    /// A job of `uuid` ended (or its domain left the host).
    pub(super) fn job_ended(&self, uuid: &str, completed: Option<JobStats>, domain_gone: bool) {
        let report = Report::JobEnded(JobEndedReport {
            host: self.config.name.clone(),
            vm_uuid: uuid.to_owned(),
            completed,
            domain_gone,
        });
        self.end_watch(uuid, report);
    }

    fn lock_watches(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<u32>>> {
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts the host's control and inventory threads; returns the control thread's inbox
/// and its handle (none when it could not be started, which is logged). The control
/// thread ends at shutdown, after the inventory and watch threads it waits for.
pub(super) fn spawn(
    config: HostConfig,
    timing: Timing,
    reports: tokio_mpsc::UnboundedSender<Report>,
    shutdown: CancellationToken,
) -> (mpsc::Sender<Msg>, Option<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel();
    let name = config.name.clone();
    let shared = Arc::new(Shared {
        config,
        timing,
        shutdown,
        calls: Calls::default(),
        reports,
        control: tx.clone(),
        conn: RwLock::new(None),
        watches: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(BTreeSet::new()),
        refresh: Mutex::new(None),
    });
    let thread = std::thread::Builder::new()
        .name(format!("host-{name}"))
        .spawn(move || Control::new(shared, rx).run())
        .inspect_err(|err| {
            tracing::error!(host = %name, error = %err, "cannot start the host's control thread");
        })
        .ok();
    (tx, thread)
}

/// The control thread's own state.
struct Control {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    /// The live session, if connected.
    session: Option<Box<Session>>,
    /// A connection attempt is under way.
    connecting: bool,
    /// When to try connecting next.
    next_attempt: Instant,
    backoff: Duration,
    generation: u64,
    /// What the last health report said.
    degraded: Option<String>,
    next_watchdog: Instant,
}

impl Control {
    fn new(shared: Arc<Shared>, rx: mpsc::Receiver<Msg>) -> Self {
        let now = Instant::now();
        Self {
            shared,
            rx,
            session: None,
            connecting: false,
            next_attempt: now,
            backoff: FIRST_BACKOFF,
            generation: 0,
            degraded: None,
            next_watchdog: now,
        }
    }

    fn run(mut self) {
        let host = self.shared.config.name.clone();
        let inventory = super::inventory::spawn(self.shared.clone());
        while !self.shared.shutdown.is_cancelled() {
            let now = Instant::now();
            if self.session.is_none() && !self.connecting && now >= self.next_attempt {
                self.connect();
            }
            if now >= self.next_watchdog {
                self.watchdog(now);
                self.next_watchdog = now + WATCHDOG_EVERY;
            }
            match self.rx.recv_timeout(MAX_IDLE) {
                Ok(msg) => {
                    // A panic handling one message (a libvirt surprise) must not end the
                    // host for good.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.handle(msg);
                    }));
                    if handled.is_err() {
                        tracing::error!(%host, "the host's control thread panicked on a message; carrying on");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.disconnect();
        // The watches end once their senders are gone; the inventory at its next turn.
        let watches: Vec<_> = self.shared.lock_watches().drain().collect();
        drop(watches);
        if let Some(inventory) = inventory {
            let _ = inventory.join();
        }
        tracing::debug!(%host, "host worker stopped");
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connected(Ok(session)) => {
                self.connecting = false;
                self.backoff = FIRST_BACKOFF;
                self.install(session);
            }
            Msg::Connected(Err(err)) => {
                self.connecting = false;
                tracing::debug!(host = %self.shared.config.name, error = %err, "cannot connect");
                self.report_down(err.to_string());
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(self.shared.timing.max_backoff);
            }
            Msg::Closed { generation, reason } => {
                if self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.generation == generation)
                {
                    tracing::warn!(host = %self.shared.config.name, %reason, "lost the connection to the host; reconnecting");
                    self.disconnect();
                    self.report_down(reason);
                    self.next_attempt = Instant::now() + FIRST_BACKOFF;
                }
            }
            Msg::Event { generation, event } => {
                if self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.generation == generation)
                {
                    self.on_event(event);
                }
            }
            Msg::Command(command) => self.on_command(command),
            Msg::Returned { vm_uuid, result } => {
                let connection_lost = self.session.as_ref().is_none_or(|s| !s.conn.is_alive());
                self.on_returned(vm_uuid, result, connection_lost);
            }
        }
    }

    /// Starts a connection attempt on a thread of its own: opening a connection to a
    /// daemon that accepts but does not answer can take as long as its keepalive.
    fn connect(&mut self) {
        self.connecting = true;
        self.generation += 1;
        let generation = self.generation;
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("connect-{}", self.shared.config.name))
            .spawn(move || {
                let session = open_session(&shared, generation);
                let _ = shared.control.send(Msg::Connected(session));
            });
        if let Err(err) = spawned {
            self.connecting = false;
            tracing::error!(error = %err, "cannot start a connection thread");
        }
    }

    fn install(&mut self, session: Box<Session>) {
        tracing::info!(host = %self.shared.config.name, uri = %self.shared.config.uri, libvirt_version = ?session.libvirt_version, "connected to host");
        self.shared.report(Report::Connection(ConnectionReport {
            host: self.shared.config.name.clone(),
            connected: true,
            error: None,
            hostname: session.hostname.clone(),
            libvirt_version: session.libvirt_version.clone(),
        }));
        *self
            .shared
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((session.generation, session.conn.clone()));
        self.session = Some(session);
        self.refresh_now();
    }

    fn disconnect(&mut self) {
        *self
            .shared
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.session = None;
    }

    fn refresh_now(&self) {
        if let Some(refresh) = self
            .shared
            .refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            let _ = refresh.send(());
        }
    }

    /// Reports a change of the host's degraded state (the message says for how long, so
    /// it changes every second while it lasts).
    fn watchdog(&mut self, now: Instant) {
        let degraded = self.shared.calls.degraded(now);
        if degraded != self.degraded {
            if let Some(why) = &degraded
                && self.degraded.is_none()
            {
                tracing::warn!(host = %self.shared.config.name, %why, "host degraded");
            } else if degraded.is_none() {
                tracing::info!(host = %self.shared.config.name, "host answers again");
            }
            self.degraded = degraded.clone();
            self.shared.report(Report::Health(HealthReport {
                host: self.shared.config.name.clone(),
                degraded,
            }));
        }
    }

    fn on_event(&mut self, event: DomainEvent) {
        let host = self.shared.config.name.clone();
        match event.kind {
            DomainEventKind::MigrationIteration(iteration) => {
                // Read the job right at the boundary: remaining memory now is the dirty
                // set of the previous pass, the number that tells convergence.
                self.shared.boundary(&event.uuid, iteration);
            }
            DomainEventKind::JobCompleted(stats) => {
                if stats.i64("operation") == Some(OPERATION_MIGRATION_OUT)
                    || stats.get("operation").is_none()
                {
                    self.shared.report(Report::JobCompleted {
                        host,
                        vm_uuid: event.uuid,
                        stats,
                    });
                }
                self.refresh_now();
            }
            DomainEventKind::Lifecycle(lifecycle) => {
                self.shared.report(Report::Lifecycle {
                    host,
                    vm_uuid: event.uuid,
                    event: lifecycle,
                });
                self.refresh_now();
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        if let Command::Track { vm_uuid } = &command {
            // Watched whether or not connected: the watch waits for a connection.
            self.shared.watch(vm_uuid);
            return;
        }
        match &self.session {
            Some(session) => {
                let conn = (session.generation, session.conn.clone());
                super::commands::spawn(self.shared.clone(), conn, command);
            }
            None => super::commands::refuse_disconnected(&self.shared.config.name, command),
        }
    }

    fn on_returned(
        &mut self,
        vm_uuid: String,
        result: Result<(), converge_libvirt::Error>,
        connection_lost: bool,
    ) {
        self.shared.set_in_flight(&vm_uuid, false);
        let lost = result.is_err() && connection_lost;
        let cancelled = result
            .as_ref()
            .is_err_and(converge_libvirt::Error::is_aborted);
        let report = Report::MigrateReturned(MigrateReturnedReport {
            host: self.shared.config.name.clone(),
            vm_uuid: vm_uuid.clone(),
            result: result.map_err(|err| err.to_string()),
            connection_lost: lost,
            cancelled,
        });
        if !lost {
            // Finished either way; a lost connection leaves it watched so the next
            // connection finds out how it really ended. Unwatched before the report is
            // sent: no sample of this migration can follow it.
            self.shared.lock_watches().remove(&vm_uuid);
        }
        self.shared.report(report);
    }

    fn report_down(&self, error: String) {
        self.shared.report(Report::Connection(ConnectionReport {
            host: self.shared.config.name.clone(),
            connected: false,
            error: Some(error),
            hostname: None,
            libvirt_version: None,
        }));
    }
}

/// Opens a connection with its close callback and event subscription (on the connect
/// thread; registered with the watchdog as `virConnectOpen`).
fn open_session(shared: &Shared, generation: u64) -> Result<Box<Session>, converge_libvirt::Error> {
    let config = &shared.config;
    shared.calls.run("virConnectOpen", "", || {
        let mut conn = Connection::open(&config.uri)?;
        let closed = shared.control.clone();
        conn.on_close(move |reason| {
            let _ = closed.send(Msg::Closed {
                generation,
                reason: format!("libvirt closed the connection ({reason:?})"),
            });
        })?;
        let events = shared.control.clone();
        let subscription = conn.subscribe(move |event| {
            let _ = events.send(Msg::Event { generation, event });
        })?;
        Ok(Box::new(Session {
            hostname: conn.hostname().ok(),
            libvirt_version: conn.libvirt_version().ok(),
            conn: Arc::new(conn),
            _events: subscription,
            generation,
        }))
    })
}
