//! One domain on one host: state, job statistics, migration and its levers.

#![allow(unsafe_code)]

use std::ffi::c_int;

use virt::domain::MigrateParameters;
use virt::sys;

use crate::error::Error;
use crate::job::{JobKind, JobStats};
use crate::typed_params;

/// A domain's run state (`virDomainState`), with the reason where it matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Running.
    Running,
    /// Paused; `migrating` when paused because of a migration (e.g. the incoming side).
    Paused {
        /// Paused for a migration (`VIR_DOMAIN_PAUSED_MIGRATION` or post-copy).
        migrating: bool,
    },
    /// Shut off or not started.
    Shutoff,
    /// Shutting down, crashed, suspended by the guest, or unknown.
    Other,
}

/// Capabilities of a migration, fixed when it starts (QEMU refuses changes mid-flight).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationFlags {
    /// Send only the changed bytes of re-dirtied pages, with a cache of this many bytes.
    pub xbzrle_cache_bytes: Option<u64>,
    /// Throttle the guest's vCPUs when the migration does not converge.
    pub auto_converge: bool,
    /// Allow switching to post-copy later.
    pub postcopy: bool,
    /// Migrate over this many parallel connections (multifd).
    pub parallel_connections: Option<u32>,
}

/// Everything needed to start one peer-to-peer live migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationRequest {
    /// The destination host's libvirt URI.
    pub destination_uri: String,
    /// The URI QEMU migrates over (e.g. `tcp://127.0.0.1`); libvirt picks one if `None`.
    pub migration_uri: Option<String>,
    /// Address the destination QEMU listens on; libvirt picks one if `None`.
    pub listen_address: Option<String>,
    /// Bandwidth limit in MiB/s (`None`: unlimited).
    pub bandwidth_mib_s: Option<u64>,
    /// Capabilities.
    pub flags: MigrationFlags,
    /// Auto-converge's first throttle step, in percent.
    pub auto_converge_initial_pct: Option<u32>,
    /// Auto-converge's further throttle steps, in percent.
    pub auto_converge_increment_pct: Option<u32>,
}

/// `VIR_DOMAIN_METADATA_ELEMENT`: metadata under an application's own namespace.
const VIR_DOMAIN_METADATA_ELEMENT: i32 = 2;

/// A domain on one connection.
#[derive(Debug, Clone)]
pub struct Domain {
    pub(crate) inner: virt::domain::Domain,
}

impl Domain {
    /// The domain's name.
    pub fn name(&self) -> Result<String, Error> {
        Ok(self.inner.name()?)
    }

    /// The domain's UUID, as a string.
    pub fn uuid(&self) -> Result<String, Error> {
        Ok(self.inner.uuid_string()?)
    }

    /// The domain's state.
    pub fn state(&self) -> Result<DomainState, Error> {
        let mut state: c_int = 0;
        let mut reason: c_int = 0;
        // SAFETY: `as_ptr` is a live domain handle; libvirt writes two ints we own.
        let rc = unsafe { sys::virDomainGetState(self.inner.as_ptr(), &mut state, &mut reason, 0) };
        if rc < 0 {
            return Err(Error::last());
        }
        Ok(match state as u32 {
            sys::VIR_DOMAIN_RUNNING => DomainState::Running,
            sys::VIR_DOMAIN_PAUSED => DomainState::Paused {
                migrating: matches!(
                    reason as u32,
                    sys::VIR_DOMAIN_PAUSED_MIGRATION
                        | sys::VIR_DOMAIN_PAUSED_POSTCOPY
                        | sys::VIR_DOMAIN_PAUSED_STARTING_UP
                ),
            },
            sys::VIR_DOMAIN_SHUTOFF => DomainState::Shutoff,
            _ => DomainState::Other,
        })
    }

    /// Memory (bytes) and vCPUs.
    pub fn size(&self) -> Result<(u64, u32), Error> {
        let info = self.inner.info()?;
        Ok((info.memory.saturating_mul(1024), info.nr_virt_cpu))
    }

