//! The shared, cheap-to-clone state every handler can extract from.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::SqlitePool;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::auth::{LoginThrottle, UserDirectory};
use crate::config::Config;
use crate::store;

/// Password checks allowed at once. Each argon2 check holds ~19 MiB and a core for tens of
/// milliseconds; a burst of sign-ins waits here instead of exhausting the machine.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// The wall clock, injectable so tests can move time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Everything handlers share; clones share the same parts.
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Accounts from the configuration.
    pub users: Arc<UserDirectory>,
    /// Failed sign-in bookkeeping.
    pub throttle: Arc<LoginThrottle>,
    /// The SQLite database.
    pub db: SqlitePool,
    /// Source of the current time.
    pub clock: Arc<dyn Clock>,
    pub(crate) password_checks: Arc<Semaphore>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or prepared.
    #[error("database {path}: {source}")]
    Database {
        /// The database file.
        path: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// A password hash in the configuration could not be used.
    #[error("user accounts: {0}")]
    Users(password_hash::Error),
}

impl AppState {
    /// Opens the database (creating it if needed) and builds the state for `config`.
    pub async fn open(config: Config) -> Result<Self, StartupError> {
        let db =
            store::open(&config.database.path)
                .await
                .map_err(|source| StartupError::Database {
                    path: config.database.path.display().to_string(),
                    source,
                })?;
        let users = UserDirectory::new(&config.users).map_err(StartupError::Users)?;
        Ok(Self {
            throttle: Arc::new(LoginThrottle::new(&config.login_throttle)),
            users: Arc::new(users),
            config: Arc::new(config),
            db,
            clock: Arc::new(SystemClock),
            password_checks: Arc::new(Semaphore::new(CONCURRENT_PASSWORD_CHECKS)),
        })
    }

    /// The same state reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
