//! The fleet as the dashboard sees it: a REST snapshot kept current by the event stream.

use std::rc::Rc;

use converge_api::{
    Drain, DrainUpdate, Host, HostUpdate, IterationMark, LiveEvent, Migration, MigrationUpdate,
    Sample, Vm, VmsUpdate,
};
use leptos::prelude::*;
use send_wrapper::SendWrapper;

use crate::Session;
use crate::api::{self, ApiError, EventStream, StreamState};

/// Samples kept per migration for the charts: ten minutes at the default 500 ms.
const MAX_SAMPLES: usize = 1200;

/// One migration with the series its card draws.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationView {
    /// The migration as it stands.
    pub migration: Migration,
    /// Recent samples, oldest first.
    pub samples: Vec<Sample>,
    /// Pass boundaries, oldest first.
    pub iterations: Vec<IterationMark>,
}

/// Live fleet state, shared by the fleet page's components.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    /// Every host.
    pub hosts: RwSignal<Vec<Host>>,
    /// Every VM.
    pub vms: RwSignal<Vec<Vm>>,
    /// Migrations by id, in id order; each in its own signal so a tick redraws one card.
    /// (A sorted `Vec`: a `BTreeMap` costs kilobytes of wasm for a handful of entries.)
    pub migrations: RwSignal<Vec<(String, RwSignal<MigrationView>)>>,
    /// Host drains, running first (as the server lists them).
    pub drains: RwSignal<Vec<Drain>>,
    /// The stream's state, for the "live" indicator.
    pub stream: RwSignal<StreamState>,
    /// The last error fetching the snapshot.
    pub error: RwSignal<Option<String>>,
}

impl Live {
    /// Loads the snapshot and subscribes to the stream for as long as the current
    /// reactive owner (the page) lives.
    pub fn start(session: Session) -> Self {
        let live = Self {
            hosts: RwSignal::new(Vec::new()),
            vms: RwSignal::new(Vec::new()),
            migrations: RwSignal::new(Vec::new()),
            drains: RwSignal::new(Vec::new()),
            stream: RwSignal::new(StreamState::Connecting),
            error: RwSignal::new(None),
        };
        follow_events(
            session,
            live.stream,
            Rc::new(move |event| live.apply(event, session)),
            Rc::new(move || live.refresh(session)),
        );
        live.refresh(session);
        live
    }

    /// Fetches hosts, VMs and migrations again (at start and after a resync).
    pub fn refresh(self, session: Session) {
        let owner = Owner::current().unwrap_or_default();
        leptos::task::spawn_local(async move {
            let result = async {
                let hosts = api::hosts().await?;
                let vms = api::vms().await?;
                let migrations = api::migrations().await?;
                let drains = api::drains().await?;
                Ok::<_, ApiError>((hosts, vms, migrations, drains))
            }
            .await;
            match result {
                Ok((hosts, vms, migrations, drains)) => {
                    self.hosts.set(hosts);
                    self.vms.set(vms);
                    self.drains.set(drains);
                    owner.with(|| {
                        for migration in migrations {
                            self.upsert(migration, None, None);
                        }
                    });
                    self.error.set(None);
                }
                Err(ApiError::Unauthenticated(message)) => session.end(Some(message)),
                Err(err) => self.error.set(Some(err.to_string())),
            }
        });
    }

    fn apply(self, event: LiveEvent, session: Session) {
        match event {
            LiveEvent::Host(HostUpdate { host }) => {
                self.hosts.update(
                    |hosts| match hosts.iter_mut().find(|h| h.name == host.name) {
                        Some(slot) => *slot = host,
                        None => hosts.push(host),
                    },
                )
            }
            // The server sends each host's VMs by name; hosts stay in name order.
            LiveEvent::Vms(VmsUpdate { host, vms }) => self.vms.update(|all| {
                all.retain(|vm| vm.host != host);
                let at = all
                    .iter()
                    .position(|vm| vm.host > host)
                    .unwrap_or(all.len());
                // `split_off` and `extend`, not `splice`: the same, in less wasm.
                let after = all.split_off(at);
                all.extend(vms);
                all.extend(after);
            }),
            LiveEvent::Migration(MigrationUpdate {
                migration,
                sample,
                iteration,
            }) => self.upsert(migration, sample, iteration),
            LiveEvent::Resync(_) => self.refresh(session),
            // Only ever sent to tenants, who do not watch the fleet.
            LiveEvent::Tenant(_) => {}
            LiveEvent::Drain(DrainUpdate { drain }) => {
                self.drains
                    .update(|all| match all.iter_mut().find(|d| d.id == drain.id) {
                        Some(slot) => *slot = drain,
                        None => all.insert(0, drain),
                    })
            }
        }
    }