    /// Nova's metadata (`virDomainGetMetadata` for Nova's namespace), `None` when the
    /// domain has none. Unlike the domain XML (`virDomainGetXMLDesc`, which waits for the
    /// job lock and so for the whole of an incoming migration, 30 s then fails — see
    /// `scripts/probe-libvirt-locks`), this answers at once on both sides of a migration.
    pub fn nova(&self) -> Result<Option<crate::NovaInstance>, Error> {
        match self.inner.metadata(
            VIR_DOMAIN_METADATA_ELEMENT,
            Some(crate::connection::NOVA_NS),
            0,
        ) {
            Ok(xml) => Ok(crate::connection::nova_instance(&xml)),
            Err(err) => {
                let err = Error::from(err);
                if err.is_no_metadata() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// The running job's statistics, or `None` when no job runs. With `completed`, the
    /// statistics of the last finished job instead (`None` if there is none).
    pub fn job_stats(&self, completed: bool) -> Result<Option<JobStats>, Error> {
        let mut kind: c_int = 0;
        let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
        let mut nparams: c_int = 0;
        let flags = if completed {
            sys::VIR_DOMAIN_JOB_STATS_COMPLETED
        } else {
            0
        };
        // SAFETY: all out-pointers are to locals; libvirt allocates `params` (or leaves it
        // NULL) and we free it below with the matching `virTypedParamsFree`.
        let rc = unsafe {
            sys::virDomainGetJobStats(
                self.inner.as_ptr(),
                &mut kind,
                &mut params,
                &mut nparams,
                flags,
            )
        };
        if rc < 0 {
            return Err(Error::last());
        }
        // SAFETY: on success libvirt returned `nparams` initialised parameters at `params`
        // (NULL when none); we copy them out before freeing.
        let read = unsafe { typed_params::read(params, nparams) };
        if !params.is_null() {
            // SAFETY: `params` came from libvirt with `nparams` entries and is freed once.
            unsafe { sys::virTypedParamsFree(params, nparams) };
        }
        let kind = JobKind::from_raw(kind);
        Ok(match kind {
            JobKind::None => None,
            _ => Some(JobStats { kind, params: read }),
        })
    }

    /// Starts a live peer-to-peer migration and blocks until it ends: `Ok` when the domain
    /// runs on the destination, an error when it failed or was aborted (the domain then
    /// keeps running here).
    pub fn migrate(&self, request: &MigrationRequest) -> Result<(), Error> {
        let mut flags = sys::VIR_MIGRATE_LIVE
            | sys::VIR_MIGRATE_PEER2PEER
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
        let mut params = MigrateParameters {
            bandwidth: request.bandwidth_mib_s,
            uri: request.migration_uri.clone(),
            listen_address: request.listen_address.clone(),
            ..MigrateParameters::default()
        };
        let caps = &request.flags;
        if let Some(cache) = caps.xbzrle_cache_bytes {
            flags |= sys::VIR_MIGRATE_COMPRESSED;
            params.compression = Some("xbzrle".into());
            params.compression_xbzrle_cache = Some(cache);
        }
        if caps.auto_converge {
            flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
            params.auto_converge_initial = request.auto_converge_initial_pct.map(|p| p as i32);
            params.auto_converge_increment = request.auto_converge_increment_pct.map(|p| p as i32);
        }
        if caps.postcopy {
            flags |= sys::VIR_MIGRATE_POSTCOPY;
        }
        if let Some(n) = caps.parallel_connections {
            flags |= sys::VIR_MIGRATE_PARALLEL;
            params.parallel_connections = Some(n as i32);
        }
        self.inner
            .migrate_to_uri3(Some(&request.destination_uri), params, flags)?;
        Ok(())
    }

    /// Starts QEMU's dirty-rate measurement over `seconds` (`virDomainStartDirtyRateCalc`);
    /// read the result with [`Domain::dirty_rate_mib_s`] once the period is over.
    pub fn start_dirty_rate_calc(&self, seconds: i32) -> Result<(), Error> {
        // SAFETY: a live domain handle; no out-parameters.
        let rc = unsafe { sys::virDomainStartDirtyRateCalc(self.inner.as_ptr(), seconds, 0) };
        if rc < 0 { Err(Error::last()) } else { Ok(()) }
    }

    /// The last dirty-rate measurement, MiB/s, or `None` while it is still measuring or
    /// none was made (`dirtyrate.*` of `virDomainListGetStats`).
    pub fn dirty_rate_mib_s(&self) -> Result<Option<u64>, Error> {
        let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
        // SAFETY: `doms` is a NULL-terminated array holding one live domain; libvirt
        // allocates `records`, which we free with `virDomainStatsRecordListFree` below.
        let count = unsafe {
            let mut doms = [self.inner.as_ptr(), std::ptr::null_mut()];
            sys::virDomainListGetStats(
                doms.as_mut_ptr(),
                sys::VIR_DOMAIN_STATS_DIRTYRATE,
                &mut records,
                0,
            )
        };
        if count < 0 {
            return Err(Error::last());
        }
        let mut params = Vec::new();
        if count > 0 && !records.is_null() {
            // SAFETY: libvirt returned `count` ≥ 1 records; the first belongs to our domain and
            // its parameters stay valid until the list is freed.
            unsafe {
                let record = *records;
                if !record.is_null() {
                    params = typed_params::read((*record).params, (*record).nparams);
                }
            }
        }
        if !records.is_null() {
            // SAFETY: the list came from libvirt and is freed once.
            unsafe { sys::virDomainStatsRecordListFree(records) };
        }
        let find = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        // calc_status: 0 never started, 1 measuring, 2 measured.
        let measured = find("dirtyrate.calc_status").and_then(|v| v.as_i64()) == Some(2);
        Ok(measured
            .then(|| find("dirtyrate.megabytes_per_second").and_then(|v| v.as_u64()))
            .flatten())
    }

    /// Pauses the guest's vCPUs (during a migration: no more dirtying, so the last pass
    /// completes).
    pub fn suspend(&self) -> Result<(), Error> {
        Ok(self.inner.suspend()?)
    }

    /// Resumes a paused guest.
    pub fn resume(&self) -> Result<(), Error> {
        Ok(self.inner.resume()?)
    }

    /// Aborts the running job (`virDomainAbortJob`): a pre-copy migration stops and the
    /// domain keeps running here.
    pub fn abort_job(&self) -> Result<(), Error> {
        // SAFETY: a live domain handle; no out-parameters.
        let rc = unsafe { sys::virDomainAbortJob(self.inner.as_ptr()) };
        if rc < 0 { Err(Error::last()) } else { Ok(()) }
    }

    /// Switches a running migration started with post-copy allowed to post-copy.
    pub fn start_postcopy(&self) -> Result<(), Error> {
        // SAFETY: a live domain handle; no out-parameters.
        let rc = unsafe { sys::virDomainMigrateStartPostCopy(self.inner.as_ptr(), 0) };
        if rc < 0 { Err(Error::last()) } else { Ok(()) }
    }

    /// The downtime limit libvirt will accept at switchover, in milliseconds.
    pub fn max_downtime_ms(&self) -> Result<u64, Error> {
        let mut downtime: u64 = 0;
        // SAFETY: a live domain handle; libvirt writes one integer we own.
        let rc =
            unsafe { sys::virDomainMigrateGetMaxDowntime(self.inner.as_ptr(), &mut downtime, 0) };
        if rc < 0 {
            Err(Error::last())
        } else {
            Ok(downtime)
        }
    }

    /// Sets the downtime limit, in milliseconds (mid-flight allowed).
    pub fn set_max_downtime_ms(&self, ms: u64) -> Result<(), Error> {
        Ok(self.inner.migrate_set_max_downtime(ms, 0)?)
    }

    /// The migration bandwidth limit, in MiB/s.
    pub fn max_speed_mib_s(&self) -> Result<u64, Error> {
        Ok(self.inner.migrate_max_speed(0)?)
    }

    /// Sets the migration bandwidth limit, in MiB/s (mid-flight allowed).
    pub fn set_max_speed_mib_s(&self, mib_s: u64) -> Result<(), Error> {
        Ok(self.inner.migrate_set_max_speed(mib_s, 0)?)
    }

    /// The xbzrle cache size, in bytes.
    pub fn xbzrle_cache_bytes(&self) -> Result<u64, Error> {
        Ok(self.inner.migrate_compression_cache(0)?)
    }

    /// Resizes the xbzrle cache, in bytes (mid-flight allowed).
    pub fn set_xbzrle_cache_bytes(&self, bytes: u64) -> Result<(), Error> {
        Ok(self.inner.migrate_set_compression_cache(bytes, 0)?)
    }
}
