//! Each command on a thread of its own, so that none waits behind another or behind a
//! reading: an abort answers with what libvirt said even while another call on the same
//! host is stuck. (The asking side bounds its wait; see `HostHandle::ask`.)

use std::sync::Arc;
use std::time::Duration;

use converge_api::LeverChange;
use converge_libvirt::{Connection, Domain, DomainState};

use super::Command;
use super::worker::{Msg, Shared};

/// Runs `command` on a new thread over connection `conn` (with its generation).
pub(super) fn spawn(shared: Arc<Shared>, conn: (u64, Arc<Connection>), command: Command) {
    let name = match &command {
        Command::Migrate { .. } => "migrate",
        Command::Lever { .. } => "lever",
        Command::MeasureDirtyRate { .. } => "dirty-rate",
        Command::Pause { .. } => "pause",
        Command::Abort { .. } => "abort",
        Command::Track { .. } => "track",
    };
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-{}", shared.config.name))
        .spawn(move || run(&shared, &conn, command));
    if let Err(err) = spawned {
        // The command (and its reply) went with the closure: the asker sees no answer.
        tracing::error!(error = %err, "cannot start a command thread");
    }
}

fn run(shared: &Arc<Shared>, (generation, conn): &(u64, Arc<Connection>), command: Command) {
    let calls = &shared.calls;
    let lookup = |uuid: &str| calls.run("virDomainLookupByUUIDString", uuid, || conn.domain(uuid));
    let failed = |err: converge_libvirt::Error| {
        shared.check_alive(*generation, conn, &err);
        err.to_string()
    };
    match command {
        Command::Migrate {
            vm_uuid,
            request,
            downtime_limit_ms,
            reply,
        } => {
            let domain = match lookup(&vm_uuid) {
                Ok(domain) => domain,
                Err(err) => {
                    let _ = reply.send(Err(failed(err)));
                    return;
                }
            };
            // Set before the job starts: QEMU keeps migration parameters across the
            // start, and the first pass already runs under the chosen limit.
            if let Some(ms) = downtime_limit_ms
                && let Err(err) = calls.run("virDomainMigrateSetMaxDowntime", &vm_uuid, || {
                    domain.set_max_downtime_ms(ms)
                })
            {
                let _ = reply.send(Err(format!(
                    "cannot set the downtime limit: {}",
                    failed(err)
                )));
                return;
            }
            shared.set_in_flight(&vm_uuid, true);
            shared.watch(&vm_uuid);
            let _ = reply.send(Ok(()));
            // Blocks until the migration ends (not watched: it is meant to take long).
            let result = domain.migrate(&request);
            let _ = shared.control().send(Msg::Returned { vm_uuid, result });
        }
        Command::Lever {
            vm_uuid,
            change,
            reply,
        } => {
            let result = lookup(&vm_uuid)
                .and_then(|domain| apply_lever(shared, &vm_uuid, &domain, change))
                .map_err(failed);
            let _ = reply.send(result);
        }
        Command::Pause {
            vm_uuid,
            pause,
            reply,
        } => {
            let result = lookup(&vm_uuid)
                .and_then(|domain| {
                    let state = calls.run("virDomainGetState", &vm_uuid, || domain.state())?;
                    match (pause, state) {
                        (true, _) => calls.run("virDomainSuspend", &vm_uuid, || domain.suspend()),
                        // libvirt may already have resumed it where it landed.
                        (false, DomainState::Running) => Ok(()),
                        (false, _) => calls.run("virDomainResume", &vm_uuid, || domain.resume()),
                    }
                })
                .map_err(failed);
            let _ = reply.send(result);
        }
        Command::MeasureDirtyRate {
            vm_uuid,
            seconds,
            reply,
        } => {
            let started = lookup(&vm_uuid).and_then(|domain| {
                calls
                    .run("virDomainStartDirtyRateCalc", &vm_uuid, || {
                        domain.start_dirty_rate_calc(seconds as i32)
                    })
                    .map(|()| domain)
            });
            let domain = match started {
                Ok(domain) => domain,
                Err(err) => {
                    let _ = reply.send(Err(failed(err)));
                    return;
                }
            };
            // The measurement runs in QEMU; this thread waits for it.
            std::thread::sleep(Duration::from_secs(seconds.into()));
            let mut result = Ok(None);
            // QEMU publishes the result just after the period: ask often, since the
            // migration waits for it.
            for _ in 0..40 {
                result = calls
                    .run("virDomainGetDirtyRateInfo", &vm_uuid, || {
                        domain.dirty_rate_mib_s()
                    })
                    .map_err(|err| err.to_string());
                if !matches!(result, Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = reply.send(result.map(|mib| mib.map(|m| m << 20)));
        }
        Command::Abort { vm_uuid, reply } => {
            let result = lookup(&vm_uuid)
                .and_then(|domain| calls.run("virDomainAbortJob", &vm_uuid, || domain.abort_job()))
                .map_err(failed);
            let _ = reply.send(result);
        }
        Command::Track { vm_uuid } => shared.watch(&vm_uuid),
    }
}

/// Answers a command that needs a connection while there is none.
pub(super) fn refuse_disconnected(host: &str, command: Command) {
    let why = format!("host {host} is not connected; Converge is reconnecting");
    match command {
        Command::Track { .. } => {}
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

/// Moves one lever and reads its value back from libvirt.
fn apply_lever(
    shared: &Shared,
    uuid: &str,
    domain: &Domain,
    change: LeverChange,
) -> Result<Option<u64>, converge_libvirt::Error> {
    let calls = &shared.calls;
    Ok(match change {
        LeverChange::DowntimeLimit { ms } => {
            calls.run("virDomainMigrateSetMaxDowntime", uuid, || {
                domain.set_max_downtime_ms(ms)
            })?;
            Some(calls.run("virDomainMigrateGetMaxDowntime", uuid, || {
                domain.max_downtime_ms()
            })?)
        }
        LeverChange::Bandwidth { mib_s } => {
            calls.run("virDomainMigrateSetMaxSpeed", uuid, || {
                domain.set_max_speed_mib_s(mib_s)
            })?;
            Some(calls.run("virDomainMigrateGetMaxSpeed", uuid, || {
                domain.max_speed_mib_s()
            })?)
        }
        LeverChange::XbzrleCache { bytes } => {
            calls.run("virDomainMigrateSetCompressionCache", uuid, || {
                domain.set_xbzrle_cache_bytes(bytes)
            })?;
            Some(calls.run("virDomainMigrateGetCompressionCache", uuid, || {
                domain.xbzrle_cache_bytes()
            })?)
        }
        LeverChange::PostCopy => {
            calls.run("virDomainMigrateStartPostCopy", uuid, || {
                domain.start_postcopy()
            })?;
            None
        }
    })
}
