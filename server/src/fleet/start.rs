//! Starting a migration: the preset, the linter, the adaptive choice, the record and the
//! audit row on disk, then libvirt. The HTTP edge only parses the request and maps the
//! outcome.

use std::net::IpAddr;
use std::time::Duration;

use converge_api::{
    ActionRecord, Migration, MigrationSettings, MigrationState, Preset, lint, refusal,
};
use converge_libvirt::{MigrationFlags, MigrationRequest};

use super::{Executor, Refusal, measure, new_id};
use crate::clock::unix_ms_now;
use crate::config::HostConfig;
use crate::hypervisor::HostError;
use crate::store::{self, NewEntry};
use crate::{policy, presets};

/// How long the adaptive preset measures a guest's dirty rate before starting, seconds.
const DIRTY_RATE_PERIOD_S: u32 = 1;
/// The adaptive preset measures the guest itself unless a background reading is younger
/// than this: a guest's rate changes (the lab's `phases` guest: busy, then idle), and one
/// more second of measurement is cheap next to a wrong choice of capabilities.
const ADAPTIVE_READING_MS: i64 = 30_000;
/// Longest a start waits for a background dirty-rate measurement of its VM to end.
const MEASUREMENT_WAIT: Duration = Duration::from_secs(12);

/// What a start asks for.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The VM.
    pub vm_uuid: String,
    /// The host it goes to.
    pub destination: String,
    /// The preset's name.
    pub preset: String,
    /// Changes to the preset's settings (a JSON merge patch), when given.
    pub settings: Option<serde_json::Value>,
    /// Who asks.
    pub started_by: String,
    /// From where.
    pub client_addr: IpAddr,
    /// Never allow post-copy, whatever the preset or the adaptive choice (a drain's
    /// policy may forbid it).
    pub no_post_copy: bool,
}

/// Why a migration did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request cannot be carried out as asked (no such preset, VM or host; settings
    /// the linter refuses; the VM already migrating).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The migration or its audit row could not be written, so libvirt was not asked.
    #[error("could not record the migration: {0}")]
    NotRecorded(store::Error),
    /// libvirt did not start it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A fault of Converge's (what it was doing, and the cause), for the log.
    #[error("{0}: {1}")]
    Internal(&'static str, String),
}

impl Executor {
    /// Starts a live migration as `request` asks, from the presets in `presets`.
    /// Returns the migration as it stands once libvirt took it. Runs to its end even if
    /// the caller goes away: nothing is left `starting` or pending.
    pub async fn start(
        &self,
        request: StartRequest,
        presets: Vec<Preset>,
    ) -> Result<Migration, StartError> {
        let executor = self.clone();
        self.detached(async move { executor.start_here(request, &presets).await })
            .await
            .unwrap_or(Err(StartError::Internal(
                "start migration",
                "the start task failed".into(),
            )))
    }

