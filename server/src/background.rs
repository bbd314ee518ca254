//! The server's background work, owned by one value made at start-up and shut down by
//! `serve` in order, each step bounded:
//!
//! 1. the stop is signalled: live streams end, host workers stop asking libvirt;
//! 2. the host reports already queued are applied, then that loop ends;
//! 3. dirty-rate measurements stop (a reading under way is dropped); starts and actions
//!    under way finish (their records and audit rows are completed),
//!    no queued one is begun;
//! 4. the migrations under way are written as they stand, with their latest sample;
//!    the history's queued writes land, then its writer ends;
//! 5. the host worker threads are joined.
//!
//! Nothing here is spawned by a constructor and forgotten: every task's handle is kept
//! and awaited.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Sessions;
use crate::config::DirtyRateConfig;
use crate::drain::Drains;
use crate::fleet::{Executor, Fleet, Queues, measure_dirty_rates, write_history};
use crate::hypervisor::Report;
use crate::store::Store;

/// How long each shutdown step may take before it is given up (and logged).
const STEP_BOUND: Duration = Duration::from_secs(10);

/// How often sessions past their expiry are deleted from the database.
const EXPIRED_SESSION_SWEEP: Duration = Duration::from_secs(600);

/// The running background tasks.
#[derive(Debug)]
pub struct Background {
    stop: CancellationToken,
    fleet: Fleet,
    executor: Executor,
    reports: JoinHandle<()>,
    actions: JoinHandle<()>,
    history: JoinHandle<()>,
    sessions: JoinHandle<()>,
    dirty_rates: JoinHandle<()>,
    drains: JoinHandle<()>,
    drain_service: Drains,
}

/// What the background work runs on.
#[derive(Debug)]
pub struct Parts {
    /// Cancelled to stop (the server's shutdown token).
    pub stop: CancellationToken,
    /// The fleet.
    pub fleet: Fleet,
    /// Its queues.
    pub queues: Queues,
    /// Where host reports arrive.
    pub reports: mpsc::UnboundedReceiver<Report>,
    /// Carries out queued actions.
    pub executor: Executor,
    /// The database, for the history.
    pub store: Store,
    /// Sessions, whose lapsed streams are ended every `session_check`.
    pub sessions: Sessions,
    /// How often the sessions of live streams are checked.
    pub session_check: Duration,
    /// How the guests' dirty rates are measured.
    pub dirty_rate: DirtyRateConfig,
    /// Host drains, run step by step.
    pub drains: Drains,
}

impl Background {
    /// Starts every background task.
    pub fn start(parts: Parts) -> Self {
        let Parts {
            stop,
            fleet,
            queues,
            reports,
            executor,
            store,
            sessions,
            session_check,
            dirty_rate,
            drains,
        } = parts;
        Self {
            drains: tokio::spawn(drains.clone().run(stop.clone())),
            drain_service: drains,
            dirty_rates: tokio::spawn(measure_dirty_rates(
                fleet.clone(),
                executor.hypervisors().clone(),
                dirty_rate,
                stop.clone(),
            )),
            reports: tokio::spawn(fleet.clone().run(reports, stop.clone())),
            actions: tokio::spawn(executor.clone().run(queues.acts, stop.clone())),
            history: tokio::spawn(write_history(queues.history, store)),
            sessions: tokio::spawn(sweep_sessions(sessions, session_check, stop.clone())),
            stop,
            fleet,
            executor,
        }
    }

    /// Stops everything in order (see the module's note) and waits for it, each step
    /// at most [`STEP_BOUND`].
    pub async fn shutdown(self) {
        self.stop.cancel();
        bounded("applying the last host reports", self.reports).await;
        bounded("taking no more queued actions", self.actions).await;
        // No drain starts anything more; what it did is saved at each step.
        bounded("the drains' steps", self.drains).await;
        let drains = self.drain_service.clone();
        bounded(
            "the drains' starts and actions under way",
            tokio::spawn(async move { drains.finish().await }),
        )
        .await;
        let executor = self.executor.clone();
        bounded(
            "finishing the starts and actions under way",
            tokio::spawn(async move { executor.finish().await }),
        )
        .await;
        bounded("the session sweep", self.sessions).await;
        bounded("the dirty-rate measurements", self.dirty_rates).await;
        // Nothing that changes the fleet runs any more: write the migrations under way as
        // they stand (with their latest sample), then close the history after its last
        // write.
        self.fleet.update(|fleet, _| fleet.snapshot_active());
        self.fleet.close_history();
        bounded("writing the history's last changes", self.history).await;
        let threads = self.executor.hypervisors().take_threads();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        bounded("stopping the host workers", joined).await;
    }
}

/// Awaits `task`, at most [`STEP_BOUND`]; logs a step that took longer or failed.
async fn bounded<T>(step: &str, task: impl Future<Output = Result<T, tokio::task::JoinError>>) {
    match tokio::time::timeout(STEP_BOUND, task).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!(step, error = %err, "a shutdown step failed"),
        Err(_) => tracing::error!(
            step,
            bound_s = STEP_BOUND.as_secs(),
            "a shutdown step did not finish within its bound"
        ),
    }
}

/// Ends the live streams of sessions that expired (often), and deletes expired sessions'
/// rows (rarely), until `stop`.
async fn sweep_sessions(sessions: Sessions, streams_every: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(streams_every);
    let mut last_delete = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(err) = sessions.end_streams_of_lapsed_sessions().await {
            tracing::warn!(error = %err, "could not check the sessions of live streams");
        }
        if last_delete.elapsed() >= EXPIRED_SESSION_SWEEP {
            last_delete = std::time::Instant::now();
            if let Err(err) = sessions.delete_expired().await {
                tracing::warn!(error = %err, "could not delete expired sessions");
            }
        }
    }
}
