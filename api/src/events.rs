//! The live event stream (`GET /api/events`, server-sent events).

use serde::{Deserialize, Serialize};

use crate::fleet::{Host, Vm};
use crate::migration::{IterationMark, Migration, Sample};

/// One event on the stream. The SSE `event:` field carries the variant's name, `id:` a
/// sequence number to resume from with `Last-Event-ID`.
// Built and moved a few times per tick; boxing the big variant would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A migration changed: one per migration per sampling tick while it runs, and one
    /// when it ends.
    Migration {
        /// The migration as it stands now.
        migration: Migration,
        /// A new sample to append to its series, if this update carries one.
        sample: Option<Sample>,
        /// A pass boundary that just happened, if any.
        iteration: Option<IterationMark>,
    },
    /// A host's connection state changed.
    Host {
        /// The host as it stands now.
        host: Host,
    },
    /// A host's VM list changed.
    Vms {
        /// The host.
        host: String,
        /// Every VM on it.
        vms: Vec<Vm>,
    },
    /// Events were missed (the viewer fell behind, or resumed from too far back): fetch
    /// the current state again over REST.
    Resync {
        /// Why.
        reason: String,
    },
}

impl LiveEvent {
    /// The SSE `event:` name of this event.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Migration { .. } => "migration",
            LiveEvent::Host { .. } => "host",
            LiveEvent::Vms { .. } => "vms",
            LiveEvent::Resync { .. } => "resync",
        }
    }
}
