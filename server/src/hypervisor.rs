//! The libvirt side: each host's workers keep every blocking libvirt call off the async
//! executor and off each other's way (see `worker.rs`), reconnect with backoff, sample
//! running migrations and turn libvirt's events into [`Report`]s for the fleet.

mod calls;
mod commands;
mod inventory;
mod sample;
mod watch;
mod worker;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use converge_api::{LeverChange, Levers};
use converge_libvirt::{DomainSummary, JobStats, LifecycleEvent, MigrationRequest};
use time::OffsetDateTime;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use sample::{final_stats, raw_fields, sample_from};

use crate::config::{Config, HostConfig};

/// What a host worker tells the fleet.
#[derive(Debug)]
pub enum Report {
    /// Connected, or the connection failed or dropped.
    Connection(ConnectionReport),
    /// The host's domains, listed.
    Domains {
        /// Which host.
        host: String,
        /// Every domain.
        domains: Vec<DomainSummary>,
    },
    /// A job-statistics reading of an outgoing migration.
    Sample(SampleReport),
    /// A tracked job is no longer running.
    JobEnded(JobEndedReport),
    /// libvirt's job-completed event, with the final statistics.
    JobCompleted {
        /// The host that sent the event.
        host: String,
        /// The domain.
        vm_uuid: String,
        /// Final statistics.
        stats: JobStats,
    },
    /// A lifecycle event.
    Lifecycle {
        /// The host that sent the event.
        host: String,
        /// The domain.
        vm_uuid: String,
        /// What happened.
        event: LifecycleEvent,
    },
    /// The blocking migrate call of a migration Converge started has returned.
    MigrateReturned(MigrateReturnedReport),
    /// A libvirt call of the host has gone unanswered too long, or answers again.
    Health(HealthReport),
    /// The host's free memory, read with its VM list.
    Memory {
        /// Which host.
        host: String,
        /// Memory free, bytes.
        free_bytes: u64,
    },
}

/// Whether a host's libvirt answers.
#[derive(Debug)]
pub struct HealthReport {
    /// Which host.
    pub host: String,
    /// `degraded: libvirt has not answered <call> for N s`, or `None` once it answers.
    pub degraded: Option<String>,
}

/// A host's connection: up, or failed or dropped.
#[derive(Debug)]
pub struct ConnectionReport {
    /// Which host.
    pub host: String,
    /// Connected now?
    pub connected: bool,
    /// Why not, when not.
    pub error: Option<String>,
    /// The daemon's host name, when connected.
    pub hostname: Option<String>,
    /// The daemon's libvirt version, when connected.
    pub libvirt_version: Option<String>,
}

/// A job-statistics reading of an outgoing migration.
#[derive(Debug)]
pub struct SampleReport {
    /// Source host.
    pub host: String,
    /// The domain.
    pub vm_uuid: String,
    /// Its name.
    pub vm_name: String,
    /// The reading.
    pub stats: JobStats,
    /// When it was read.
    pub at: OffsetDateTime,
    /// Set when this reading was taken because a new pre-copy pass began.
    pub iteration_started: Option<u32>,
    /// The levers' values as libvirt reports them.
    pub levers: Levers,
}

/// A tracked job is no longer running.
#[derive(Debug)]
pub struct JobEndedReport {
    /// Source host.
    pub host: String,
    /// The domain.
    pub vm_uuid: String,
    /// The last job's statistics, if libvirt kept them (`VIR_DOMAIN_JOB_STATS_COMPLETED`).
    pub completed: Option<JobStats>,
    /// The domain no longer exists on the source (undefined after a migration).
    pub domain_gone: bool,
}

/// The blocking migrate call of a migration Converge started has returned.
#[derive(Debug)]
pub struct MigrateReturnedReport {
    /// Source host.
    pub host: String,
    /// The domain.
    pub vm_uuid: String,
    /// `Err(message)` when libvirt reported failure or abort.
    pub result: Result<(), String>,
    /// The call ended because the connection to the source dropped, so the outcome is
    /// not known from it.
    pub connection_lost: bool,
    /// libvirt says the job was cancelled (an abort, from Converge or anyone else).
    pub cancelled: bool,
}

