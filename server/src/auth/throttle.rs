//! Sliding-window limits on failed sign-ins, per username and per client network.
//!
//! An attempt is counted when it is *checked*, before it waits for a password-hashing
//! slot: [`LoginThrottle::begin`] reserves a failure for it at once, and only a correct
//! password gives the reservation back. Counting after the hash (as the first version
//! did) let a burst of concurrent guesses all pass the check before any of them counted.
//!
//! Keys: the username exactly as sign-in matches it (names are case-sensitive, so `ADA`
//! is not `ada`'s account and failing it costs `ada` nothing), and the client's address —
//! an IPv6 client by its /64, the smallest network a site is given, so that one host
//! cannot walk through 2^64 addresses of its own. The map is bounded: every failure is
//! also written to an expiry log in time order, so expiring is popping the log's front
//! (no sweep under the lock), and past [`MAX_FAILURES`] the oldest are forgotten first.
//!
//! Pure bookkeeping: every method takes the current instant, so tests drive time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LoginThrottleConfig;

/// Failures remembered at most (and so keys, too). Each costs its key (a name of at most
/// 128 bytes, or an address) twice and an instant: 100 000 of them stay under ~40 MiB
/// however many names or networks a flood uses. Past it the oldest failures are
/// forgotten first, as if their window had ended.
const MAX_FAILURES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Network(IpAddr),
}

/// Counts recent failed sign-ins and says when further attempts must wait.
#[derive(Debug)]
pub struct LoginThrottle {
    window: Duration,
    max_per_user: usize,
    max_per_address: usize,
    state: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    /// Failure times per key, oldest first; never longer than the key's limit.
    failures: HashMap<Key, VecDeque<Instant>>,
    /// Every failure recorded, in time order, for cheap expiry.
    log: VecDeque<(Instant, Key)>,
}

/// An attempt that passed the check and is counted as a failure until it proves itself
/// with [`LoginThrottle::succeeded`]. Dropping it leaves the failure counted: a guess
/// whose client hung up mid-check still cost its budget.
#[derive(Debug)]
#[must_use = "a reservation stays counted as a failure unless it succeeds"]
pub struct Attempt {
    user: Option<Key>,
    network: Key,
    at: Instant,
}

impl LoginThrottle {
    /// A throttle with the configured window and limits.
    pub fn new(config: &LoginThrottleConfig) -> Self {
        Self {
            window: Duration::from_secs(config.window_seconds.into()),
            max_per_user: config.max_failures_per_user as usize,
            max_per_address: config.max_failures_per_address as usize,
            state: Mutex::new(Windows::default()),
        }
    }

    /// Checks a sign-in for `username` from `address` and, when allowed, counts it as a
    /// failure at once. `Err(wait)` when the name or the network has used up its
    /// failures; `wait` is how long until the oldest of them leaves the window.
    pub fn begin(
        &self,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        self.begin_keys(Some(Key::User(username.to_owned())), address, now)
    }

    /// [`Self::begin`] for attempts that name no account (a kiosk token): only the
    /// network counts. A shared name would let a few bad tokens from anywhere lock out
    /// every screen, and a 256-bit token needs no per-name limit.
    pub fn begin_address(&self, address: IpAddr, now: Instant) -> Result<Attempt, Duration> {
        self.begin_keys(None, address, now)
    }

    fn begin_keys(
        &self,
        user: Option<Key>,
        address: IpAddr,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let network = Key::Network(network_of(address));
        let mut state = self.lock();
        state.expire(now, self.window);
        let mut wait = Duration::ZERO;
        let limits = [
            user.as_ref().map(|k| (k, self.max_per_user)),
            Some((&network, self.max_per_address)),
        ];
        for (key, max) in limits.into_iter().flatten() {
            let times = state.failures.get(key);
            if times.map_or(0, VecDeque::len) >= max {
                let oldest = times.and_then(|t| t.front()).copied().unwrap_or(now);
                // At least a second: a limit of 0 refuses everything, and "wait 0 s" reads
                // as "try again now".
                let left = (oldest + self.window).saturating_duration_since(now);
                wait = wait.max(left).max(Duration::from_secs(1));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for key in [user.clone(), Some(network.clone())].into_iter().flatten() {
            state.record(key, now);
        }
        state.bound();
        Ok(Attempt {
            user,
            network,
            at: now,
        })
    }

    /// The attempt was good: the username's failures are forgotten, and the network gets
    /// back the one this attempt reserved. The network keeps its other failures: one good
    /// account must not reset the budget for guessing others.
    pub fn succeeded(&self, attempt: Attempt) {
        if let Some(user) = &attempt.user {
            self.lock().failures.remove(user);
        }
        // The expiry log may still name these keys; expiring a key that is gone is a no-op.
        self.withdraw(Attempt {
            user: None,
            ..attempt
        });
    }

    /// The attempt was never decided (the server was too busy to check it): it is taken
    /// back as if it had not been made.
    pub fn withdraw(&self, attempt: Attempt) {
        let mut state = self.lock();
        for key in [attempt.user.as_ref(), Some(&attempt.network)]
            .into_iter()
            .flatten()
        {
            if let Some(times) = state.failures.get_mut(key)
                && let Some(pos) = times.iter().rposition(|&t| t == attempt.at)
            {
                times.remove(pos);
                if times.is_empty() {
                    state.failures.remove(key);
                }
            }
        }
    }

    /// Keys tracked now (for tests and the flood benchmark's figures).
    pub fn tracked_keys(&self) -> usize {
        self.lock().failures.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // The map holds only counters; after a panic elsewhere it is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Windows {
    fn record(&mut self, key: Key, now: Instant) {
        self.failures.entry(key.clone()).or_default().push_back(now);
        self.log.push_back((now, key));
    }

    /// Drops every failure older than the window: the log is in time order, so this
    /// stops at the first one still inside it.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, _)) = self.log.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            if let Some((at, key)) = self.log.pop_front() {
                self.forget(&key, |t| t <= at);
            }
        }
    }

