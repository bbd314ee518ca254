//! Hosts and their VMs.

use serde::{Deserialize, Serialize};

/// Whether Converge can talk to a host's libvirt daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Opening the first connection.
    Connecting,
    /// Connected; its VMs and migrations are live.
    Connected,
    /// The connection failed or dropped; Converge retries with backoff.
    Disconnected,
}

wire_names!(HostState {
    Connecting => "connecting",
    Connected => "connected",
    Disconnected => "disconnected",
});

/// One libvirt host from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Host {
    /// The name given in the configuration.
    pub name: String,
    /// Connection state.
    pub state: HostState,
    /// Since when (unix ms) the host has been in this state.
    pub since_ms: i64,
    /// Why the last connection attempt failed, while disconnected.
    pub error: Option<String>,
    /// The host's own name, as its daemon reports it.
    pub hostname: Option<String>,
    /// libvirt version of the daemon (`major.minor.micro`).
    pub libvirt_version: Option<String>,
    /// Number of VMs defined or running on it (last known).
    pub vm_count: usize,
    /// Set while a libvirt call to the host goes unanswered too long: `degraded: libvirt
    /// has not answered <call> for N s`. Clears when libvirt answers again.
    pub degraded: Option<String>,
    /// The drain emptying the host, while one does: nothing moves into it.
    #[cfg_attr(not(feature = "mini"), serde(default))]
    pub draining: Option<String>,
}

/// A VM's run state as the fleet page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// The receiving side of a migration (paused until switchover).
    Incoming,
    /// Shut off.
    Shutoff,
    /// Crashed, shutting down, or another state.
    Other,
}

wire_names!(VmState {
    Running => "running",
    Paused => "paused",
    Incoming => "incoming",
    Shutoff => "shutoff",
    Other => "other",
});

/// One VM (libvirt domain) on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct Vm {
    /// The domain's UUID.
    pub uuid: String,
    /// The domain's name.
    pub name: String,
    /// The host it is on.
    pub host: String,
    /// Its state.
    pub state: VmState,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// The migration moving it right now, if any.
    pub migration_id: Option<String>,
    /// The project it belongs to (from the configuration, or Nova's metadata).
    pub project: Option<String>,
    /// OpenStack Nova manages it (its domain carries Nova's metadata): it is moved
    /// through Nova, not started from Converge, unless its host allows it.
    pub nova_managed: bool,
    /// Its latest dirty-rate measurement (taken in the background while it does not
    /// migrate), when there is one.
    pub dirty_rate: Option<DirtyRate>,
}

/// A guest's dirty rate as libvirt measured it (page sampling over a short period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "mini", derive(miniserde::Serialize, miniserde::Deserialize))]
pub struct DirtyRate {
    /// Memory dirtied, bytes/s.
    pub bytes_per_s: u64,
    /// When it was measured (unix ms).
    pub at_ms: i64,
    /// The measurement before it, bytes/s: the trend.
    pub previous_bytes_per_s: Option<u64>,
    /// How long it measured, s. It counts distinct pages, so a set the guest rewrites
    /// within this period reads as the set's size per period, whatever the real rate.
    pub period_s: u32,
}