impl Report {
    /// The VM the report is about, if it is about one.
    pub fn vm_uuid(&self) -> Option<&str> {
        match self {
            Report::Connection(_)
            | Report::Domains { .. }
            | Report::Health(_)
            | Report::Memory { .. } => None,
            Report::Sample(SampleReport { vm_uuid, .. })
            | Report::JobEnded(JobEndedReport { vm_uuid, .. })
            | Report::JobCompleted { vm_uuid, .. }
            | Report::Lifecycle { vm_uuid, .. }
            | Report::MigrateReturned(MigrateReturnedReport { vm_uuid, .. }) => Some(vm_uuid),
        }
    }
}

/// How long a command waits for libvirt's answer before it is answered "no answer"
/// (the host is shown degraded after `calls::DEGRADED_AFTER` already). A healthy host
/// answers in tens of milliseconds.
const COMMAND_BOUND: Duration = Duration::from_secs(10);

/// A request to a host worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start a migration of `vm_uuid` and keep sampling it; set the downtime limit first.
    Migrate {
        vm_uuid: String,
        request: Box<MigrationRequest>,
        downtime_limit_ms: Option<u64>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Move a lever of the running migration of `vm_uuid`; answers the read-back value.
    Lever {
        vm_uuid: String,
        change: LeverChange,
        reply: oneshot::Sender<Result<Option<u64>, String>>,
    },
    /// Measure the guest's dirty rate over `seconds` (answers bytes/s, or none when
    /// libvirt could not measure it).
    MeasureDirtyRate {
        vm_uuid: String,
        seconds: u32,
        reply: oneshot::Sender<Result<Option<u64>, String>>,
    },
    /// Pause (`true`) or resume the guest.
    Pause {
        vm_uuid: String,
        pause: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Abort the running job of `vm_uuid`.
    Abort {
        vm_uuid: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Watch `vm_uuid`'s job: sample it while it runs, report when it ends (used for
    /// migrations that were running when the server last stopped).
    Track { vm_uuid: String },
}

/// Why a host did not do what was asked: the typed boundary between the domain and the
/// host workers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The server is shutting down; the host's worker is gone.
    #[error("host {host} is shutting down")]
    ShuttingDown {
        /// The host.
        host: String,
    },
    /// The worker dropped the request without answering.
    #[error("host {host} did not answer")]
    NoAnswer {
        /// The host.
        host: String,
    },
    /// The worker took the request, but libvirt has not answered within the bound; the
    /// call may still complete later.
    #[error("host {host}: libvirt has not answered {what} within {seconds} s")]
    NoAnswerWithin {
        /// The host.
        host: String,
        /// What was asked.
        what: &'static str,
        /// The bound.
        seconds: u64,
    },
    /// No host of that name is configured.
    #[error("there is no host {host}")]
    Unknown {
        /// The name asked for.
        host: String,
    },
    /// libvirt refused, or the host cannot take the request now (not connected, no such
    /// domain): the reason in words.
    #[error("{message}")]
    Refused {
        /// The host.
        host: String,
        /// What libvirt or the worker said.
        message: String,
    },
}

/// The handle to one host's worker.
#[derive(Debug, Clone)]
pub struct HostHandle {
    /// The configuration of the host.
    pub config: HostConfig,
    tx: mpsc::Sender<worker::Msg>,
}

impl HostHandle {
    /// Sends a command and waits for libvirt's answer, at most `bound`.
    async fn ask<T>(
        &self,
        what: &'static str,
        bound: Duration,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, HostError> {
        let host = || self.config.name.clone();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(worker::Msg::Command(make(reply)))
            .map_err(|_| HostError::ShuttingDown { host: host() })?;
        tokio::time::timeout(bound, answer)
            .await
            .map_err(|_| HostError::NoAnswerWithin {
                host: host(),
                what,
                seconds: bound.as_secs(),
            })?
            .map_err(|_| HostError::NoAnswer { host: host() })?
            .map_err(|message| HostError::Refused {
                host: host(),
                message,
            })
    }

    /// Starts a migration (returns once libvirt accepted the domain; the migration then
    /// runs on its own thread), with the downtime limit set first.
    pub async fn migrate(
        &self,
        vm_uuid: String,
        request: MigrationRequest,
        downtime_limit_ms: Option<u64>,
    ) -> Result<(), HostError> {
        self.ask("the start of the migration", COMMAND_BOUND, |reply| {
            Command::Migrate {
                vm_uuid,
                request: Box::new(request),
                downtime_limit_ms,
                reply,
            }
        })
        .await
    }

    /// Moves a lever; returns the value libvirt reports afterwards.
    pub async fn lever(
        &self,
        vm_uuid: String,
        change: LeverChange,
    ) -> Result<Option<u64>, HostError> {
        self.ask("the lever", COMMAND_BOUND, |reply| Command::Lever {
            vm_uuid,
            change,
            reply,
        })
        .await
    }

    /// Measures the guest's dirty rate over `seconds`, bytes/s (`None` when unsupported).
    pub async fn measure_dirty_rate(
        &self,
        vm_uuid: String,
        seconds: u32,
    ) -> Result<Option<u64>, HostError> {
        let bound = COMMAND_BOUND + Duration::from_secs(seconds.into());
        self.ask("the dirty-rate measurement", bound, |reply| {
            Command::MeasureDirtyRate {
                vm_uuid,
                seconds,
                reply,
            }
        })
        .await
    }

    /// Pauses or resumes the guest.
    pub async fn pause(&self, vm_uuid: String, pause: bool) -> Result<(), HostError> {
        self.ask("the pause or resume", COMMAND_BOUND, |reply| {
            Command::Pause {
                vm_uuid,
                pause,
                reply,
            }
        })
        .await
    }

    /// Aborts the domain's running job.
    pub async fn abort(&self, vm_uuid: String) -> Result<(), HostError> {
        self.ask("the abort", COMMAND_BOUND, |reply| Command::Abort {
            vm_uuid,
            reply,
        })
        .await
    }

    /// Starts watching a domain's job.
    pub fn track(&self, vm_uuid: String) {
        let _ = self
            .tx
            .send(worker::Msg::Command(Command::Track { vm_uuid }));
    }
}

/// All hosts' workers, by host name.
#[derive(Debug, Default)]
pub struct Hypervisors {
    hosts: BTreeMap<String, HostHandle>,
    /// The workers' threads, taken by whoever waits for them at shutdown.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Hypervisors {
    /// Starts one worker thread per configured host. Workers stop when `shutdown` is
    /// cancelled.
    pub fn start(
        config: &Config,
        reports: tokio_mpsc::UnboundedSender<Report>,
        shutdown: CancellationToken,
    ) -> Result<Self, converge_libvirt::Error> {
        if config.hosts.is_empty() {
            return Ok(Self::default());
        }
        converge_libvirt::init()?;
        let timing = worker::Timing {
            sample_every: Duration::from_millis(config.sampler.interval_ms),
            scan_every: Duration::from_millis(config.sampler.vm_refresh_ms),
            max_backoff: Duration::from_secs(config.sampler.max_reconnect_backoff_s),
        };
        let mut hosts = BTreeMap::new();
        let mut threads = Vec::new();
        for host in &config.hosts {
            let (tx, thread) =
                worker::spawn(host.clone(), timing, reports.clone(), shutdown.clone());
            threads.extend(thread);
            let handle = HostHandle {
                config: host.clone(),
                tx,
            };
            hosts.insert(host.name.clone(), handle);
        }
        Ok(Self {
            hosts,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// The workers' threads, once (they end when the shutdown token is cancelled; a
    /// migration's own thread, blocked in libvirt, is not among them).
    pub fn take_threads(&self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The host called `name`.
    pub fn get(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.get(name)
    }

    /// Every host's handle, by name.
    pub fn handles(&self) -> impl Iterator<Item = (&str, &HostHandle)> {
        self.hosts
            .iter()
            .map(|(name, handle)| (name.as_str(), handle))
    }
}