    /// Past [`MAX_FAILURES`], forgets the oldest failures.
    fn bound(&mut self) {
        while self.log.len() > MAX_FAILURES {
            let Some((_, key)) = self.log.pop_front() else {
                break;
            };
            // Exactly one: its other failures have log entries of their own.
            let mut first = true;
            self.forget(&key, |_| std::mem::take(&mut first));
        }
    }

    fn forget(&mut self, key: &Key, mut expired: impl FnMut(Instant) -> bool) {
        if let Some(times) = self.failures.get_mut(key) {
            while times.front().is_some_and(|&t| expired(t)) {
                times.pop_front();
            }
            if times.is_empty() {
                self.failures.remove(key);
            }
        }
    }
}

/// The network an address is counted under: IPv4 as it is, IPv6 by its /64 (an
/// IPv4-mapped IPv6 address is its IPv4 address).
pub(crate) fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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
            let _failed = t
                .begin("ada", ip(i), start + Duration::from_secs(u64::from(i)))
                .unwrap();
        }
        let now = start + Duration::from_secs(10);
        let wait = t.begin("ada", ip(9), now).unwrap_err();
        // The oldest failure (at +0 s) leaves the window at +60 s.
        assert_eq!(wait, Duration::from_secs(WINDOW - 10));
        let _other = t.begin("bob", ip(9), now).unwrap();
    }

    #[test]
    fn concurrent_attempts_are_counted_before_any_of_them_is_decided() {
        let t = throttle();
        let now = Instant::now();
        // Five guesses in flight at once, none decided yet: the limit is 3.
        let admitted: Vec<_> = (0..5)
            .filter_map(|i| t.begin("ada", ip(i), now).ok())
            .collect();
        assert_eq!(admitted.len(), 3);
    }

    #[test]
    fn names_are_counted_as_sign_in_matches_them() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..3 {
            let _failed = t.begin("ADA", ip(i), now).unwrap();
        }
        assert!(t.begin("ADA", ip(4), now).is_err());
        // `ada` is another account: guessing `ADA` cost it nothing.
        let _ok = t.begin("ada", ip(4), now).unwrap();
    }

    #[test]
    fn failures_leave_the_window() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..3 {
            let _failed = t.begin("ada", ip(1), start).unwrap();
        }
        assert!(
            t.begin("ada", ip(2), start + Duration::from_secs(WINDOW - 1))
                .is_err()
        );
        let _ok = t
            .begin("ada", ip(2), start + Duration::from_secs(WINDOW))
            .unwrap();
        assert_eq!(t.tracked_keys(), 2, "expired keys are gone");
    }

    #[test]
    fn blocks_a_network_that_tries_many_names() {
        let t = throttle();
        let now = Instant::now();
        for name in ["a", "b", "c", "d", "e"] {
            let _failed = t.begin(name, ip(7), now).unwrap();
        }
        assert!(t.begin("f", ip(7), now).is_err());
        let _ok = t.begin("f", ip(8), now).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_one_network_per_64() {
        let t = throttle();
        let now = Instant::now();
        let addr = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        for i in 0..5 {
            let _failed = t.begin(&format!("u{i}"), addr(i), now).unwrap();
        }
        assert!(t.begin("z", addr(999), now).is_err(), "same /64");
        let neighbour = IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]);
        let _ok = t.begin("z", neighbour, now).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.7".parse().unwrap();
        assert_eq!(network_of(mapped), ip(7));
    }

    #[test]
    fn success_gives_back_the_name_and_its_own_reservation_only() {
        let t = throttle();
        let now = Instant::now();
        for name in ["ada", "ada", "x", "y"] {
            let _failed = t.begin(name, ip(3), now).unwrap();
        }
        let good = t.begin("ada", ip(3), now).unwrap();
        t.succeeded(good);
        let _ok = t.begin("ada", ip(4), now).unwrap();
        // ip(3) has 4 failures (ada, ada, x, y), the good attempt's given back.
        let _fifth = t.begin("z", ip(3), now).unwrap();
        assert!(t.begin("w", ip(3), now).is_err(), "address budget is spent");
    }

    #[test]
    fn the_map_stays_bounded_under_a_flood_of_names() {
        let t = LoginThrottle::new(&LoginThrottleConfig {
            window_seconds: 3600,
            max_failures_per_user: 5,
            max_failures_per_address: u32::MAX,
        });
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            let _failed = t.begin(&format!("name-{i}"), ip(1), now).unwrap();
        }
        let state = t.lock();
        assert!(state.log.len() <= MAX_FAILURES, "{}", state.log.len());
        let kept: usize = state.failures.values().map(VecDeque::len).sum();
        assert_eq!(kept, state.log.len(), "the log and the map agree");
    }
}
