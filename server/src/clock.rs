//! Time: the injectable wall clock and Unix milliseconds, for whoever needs them.

use std::fmt;

use time::OffsetDateTime;

/// The wall clock, injectable so tests can move time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch on `clock`.
pub fn unix_ms_now(clock: &dyn Clock) -> i64 {
    unix_ms(clock.now())
}
