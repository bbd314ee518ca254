//! Wire types of Converge's HTTP interface, shared by the server and the dashboard.
//!
//! Only serde lives here: this crate builds for the host and for `wasm32`. Types that
//! carry a secret redact it in their `Debug` output so that a stray `{:?}` in a log line
//! cannot leak it. Units are in field names (`_bytes`, `_ms`, `_per_s`).

/// Serializes a unit-only enum as one of fixed names and reads it back with one small
/// `match`: serde's derived visitor costs about 1 KB of wasm per enum, and the dashboard
/// decodes several.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name on the wire and in configuration.
            pub fn wire_name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.wire_name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                match name.as_str() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, &[$($name),+])),
                }
            }
        }
    };
}

mod audit;
mod auth;
mod events;
mod fleet;
mod forecast;
mod kiosk;
mod migration;
pub mod paths;
mod settings;
mod tenant;

pub use audit::AuditEntry;
pub use auth::{ErrorBody, Health, LoginRequest, Me, Role};
pub use events::{HostUpdate, LiveEvent, MigrationUpdate, Resync, VmsUpdate, names};
pub use fleet::{Host, HostState, Vm, VmState};
pub use forecast::{Advice, Forecast, LeverKind, LeverMove, Verdict};
pub use kiosk::{CreatedKioskToken, KioskSignIn, KioskToken, NewKioskToken};
pub use migration::{
    ActionRecord, FinalStats, IterationMark, LeverChange, LeverResult, Levers, Migration,
    MigrationDetail, MigrationState, PendingDeadline, RawField, Sample, StartMigration,
    XbzrleStats,
};
pub use settings::{
    AutoConverge, Capabilities, Deadline, DowntimeSteps, Finding, Growth, MAX_BANDWIDTH_MIB_S,
    MAX_DOWNTIME_MS, MAX_PARALLEL, MIN_XBZRLE_CACHE, MigrationSettings, Preset, Severity,
    TimeoutAction, lint, refusal,
};
pub use tenant::{TenantMove, TenantVm, TenantVmDetail};
