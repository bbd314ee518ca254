//! The libvirt calls in flight on one host, for the watchdog: a call that has not
//! answered for [`DEGRADED_AFTER`] makes the host *degraded*, with the call named, until
//! libvirt answers again. Registering is a map insert under a short lock; nothing here
//! waits on libvirt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a call may go unanswered before the host is shown degraded. Every call the
/// workers make answers in tens of milliseconds on a healthy host, on both sides of a
/// migration (`scripts/probe-libvirt-locks`); the connect call can take longer.
pub(super) const DEGRADED_AFTER: Duration = Duration::from_secs(3);

/// Calls in flight, by ticket.
#[derive(Debug, Default)]
pub(super) struct Calls {
    in_flight: Mutex<HashMap<u64, InFlight>>,
    next: AtomicU64,
}

#[derive(Debug, Clone)]
struct InFlight {
    call: &'static str,
    vm: String,
    since: Instant,
}

/// A call's place in [`Calls`]; dropping it (the call answered) gives the place back.
#[derive(Debug)]
pub(super) struct CallGuard<'a> {
    calls: &'a Calls,
    ticket: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.ticket);
    }
}

impl Calls {
    /// Runs `f` (one libvirt call, `call` by its C name, about `vm` or `""`) while it is
    /// registered.
    pub(super) fn run<T>(&self, call: &'static str, vm: &str, f: impl FnOnce() -> T) -> T {
        let _guard = self.begin(call, vm);
        f()
    }

    /// Registers a call until the guard is dropped.
    pub(super) fn begin(&self, call: &'static str, vm: &str) -> CallGuard<'_> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = InFlight {
            call,
            vm: vm.to_owned(),
            since: Instant::now(),
        };
        self.lock().insert(ticket, entry);
        CallGuard {
            calls: self,
            ticket,
        }
    }

    /// What the host's degraded state says now: the oldest call unanswered for longer
    /// than [`DEGRADED_AFTER`], in words; `None` when there is none.
    pub(super) fn degraded(&self, now: Instant) -> Option<String> {
        let oldest = self.lock().values().min_by_key(|c| c.since).cloned()?;
        let waited = now.saturating_duration_since(oldest.since);
        (waited >= DEGRADED_AFTER).then(|| {
            let about = if oldest.vm.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", oldest.vm)
            };
            format!(
                "degraded: libvirt has not answered {}{about} for {} s",
                oldest.call,
                waited.as_secs()
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unanswered_call_past_the_bound_is_named_until_it_answers() {
        let calls = Calls::default();
        assert_eq!(calls.degraded(Instant::now()), None);
        let stuck = calls.begin("virDomainGetJobStats", "web1");
        let quick = calls.begin("virDomainGetState", "web2");
        // Both began at or before `now`, within microseconds of it.
        let now = Instant::now();
        assert_eq!(
            calls.degraded(now + Duration::from_secs(2)),
            None,
            "within the bound"
        );
        assert_eq!(
            calls.degraded(now + Duration::from_secs(7)).as_deref(),
            Some("degraded: libvirt has not answered virDomainGetJobStats (domain web1) for 7 s")
        );
        drop(stuck);
        assert!(
            calls
                .degraded(now + Duration::from_secs(7))
                .is_some_and(|d| d.contains("virDomainGetState")),
            "the next oldest"
        );
        drop(quick);
        assert_eq!(
            calls.degraded(now + Duration::from_secs(60)),
            None,
            "recovered"
        );
        assert_eq!(calls.run("virConnectListAllDomains", "", || 5), 5);
        assert_eq!(calls.degraded(now + Duration::from_secs(60)), None);
    }
}