    async fn start_here(
        &self,
        request: StartRequest,
        presets: &[Preset],
    ) -> Result<Migration, StartError> {
        let preset = presets
            .iter()
            .find(|p| p.name == request.preset)
            .ok_or_else(|| {
                let names: Vec<&str> = presets.iter().map(|p| p.name.as_str()).collect();
                Refusal::Invalid(format!(
                    "no preset called \"{}\"; presets are: {}",
                    request.preset,
                    names.join(", ")
                ))
            })?;
        let (settings, settings_changed) = match &request.settings {
            Some(patch) => {
                presets::apply_patch(&preset.settings, patch).map_err(Refusal::Invalid)?
            }
            None => (preset.settings.clone(), Vec::new()),
        };
        let plan = self
            .fleet
            .read()
            .plan_start(&request.vm_uuid, &request.destination)?;
        if let Some(why) = refusal(&lint(&settings, plan.memory_bytes)) {
            return Err(Refusal::Invalid(why).into());
        }
        self.refuse_nova_managed(&plan)?;
        let (Some(source), Some(destination)) = (
            self.hypervisors.get(&plan.source),
            self.hypervisors.get(&plan.destination),
        ) else {
            return Err(StartError::Internal(
                "start migration",
                "planned host has no worker".into(),
            ));
        };
        // A background measurement of this guest may be under way: it ends first (it
        // would measure the migration too). `begin` refuses if it still has not.
        let wait_until = tokio::time::Instant::now() + MEASUREMENT_WAIT;
        while self.fleet.read().is_measuring(&plan.vm_uuid)
            && tokio::time::Instant::now() < wait_until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Adaptive: the guest's dirty rate (a fresh background reading, else measured now)
        // and its past, before choosing capabilities.
        let (settings, adapted) = if settings.adaptive {
            let now = unix_ms_now(&*self.fleet.clock);
            let fresh = self
                .fleet
                .read()
                .fresh_dirty_rate(&plan.vm_uuid, now)
                .filter(|r| now.saturating_sub(r.at_ms) <= ADAPTIVE_READING_MS);
            let dirty_rate = match fresh {
                Some(reading) => Some(reading.bytes_per_s),
                None => {
                    let uuid = plan.vm_uuid.clone();
                    let claimed = self
                        .fleet
                        .modify(|fleet| fleet.claim_measurement(&uuid, &plan.source));
                    if claimed {
                        measure::measure_claimed(&self.fleet, source, &uuid, DIRTY_RATE_PERIOD_S)
                            .await
                    } else {
                        None
                    }
                }
            };
            let history = self
                .store
                .migrations_of_vm(&plan.vm_uuid, 5)
                .await
                .map_err(|err| {
                    StartError::Internal("reading a VM's past migrations", err.to_string())
                })?;
            let facts = policy::StartFacts {
                memory_bytes: plan.memory_bytes,
                dirty_rate,
                history: &history,
            };
            let (mut chosen, mut why) = policy::adapt_start(&settings, &facts);
            if request.no_post_copy && chosen.capabilities.postcopy {
                chosen.capabilities.postcopy = false;
                why = why.replace(
                    "post-copy allowed",
                    "post-copy not allowed (the drain's policy)",
                );
            }
            if let Some(reading) = fresh {
                // No pre-flight second: say where the rate came from.
                let age_s = now.saturating_sub(reading.at_ms) / 1000;
                why.push_str(&format!(
                    " (the rate from the background measurement {age_s} s before)"
                ));
            }
            if let Some(refused) = refusal(&lint(&chosen, plan.memory_bytes)) {
                return Err(StartError::Internal("adaptive start", refused));
            }
            (chosen, Some(why))
        } else {
            (settings, None)
        };

        let mut migration = Migration::begun(
            new_id(),
            plan.vm_uuid.clone(),
            plan.vm_name.clone(),
            plan.source.clone(),
            MigrationState::Starting,
            unix_ms_now(&*self.fleet.clock),
        );
        migration.destination = Some(plan.destination.clone());
        migration.started_by = Some(request.started_by.clone());
        migration.preset = Some(request.preset.clone());
        migration.settings_changed = Some(settings_changed);
        migration.settings = Some(settings.clone());
        if let Some(why) = &adapted {
            migration.actions.push(ActionRecord {
                at_ms: migration.started_at_ms,
                actor: super::POLICY_ACTOR.into(),
                what: "chose the capabilities".into(),
                reason: why.clone(),
                result: "ok".into(),
            });
        }
        self.fleet
            .update(|fleet, _| fleet.begin(migration.clone()))?;
        // On disk before libvirt is asked: a crash from here on leaves a record to finish.
        let route = format!(
            "{} → {}, preset {}",
            plan.source, plan.destination, request.preset
        );
        let entry = NewEntry::request(&request.started_by, request.client_addr, "start")
            .about(Some(plan.vm_name.clone()), &migration.id)
            .with_details(match &adapted {
                Some(why) => format!("{route}: {why}"),
                None => route,
            });
        let recorded = match self.fleet.persist_now(migration.clone()).await {
            Ok(()) => {
                self.store
                    .audit_begin(migration.started_at_ms, &entry)
                    .await
            }
            Err(err) => Err(err),
        };
        let audit_id = match recorded {
            Ok(id) => id,
            Err(err) => {
                let id = migration.id.clone();
                self.fleet.update(|fleet, now| {
                    fleet.start_failed(&id, "could not be recorded".into(), now)
                });
                return Err(StartError::NotRecorded(err));
            }
        };
        tracing::info!(
            migration = %migration.id, vm = %plan.vm_name, source = %plan.source,
            destination = %plan.destination, preset = %request.preset,
            user = %request.started_by, "starting a migration"
        );
        let libvirt = libvirt_request(&settings, &destination.config);
        let downtime = settings
            .downtime_steps
            .map(|steps| steps.start_ms)
            .or(settings.downtime_limit_ms);
        let started = source
            .migrate(plan.vm_uuid.clone(), libvirt, downtime)
            .await;
        let result = match &started {
            Ok(()) => "ok".to_owned(),
            Err(err) => format!("failed: {err}"),
        };
        if let Err(err) = self.store.audit_finish(audit_id, &result).await {
            tracing::error!(audit_id, error = %err, "cannot complete an audit entry");
        }
        if let Err(err) = started {
            let id = migration.id.clone();
            self.fleet
                .update(|fleet, now| fleet.start_failed(&id, err.to_string(), now));
            return Err(err.into());
        }
        let current = self.fleet.read().migration(&migration.id).cloned();
        Ok(current.unwrap_or(migration))
    }
}

impl Executor {
    /// Nova keeps its own record of where each instance runs: a move made with libvirt
    /// alone leaves it pointing at the old host (and its next action on the instance
    /// goes wrong). So a VM with Nova's metadata is moved through Nova, unless its host
    /// says no Nova runs there (`hosts[].start_nova_managed`). Watching such a migration,
    /// moving its levers and aborting it are what Nova's own monitor does, and stay open.
    fn refuse_nova_managed(&self, plan: &super::StartPlan) -> Result<(), Refusal> {
        let allowed = self
            .hypervisors
            .get(&plan.source)
            .is_some_and(|h| h.config.start_nova_managed);
        if plan.nova_managed && !allowed {
            return Err(Refusal::Invalid(format!(
                "{} is managed by OpenStack Nova: moving it with libvirt alone would leave \
                 Nova's records pointing at {}. Move it through Nova: openstack server \
                 migrate --live-migration --host {} {} (its instance UUID). Where no \
                 Nova runs, set start_nova_managed = true on host {} to allow it here.",
                plan.vm_name, plan.source, plan.destination, plan.vm_uuid, plan.source
            )));
        }
        Ok(())
    }
}

/// The libvirt request for `settings`, to the destination host's migration address.
fn libvirt_request(settings: &MigrationSettings, destination: &HostConfig) -> MigrationRequest {
    let caps = &settings.capabilities;
    MigrationRequest {
        destination_uri: destination.uri.clone(),
        migration_uri: destination.migration_uri.clone(),
        listen_address: destination.listen_address.clone(),
        bandwidth_mib_s: settings.bandwidth_mib_s,
        flags: MigrationFlags {
            xbzrle_cache_bytes: caps.xbzrle_cache_bytes,
            auto_converge: caps.auto_converge.is_some(),
            postcopy: caps.postcopy,
            parallel_connections: caps.parallel_connections,
        },
        auto_converge_initial_pct: caps.auto_converge.map(|a| a.initial_pct),
        auto_converge_increment_pct: caps.auto_converge.map(|a| a.increment_pct),
    }
}