    fn upsert(
        self,
        migration: Migration,
        sample: Option<Sample>,
        iteration: Option<IterationMark>,
    ) {
        let existing = self.migrations.with_untracked(|m| find(m, &migration.id));
        if let Some(view) = existing {
            view.update(|v| {
                if let Some(sample) = sample {
                    let newer = v
                        .samples
                        .last()
                        .is_none_or(|last| sample.at_ms > last.at_ms);
                    if newer {
                        if v.samples.len() >= MAX_SAMPLES {
                            v.samples.remove(0);
                        }
                        v.samples.push(sample);
                    }
                }
                // A boundary arrives when its pass is announced and again once its value
                // (the pass's dirty set) is known.
                if let Some(mark) = iteration {
                    match v.iterations.last_mut() {
                        Some(last) if last.iteration == mark.iteration => *last = mark,
                        Some(last) if last.iteration > mark.iteration => {}
                        _ => v.iterations.push(mark),
                    }
                }
                v.migration = migration;
            });
            return;
        }
        let id = migration.id.clone();
        let view = RwSignal::new(MigrationView {
            migration,
            samples: sample.into_iter().collect(),
            iterations: iteration.into_iter().collect(),
        });
        self.migrations.update(|m| {
            let at = m.partition_point(|(other, _)| *other < id);
            m.insert(at, (id.clone(), view));
        });
        // Fill the series from the server's history, then keep the live tail.
        leptos::task::spawn_local(async move {
            if let Ok(detail) = api::migration(&id).await {
                view.update(|v| {
                    let first_live = v.samples.first().map_or(i64::MAX, |s| s.at_ms);
                    let mut samples: Vec<Sample> = detail
                        .samples
                        .into_iter()
                        .filter(|s| s.at_ms < first_live)
                        .collect();
                    samples.append(&mut v.samples);
                    let excess = samples.len().saturating_sub(MAX_SAMPLES);
                    samples.drain(..excess);
                    v.samples = samples;
                    if detail.iterations.len() > v.iterations.len() {
                        v.iterations = detail.iterations;
                    }
                });
            }
        });
    }

    /// Migrations in display order: active first, then newest first.
    pub fn ordered(&self) -> Vec<(String, RwSignal<MigrationView>)> {
        let mut all: Vec<((String, RwSignal<MigrationView>), bool, i64)> = self
            .migrations
            .get()
            .into_iter()
            .map(|(id, view)| {
                let (active, started) =
                    view.with(|v| (v.migration.state.is_active(), v.migration.started_at_ms));
                ((id, view), active, started)
            })
            .collect();
        display_order(&mut all);
        all.into_iter().map(|(entry, ..)| entry).collect()
    }
}

/// The signal of migration `id` in [`Live::migrations`], if it is there.
pub fn find(
    migrations: &[(String, RwSignal<MigrationView>)],
    id: &str,
) -> Option<RwSignal<MigrationView>> {
    migrations
        .iter()
        .find(|(other, _)| other == id)
        .map(|&(_, view)| view)
}

/// Display order of `(migration, active, started at)`: active first, then newest first;
/// ties keep their order.
fn display_order<T>(all: &mut [(T, bool, i64)]) {
    // An insertion sort: a handful of migrations, and the standard sorts would add
    // kilobytes to the bundle.
    for i in 1..all.len() {
        let mut j = i;
        while j > 0 && (!all[j - 1].1, -all[j - 1].2) > (!all[j].1, -all[j].2) {
            all.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Follows the event stream for as long as the current reactive owner (the page) lives,
/// reporting its state in `state` and running `on_event` under that owner. When the browser
/// gives up on the stream (it got an error answer rather than a dropped connection), asks
/// who we are: a session that has ended goes back to sign-in with the server's reason;
/// otherwise a new stream replaces it two seconds later and `catch_up` reloads what it
/// missed.
pub fn follow_events(
    session: Session,
    state: RwSignal<StreamState>,
    on_event: Rc<dyn Fn(LiveEvent)>,
    catch_up: Rc<dyn Fn()>,
) {
    let current = StoredValue::new(None::<SendWrapper<EventStream>>);
    on_cleanup(move || current.dispose());
    open_events(session, state, current, on_event, catch_up);
}

fn open_events(
    session: Session,
    state: RwSignal<StreamState>,
    current: StoredValue<Option<SendWrapper<EventStream>>>,
    on_event: Rc<dyn Fn(LiveEvent)>,
    catch_up: Rc<dyn Fn()>,
) {
    let owner = Owner::current().unwrap_or_default();
    let events = {
        let (owner, on_event) = (owner.clone(), on_event.clone());
        move |event| owner.with(|| on_event(event))
    };
    let on_state = move |now: StreamState| {
        state.set(now);
        if now != StreamState::Closed {
            return;
        }
        let (owner, on_event, catch_up) = (owner.clone(), on_event.clone(), catch_up.clone());
        leptos::task::spawn_local(async move {
            match api::me().await {
                Err(ApiError::Unauthenticated(message)) => session.end(Some(message)),
                // Still signed in (or the server is unreachable: the next stream will say).
                _ => set_timeout(
                    move || {
                        // The page may have gone in the meantime: its signals with it.
                        if current.is_disposed() {
                            return;
                        }
                        owner.with(|| {
                            catch_up();
                            open_events(session, state, current, on_event, catch_up.clone());
                        });
                    },
                    std::time::Duration::from_secs(2),
                ),
            }
        });
    };
    match EventStream::open(events, on_state) {
        // Replacing the stream the browser gave up on drops it, listeners and all.
        Ok(stream) => current.set_value(Some(SendWrapper::new(stream))),
        Err(_) => state.set(StreamState::Closed),
    }
}

#[cfg(test)]
mod tests;
