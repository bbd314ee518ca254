//! Sliding-window limits on failed sign-ins, per username and per client address.
//!
//! Pure bookkeeping: every method takes the current instant, so tests drive time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LoginThrottleConfig;

/// Past this many tracked keys, entries whose failures have all expired are swept.
const SWEEP_ABOVE_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

/// Counts recent failed sign-ins and says when further attempts must wait.
#[derive(Debug)]
pub struct LoginThrottle {
    window: Duration,
    max_per_user: usize,
    max_per_address: usize,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// A throttle with the configured window and limits.
    pub fn new(config: &LoginThrottleConfig) -> Self {
        Self {
            window: Duration::from_secs(config.window_seconds.into()),
            max_per_user: config.max_failures_per_user as usize,
            max_per_address: config.max_failures_per_address as usize,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when this username or this address has used up its failures; `wait`
    /// is how long until the oldest of them leaves the window.
    pub fn check(&self, username: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        self.check_keys(Some(username), address, now)
    }

    /// [`Self::check`] for attempts that name no account (a kiosk token): only the
    /// address counts. A shared name would let a few bad tokens from anywhere lock out
    /// every screen, and a 256-bit token needs no per-name limit.
    pub fn check_address(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        self.check_keys(None, address, now)
    }

    fn check_keys(
        &self,
        username: Option<&str>,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut failures = self.lock();
        let keys = [
            username.map(|u| (user_key(u), self.max_per_user)),
            Some((Key::Address(address), self.max_per_address)),
        ];
        let mut wait = Duration::ZERO;
        for (key, max) in keys.into_iter().flatten() {
            if let Some(times) = failures.get_mut(&key) {
                expire(times, now, self.window);
                if times.len() >= max {
                    let oldest = times.front().copied().unwrap_or(now);
                    wait = wait.max((oldest + self.window).saturating_duration_since(now));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failed attempt against both the username and the address.
    pub fn record_failure(&self, username: &str, address: IpAddr, now: Instant) {
        self.record_failure_of(Some(username), address, now);
    }

    /// Counts a failed attempt that named no account against its address only.
    pub fn record_address_failure(&self, address: IpAddr, now: Instant) {
        self.record_failure_of(None, address, now);
    }

    fn record_failure_of(&self, username: Option<&str>, address: IpAddr, now: Instant) {
        let mut failures = self.lock();
        if failures.len() > SWEEP_ABOVE_KEYS {
            failures.retain(|_, times| {
                expire(times, now, self.window);
                !times.is_empty()
            });
        }
        for key in [username.map(user_key), Some(Key::Address(address))]
            .into_iter()
            .flatten()
        {
            let times = failures.entry(key).or_default();
            expire(times, now, self.window);
            times.push_back(now);
        }
    }

    /// Forgets the username's failures after a successful sign-in. The address keeps its
    /// count: one good account must not reset the budget for guessing others.
    pub fn record_success(&self, username: &str) {
        self.lock().remove(&user_key(username));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        // The map holds only counters; after a panic elsewhere it is still consistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Usernames are case-sensitive at sign-in, but an attacker must not get a fresh budget
/// by changing case.
fn user_key(username: &str) -> Key {
    Key::User(username.to_lowercase())
}

fn expire(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 60;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(&LoginThrottleConfig {
            window_seconds: WINDOW as u32,
            max_failures_per_user: 3,
            max_failures_per_address: 5,
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn blocks_a_username_after_its_failures_and_says_how_long() {
        let t = throttle();
        let start = Instant::now();
        for i in 0..3 {
            assert!(t.check("ada", ip(i), start).is_ok());
            t.record_failure("ada", ip(i), start + Duration::from_secs(u64::from(i)));
        }
        let now = start + Duration::from_secs(10);
        let wait = t.check("ada", ip(9), now).unwrap_err();
        // The oldest failure (at +0 s) leaves the window at +60 s.
        assert_eq!(wait, Duration::from_secs(WINDOW - 10));
        assert!(
            t.check("ADA", ip(9), now).is_err(),
            "case must not reset the budget"
        );
        assert!(t.check("bob", ip(9), now).is_ok());
    }

    #[test]
    fn failures_leave_the_window() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..3 {
            t.record_failure("ada", ip(1), start);
        }
        assert!(
            t.check("ada", ip(2), start + Duration::from_secs(WINDOW - 1))
                .is_err()
        );
        assert!(
            t.check("ada", ip(2), start + Duration::from_secs(WINDOW))
                .is_ok()
        );
    }

    #[test]
    fn blocks_an_address_that_tries_many_names() {
        let t = throttle();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e"] {
            assert!(t.check(name, ip(7), now).is_ok());
            t.record_failure(name, ip(7), now);
        }
        assert!(t.check("f", ip(7), now).is_err());
        assert!(t.check("f", ip(8), now).is_ok());
    }

    #[test]
    fn success_clears_the_username_but_not_the_address() {
        let t = throttle();
        let now = Instant::now();
        for name in ["ada", "ada", "x", "y"] {
            t.record_failure(name, ip(3), now);
        }
        t.record_success("ada");
        assert!(t.check("ada", ip(4), now).is_ok());
        t.record_failure("z", ip(3), now);
        assert!(
            t.check("ada", ip(3), now).is_err(),
            "address budget is spent"
        );
    }
}
