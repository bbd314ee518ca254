//! Wire types of Converge's HTTP interface, shared by the server and the dashboard.
//!
//! Only serde lives here: this crate builds for the host and for `wasm32`. Types that
//! carry a secret redact it in their `Debug` output so that a stray `{:?}` in a log line
//! cannot leak it. Units are in field names (`_bytes`, `_ms`, `_per_s`).

mod auth;
mod events;
mod fleet;
mod migration;

pub use auth::{ErrorBody, Health, LoginRequest, Me, Role};
pub use events::{HostUpdate, LiveEvent, MigrationUpdate, Resync, VmsUpdate};
pub use fleet::{Host, HostState, Vm, VmState};
pub use migration::{
    FinalStats, IterationMark, Migration, MigrationDetail, MigrationState, Sample, StartMigration,
    XbzrleStats,
};
