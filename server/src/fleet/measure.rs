//! The guests' dirty rates, measured in the background (`[dirty_rate]`): on each host one
//! VM at a time, the one whose reading is oldest, never one that migrates. A reading is
//! what the forecast's advice and the adaptive preset need instead of a bound.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Fleet;
use crate::clock::unix_ms_now;
use crate::config::DirtyRateConfig;
use crate::hypervisor::{HostHandle, Hypervisors};

/// How often a host with nothing due is looked at again.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Measures until `stop`, every host side by side.
pub async fn measure_dirty_rates(
    fleet: Fleet,
    hypervisors: Arc<Hypervisors>,
    config: DirtyRateConfig,
    stop: CancellationToken,
) {
    if !config.enabled {
        return;
    }
    let mut hosts = tokio::task::JoinSet::new();
    for (name, handle) in hypervisors.handles() {
        hosts.spawn(measure_host(
            fleet.clone(),
            name.to_owned(),
            handle.clone(),
            config.clone(),
            stop.clone(),
        ));
    }
    while hosts.join_next().await.is_some() {}
}

async fn measure_host(
    fleet: Fleet,
    host: String,
    handle: HostHandle,
    config: DirtyRateConfig,
    stop: CancellationToken,
) {
    let every_ms = i64::try_from(config.every_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    loop {
        let now = unix_ms_now(&*fleet.clock);
        let due = fleet.modify(|f| f.begin_measurement(&host, every_ms, now));
        let Some(vm_uuid) = due else {
            if rest(IDLE_POLL, &stop).await {
                return;
            }
            continue;
        };
        tokio::select! {
            _ = measure_claimed(&fleet, &handle, &vm_uuid, config.period_s) => {}
            () = stop.cancelled() => {
                fleet.modify(|f| f.end_measurement(&vm_uuid, None, config.period_s, now));
                return;
            }
        }
        if rest(Duration::from_secs(config.gap_s), &stop).await {
            return;
        }
    }
}

/// Measures `vm_uuid`, already claimed for it on `handle`'s host, for `period_s` and records
/// the reading as the VM's dirty rate (the VM list, the forecast and the adaptive preset use
/// it); the reading, or `None` when libvirt gave none.
pub(super) async fn measure_claimed(
    fleet: &Fleet,
    handle: &HostHandle,
    vm_uuid: &str,
    period_s: u32,
) -> Option<u64> {
    let reading = handle
        .measure_dirty_rate(vm_uuid.to_owned(), period_s)
        .await
        .unwrap_or_else(|err| {
            tracing::info!(vm = %vm_uuid, error = %err, "no dirty-rate reading");
            None
        });
    fleet.update(|f, now| f.end_measurement(vm_uuid, reading, period_s, now));
    reading
}

/// Sleeps `for_`; `true` when `stop` came first.
async fn rest(for_: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(for_) => false,
        () = stop.cancelled() => true,
    }
}
