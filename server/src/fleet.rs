//! The fleet: hosts, VMs and migrations in memory, fed by the host workers, read by the
//! handlers, published to the hub and written to the database.

mod record;
mod state;

use std::sync::{Arc, RwLock, RwLockReadGuard};

use converge_api::Migration;
use tokio::sync::{mpsc, oneshot};

pub use state::{Change, FleetState, Refusal, StartPlan, new_id};

use crate::hub::{Audience, Hub};
use crate::hypervisor::Report;
use crate::state::Clock;
use crate::store;

/// Shared access to the fleet, plus where its changes go.
#[derive(Debug, Clone)]
pub struct Fleet {
    state: Arc<RwLock<FleetState>>,
    hub: Arc<Hub>,
    persist: mpsc::UnboundedSender<Persist>,
    clock: Arc<dyn Clock>,
}

/// A write for the persistence task; `done` is answered once it is on disk.
#[derive(Debug)]
struct Persist {
    migration: Migration,
    done: Option<oneshot::Sender<Result<(), sqlx::Error>>>,
}

impl Fleet {
    /// Builds the fleet and starts its persistence task (writes happen in the order the
    /// changes were made, so a migration's last state on disk is its last state).
    pub fn start(
        state: FleetState,
        hub: Arc<Hub>,
        db: sqlx::SqlitePool,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (persist, mut queue) = mpsc::unbounded_channel::<Persist>();
        tokio::spawn(async move {
            // Runs until every sender is gone, so writes queued before shutdown land.
            while let Some(Persist { migration, done }) = queue.recv().await {
                let result = store::save_migration(&db, &migration).await;
                if let Err(err) = &result {
                    tracing::error!(migration = %migration.id, error = %err, "cannot save a migration");
                }
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
        });
        Self {
            state: Arc::new(RwLock::new(state)),
            hub,
            persist,
            clock,
        }
    }

    /// Reads the fleet. Keep the guard short; never hold it across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, FleetState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the fleet and publishes what changed, under one lock so that viewers see
    /// changes in the order they were made. Returns the migrations to persist.
    pub fn update<T>(&self, change: impl FnOnce(&mut FleetState, i64) -> T) -> T
    where
        T: Changes,
    {
        let now_ms = crate::hypervisor::unix_ms_now(&*self.clock);
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = change(&mut state, now_ms);
        for change in result.changes() {
            match change {
                Change::Publish(event) => self.hub.publish(Audience::Fleet, event),
                Change::Persist(migration) => {
                    let _ = self.persist.send(Persist {
                        migration: migration.clone(),
                        done: None,
                    });
                }
            }
        }
        result
    }

    /// Changes the fleet without anything to publish (e.g. flagging an abort request).
    pub fn modify<T>(&self, change: impl FnOnce(&mut FleetState) -> T) -> T {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut state)
    }

    /// Writes a migration now and waits until it is on disk (an action is recorded
    /// before it is reported done).
    pub async fn persist_now(&self, migration: Migration) -> Result<(), sqlx::Error> {
        let (done, wait) = oneshot::channel();
        let _ = self.persist.send(Persist {
            migration,
            done: Some(done),
        });
        wait.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    /// Applies host reports until every worker is gone.
    pub async fn run(self, mut reports: mpsc::UnboundedReceiver<Report>) {
        while let Some(report) = reports.recv().await {
            self.update(|state, now_ms| state.apply(report, now_ms));
        }
    }
}

/// Anything a fleet change returns that carries changes to publish and persist.
pub trait Changes {
    /// The changes.
    fn changes(&self) -> &[Change];
}

impl Changes for Vec<Change> {
    fn changes(&self) -> &[Change] {
        self
    }
}

impl<T> Changes for Result<Vec<Change>, T> {
    fn changes(&self) -> &[Change] {
        self.as_deref().unwrap_or(&[])
    }
}
