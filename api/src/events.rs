//! The live event stream (`GET /api/events`, server-sent events).
//!
//! The SSE `event:` field names the kind ([`LiveEvent::name`]) and `data:` is that kind's
//! payload as JSON, so a client parses only the one struct it expects (no tagged-enum
//! decoding in the wasm bundle). `id:` is a sequence number to resume from with
//! `Last-Event-ID`.

use serde::{Deserialize, Serialize};

use crate::fleet::{Host, Vm};
use crate::migration::{IterationMark, Migration, Sample};
use crate::tenant::TenantVm;

/// `event: migration` — one per migration per sampling tick while it runs, and one
/// whenever its state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct MigrationUpdate {
    /// The migration as it stands now.
    pub migration: Migration,
    /// A new sample to append to its series, if this update carries one.
    pub sample: Option<Sample>,
    /// A pass boundary that just happened, if any.
    pub iteration: Option<IterationMark>,
}

/// `event: host` — a host's connection state or VM count changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct HostUpdate {
    /// The host as it stands now.
    pub host: Host,
}

/// `event: vms` — a host's VM list changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct VmsUpdate {
    /// The host.
    pub host: String,
    /// Every VM on it.
    pub vms: Vec<Vm>,
}

/// `event: resync` — events were missed (the viewer fell behind, or resumed from too far
/// back): fetch the current state again over REST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Resync {
    /// Why.
    pub reason: String,
}

/// One event on the stream; serializes as its payload alone.
// Built and moved a few times per tick; boxing the big variant would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LiveEvent {
    /// See [`MigrationUpdate`].
    Migration(MigrationUpdate),
    /// See [`HostUpdate`].
    Host(HostUpdate),
    /// See [`VmsUpdate`].
    Vms(VmsUpdate),
    /// See [`Resync`].
    Resync(Resync),
    /// `event: tenant_vm` — a tenant's VM or its move changed (only to that project's
    /// tenants).
    Tenant(TenantVm),
    /// See [`crate::DrainUpdate`].
    Drain(crate::drain::DrainUpdate),
}

/// The SSE `event:` names, for the server that writes them and the dashboard that
/// listens for them.
pub mod names {
    /// [`super::LiveEvent::Migration`].
    pub const MIGRATION: &str = "migration";
    /// [`super::LiveEvent::Host`].
    pub const HOST: &str = "host";
    /// [`super::LiveEvent::Vms`].
    pub const VMS: &str = "vms";
    /// [`super::LiveEvent::Resync`].
    pub const RESYNC: &str = "resync";
    /// [`super::LiveEvent::Tenant`].
    pub const TENANT_VM: &str = "tenant_vm";
    /// [`super::LiveEvent::Drain`].
    pub const DRAIN: &str = "drain";
    /// Every name, for a client that listens for all of them.
    pub const ALL: [&str; 6] = [MIGRATION, HOST, VMS, RESYNC, TENANT_VM, DRAIN];
}

impl LiveEvent {
    /// The SSE `event:` name of this event.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Migration(_) => names::MIGRATION,
            LiveEvent::Host(_) => names::HOST,
            LiveEvent::Vms(_) => names::VMS,
            LiveEvent::Resync(_) => names::RESYNC,
            LiveEvent::Tenant(_) => names::TENANT_VM,
            LiveEvent::Drain(_) => names::DRAIN,
        }
    }
}
