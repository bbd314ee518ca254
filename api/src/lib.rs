//! Wire types of Converge's HTTP interface, shared by the server and the dashboard.
//!
//! Only serde lives here: this crate builds for the host and for `wasm32`. Types that
//! carry a secret redact it in their `Debug` output so that a stray `{:?}` in a log line
//! cannot leak it. Units are in field names (`_bytes`, `_ms`, `_per_s`).

/// Serializes a unit-only enum as one of fixed names and reads it back with one small
/// `match`: serde's derived visitor costs about 1 KB of wasm per enum, and the dashboard
/// decodes several. The one list of names serves serde (the server) and, with the `mini`
/// feature, miniserde (the dashboard).
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, for the tests that check both encoders agree.
            #[cfg(all(test, feature = "mini"))]
            pub(crate) const WIRE_ALL: &[$ty] = &[$($ty::$variant),+];

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

        #[cfg(feature = "mini")]
        impl miniserde::Serialize for $ty {
            fn begin(&self) -> miniserde::ser::Fragment<'_> {
                miniserde::ser::Fragment::Str(std::borrow::Cow::Borrowed(self.wire_name()))
            }
        }

        #[cfg(feature = "mini")]
        impl miniserde::Deserialize for $ty {
            fn begin(out: &mut Option<Self>) -> &mut dyn miniserde::de::Visitor {
                miniserde::make_place!(Place);
                impl miniserde::de::Visitor for Place<$ty> {
                    fn string(&mut self, name: &str) -> miniserde::Result<()> {
                        self.out = Some(match name {
                            $($name => $ty::$variant,)+
                            _ => return Err(miniserde::Error),
                        });
                        Ok(())
                    }
                }
                Place::new(out)
            }
        }
    };
}

mod audit;
mod auth;
mod drain;
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
#[cfg(not(target_arch = "wasm32"))]
pub use drain::{AttemptState, HostRoom};
pub use drain::{
    Drain, DrainItem, DrainLimits, DrainPolicy, DrainRequest, DrainState, DrainUpdate, ItemAction,
    ItemCommand, ItemState, Outlook, Placement,
};
pub use events::{HostUpdate, LiveEvent, MigrationUpdate, Resync, VmsUpdate, names};
pub use fleet::{DirtyRate, Host, HostState, Vm, VmState};
pub use forecast::{Advice, AdviceRecord, Basis, Forecast, LeverKind, LeverMove, Verdict};
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

#[cfg(all(test, feature = "mini"))]
#[allow(clippy::unwrap_used)]
mod wire_name_tests {
    use super::*;

    /// Every variant encodes to the same JSON under serde and miniserde, and each reads
    /// back what the other wrote.
    fn both_encoders_agree<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
        T: miniserde::Serialize + miniserde::Deserialize,
    {
        for &value in all {
            let by_serde = serde_json::to_string(&value).unwrap();
            let by_mini = miniserde::json::to_string(&value);
            assert_eq!(by_serde, by_mini, "{value:?}");
            assert_eq!(miniserde::json::from_str::<T>(&by_serde).unwrap(), value);
            assert_eq!(serde_json::from_str::<T>(&by_mini).unwrap(), value);
        }
        assert!(miniserde::json::from_str::<T>("\"no such name\"").is_err());
    }

    #[test]
    fn every_wire_name_is_read_and_written_alike_by_server_and_dashboard() {
        both_encoders_agree(Role::WIRE_ALL);
        both_encoders_agree(HostState::WIRE_ALL);
        both_encoders_agree(VmState::WIRE_ALL);
        both_encoders_agree(Verdict::WIRE_ALL);
        both_encoders_agree(LeverKind::WIRE_ALL);
        both_encoders_agree(MigrationState::WIRE_ALL);
        both_encoders_agree(TimeoutAction::WIRE_ALL);
        both_encoders_agree(Growth::WIRE_ALL);
        both_encoders_agree(Severity::WIRE_ALL);
        both_encoders_agree(Basis::WIRE_ALL);
        both_encoders_agree(Outlook::WIRE_ALL);
        both_encoders_agree(ItemState::WIRE_ALL);
        both_encoders_agree(DrainState::WIRE_ALL);
        both_encoders_agree(ItemAction::WIRE_ALL);
    }
}

#[cfg(all(test, not(feature = "mini")))]
#[allow(clippy::unwrap_used)]
mod older_records {
    use super::*;

    /// A migration saved before the advice record and the figures' bases existed reads
    /// back without them (the history of an upgraded server stays readable).
    #[test]
    fn a_summary_from_before_the_advice_record_is_read() {
        let mut m = Migration::begun(
            "m".into(),
            "u".into(),
            "vm".into(),
            "a".into(),
            MigrationState::Running,
            1,
        );
        m.forecast = Some(Forecast {
            dirty_rate_basis: Basis::Measured,
            working_set_basis: Basis::AtLeast,
            expected_pause_basis: Basis::AtMost,
            ..Forecast::new(Verdict::Converging, "")
        });
        let mut old = serde_json::to_value(&m).unwrap();
        old.as_object_mut().unwrap().remove("advice_log");
        let forecast = old["forecast"].as_object_mut().unwrap();
        for field in [
            "dirty_rate_basis",
            "working_set_basis",
            "expected_pause_basis",
        ] {
            assert!(forecast.remove(field).is_some(), "{field} is written");
        }
        let read: Migration = serde_json::from_value(old).unwrap();
        assert!(read.advice_log.is_empty());
        let forecast = read.forecast.unwrap();
        assert_eq!(forecast.dirty_rate_basis, Basis::Unknown);
        assert_eq!(forecast.working_set_basis, Basis::Unknown);
        assert_eq!(forecast.expected_pause_basis, Basis::Unknown);
    }
}
