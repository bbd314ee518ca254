//! The shared, cheap-to-clone state every handler can extract from.

use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use crate::auth::{LoginThrottle, PasswordChecks, Sessions, UserDirectory};
use crate::background::{self, Background};
use crate::clock::{Clock, SystemClock, unix_ms_now};
use crate::config::Config;
use crate::drain::Drains;
use crate::fleet::{Ceiling, Executor, Fleet, FleetState};
use crate::hub::Hub;
use crate::hypervisor::Hypervisors;
use crate::kiosk::KioskTokens;
use crate::store::{self, Store};

/// Password checks allowed at once. Each argon2 check holds ~19 MiB and a core for tens of
/// milliseconds; a burst of sign-ins waits for one instead of exhausting the machine.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;
/// Sign-ins that may wait for a check slot; more are refused at once (429). Sixteen
/// waiting behind four slots is a few hundred milliseconds.
const PASSWORD_CHECK_LINE: usize = 16;

/// Everything handlers share; clones share the same parts.
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Accounts from the configuration.
    pub users: Arc<UserDirectory>,
    /// Failed sign-in bookkeeping.
    pub throttle: Arc<LoginThrottle>,
    /// The database.
    pub store: Store,
    /// Source of the current time.
    pub clock: Arc<dyn Clock>,
    /// Hosts, VMs and migrations.
    pub fleet: Fleet,
    /// Carries out starts, levers and aborts (the policy's too).
    pub executor: Executor,
    /// The live event hub.
    pub hub: Arc<Hub>,
    /// One worker per libvirt host.
    pub hypervisors: Arc<Hypervisors>,
    /// Cancelled when the server shuts down: live streams end, host workers stop.
    pub shutdown: CancellationToken,
    /// Where host workers send their reports; a simulated source (benchmarks) may too.
    pub reports: tokio::sync::mpsc::UnboundedSender<crate::hypervisor::Report>,
    /// Argon2 checks: slots, their memory, and the line in front of them.
    pub password_checks: Arc<PasswordChecks>,
    /// Sessions: the store every request goes through, and the registry of live streams.
    pub sessions: Sessions,
    /// Kiosk tokens, checked on every kiosk request and stream.
    pub kiosk: Arc<KioskTokens>,
    /// Host drains.
    pub drains: Drains,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or prepared.
    #[error("database {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// What the database said.
        source: store::Error,
    },
    /// A password hash in the configuration could not be used.
    #[error("user accounts: {0}")]
    Users(password_hash::Error),
    /// libvirt could not be initialised.
    #[error("libvirt: {0}")]
    Libvirt(converge_libvirt::Error),
}

/// A controller ready to serve: the state its handlers share, and the background work it
/// owns (which `serve` shuts down).
#[derive(Debug)]
pub struct Controller {
    /// What handlers share.
    pub state: AppState,
    /// The background tasks.
    pub background: Background,
}

impl Controller {
    /// Opens the database (creating it if needed), takes back migrations that were running
    /// when the server last stopped, and starts one worker per configured host and the
    /// background work.
    pub async fn open(config: Config) -> Result<Self, StartupError> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Self::open`] with time read from `clock`.
    pub async fn open_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let db_error = |source| StartupError::Database {
            path: config.database.path.display().to_string(),
            source,
        };
        let store = Store::open(&config.database.path).await.map_err(db_error)?;
        let users = UserDirectory::new(&config.users).map_err(StartupError::Users)?;
        let unfinished = store.active_migrations().await.map_err(db_error)?;

        let shutdown = CancellationToken::new();
        let hub = Arc::new(Hub::new(config.events.replay_buffer));
        let kiosk = KioskTokens::load(&store).await.map_err(db_error)?;
        let mut fleet_state = FleetState::new(
            config.hosts.iter().map(|h| h.name.as_str()),
            unix_ms_now(&*clock),
        )
        .with_projects(&config.projects)
        .with_ceiling(Ceiling {
            max_ms: i64::try_from(config.migrations.max_duration_s.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            action: config.migrations.max_duration_action,
        });
        let to_track = fleet_state.restore(unfinished);
        let (fleet, queues) = Fleet::new(fleet_state, hub.clone(), clock.clone());
        let (reports, incoming) = tokio::sync::mpsc::unbounded_channel();
        let hypervisors = Hypervisors::start(&config, reports.clone(), shutdown.clone())
            .map_err(StartupError::Libvirt)?;
        for (host, vm_uuid) in to_track {
            if let Some(handle) = hypervisors.get(&host) {
                handle.track(vm_uuid);
            }
        }
        let hypervisors = Arc::new(hypervisors);
        let executor = Executor::new(fleet.clone(), hypervisors.clone(), store.clone());
        let sessions = Sessions::new(&store);
        let drains = Drains::open(
            fleet.clone(),
            executor.clone(),
            store.clone(),
            config.hosts.clone(),
            crate::presets::all(&config.presets),
            config.migrations.default_preset.clone(),
        )
        .await
        .map_err(db_error)?;
        let background = Background::start(background::Parts {
            stop: shutdown.clone(),
            fleet: fleet.clone(),
            queues,
            reports: incoming,
            executor: executor.clone(),
            store: store.clone(),
            sessions: sessions.clone(),
            session_check: std::time::Duration::from_secs(config.events.session_check_s),
            dirty_rate: config.dirty_rate.clone(),
            drains: drains.clone(),
        });
        let state = AppState {
            throttle: Arc::new(LoginThrottle::new(&config.login_throttle)),
            config: Arc::new(config),
            store,
            clock,
            fleet,
            executor,
            hub,
            hypervisors,
            shutdown,
            reports,
            password_checks: Arc::new(PasswordChecks::new(
                CONCURRENT_PASSWORD_CHECKS,
                PASSWORD_CHECK_LINE,
                &users,
            )),
            kiosk: Arc::new(kiosk),
            sessions,
            users: Arc::new(users),
            drains,
        };
        Ok(Self { state, background })
    }
}
