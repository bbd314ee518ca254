//! The event hub: every live update is serialized once, numbered, kept in a bounded
//! replay buffer, and broadcast to every viewer's stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use converge_api::{LiveEvent, Role};
use tokio::sync::broadcast;

/// Who may see an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Anyone who sees the whole fleet (admins, operators, the kiosk): hosts, every VM,
    /// every migration.
    Fleet,
    /// The tenants of one project.
    Project(String),
}

impl Audience {
    /// Whether a viewer with `role` and (for a tenant) `projects` may see it.
    pub fn admits(&self, role: Role, projects: &[String]) -> bool {
        match self {
            Audience::Fleet => role.sees_whole_fleet(),
            Audience::Project(p) => role == Role::Tenant && projects.contains(p),
        }
    }
}

/// An event as it goes out: numbered and already serialized.
#[derive(Debug)]
pub struct Published {
    /// Position in the stream; the SSE `id`.
    pub seq: u64,
    /// The SSE `event` name.
    pub name: &'static str,
    /// Who may see it.
    pub audience: Audience,
    /// The JSON payload, serialized once for every viewer.
    pub json: String,
}

/// What a new viewer starts from.
#[derive(Debug)]
pub struct Subscription {
    /// Buffered events after the viewer's `Last-Event-ID`, oldest first.
    pub backlog: Vec<Arc<Published>>,
    /// Live events from here on.
    pub live: broadcast::Receiver<Arc<Published>>,
    /// The viewer asked to resume from further back than the buffer reaches.
    pub missed: bool,
}

/// Publishes events to every viewer.
#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Published>>,
    state: Mutex<Replay>,
}

#[derive(Debug)]
struct Replay {
    next_seq: u64,
    buffer: VecDeque<Arc<Published>>,
    capacity: usize,
}

impl Hub {
    /// A hub keeping the last `replay` events for viewers that reconnect. Each viewer may
    /// fall up to the same number of events behind before it is told to resync.
    pub fn new(replay: usize) -> Self {
        let (sender, _) = broadcast::channel(replay.max(16));
        Self {
            sender,
            state: Mutex::new(Replay {
                next_seq: 1,
                buffer: VecDeque::with_capacity(replay),
                capacity: replay.max(1),
            }),
        }
    }

    /// Serializes `event` once and sends it to every viewer `audience` admits.
    pub fn publish(&self, audience: Audience, event: &LiveEvent) {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "cannot serialize a live event");
                return;
            }
        };
        let mut state = self.lock();
        let published = Arc::new(Published {
            seq: state.next_seq,
            name: event.name(),
            audience,
            json,
        });
        state.next_seq += 1;
        if state.buffer.len() == state.capacity {
            state.buffer.pop_front();
        }
        state.buffer.push_back(published.clone());
        // Sent under the lock, so live order always equals sequence order. No receivers
        // is not an error: nobody is watching.
        let _ = self.sender.send(published);
    }

    /// Subscribes a viewer that last saw `last_seen` (its `Last-Event-ID`), or a new
    /// viewer (`None`, which starts from now).
    pub fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
        let state = self.lock();
        // Subscribing under the lock: nothing published between reading the buffer and
        // subscribing can be lost or duplicated.
        let live = self.sender.subscribe();
        let Some(last_seen) = last_seen else {
            return Subscription {
                backlog: Vec::new(),
                live,
                missed: false,
            };
        };
        let oldest = state.buffer.front().map_or(state.next_seq, |p| p.seq);
        let missed = last_seen + 1 < oldest || last_seen >= state.next_seq;
        let backlog = if missed {
            Vec::new()
        } else {
            state
                .buffer
                .iter()
                .filter(|p| p.seq > last_seen)
                .cloned()
                .collect()
        };
        Subscription {
            backlog,
            live,
            missed,
        }
    }

    /// Sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replay> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> LiveEvent {
        LiveEvent::Resync(converge_api::Resync {
            reason: format!("test {n}"),
        })
    }

    #[test]
    fn a_viewer_resumes_after_its_last_event() {
        let hub = Hub::new(16);
        for n in 0..5 {
            hub.publish(Audience::Fleet, &event(n));
        }
        let sub = hub.subscribe(Some(3));
        let seqs: Vec<u64> = sub.backlog.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert!(!sub.missed);
    }

    #[test]
    fn resuming_from_beyond_the_buffer_is_flagged() {
        let hub = Hub::new(16);
        for n in 0..40 {
            hub.publish(Audience::Fleet, &event(n));
        }
        let sub = hub.subscribe(Some(2));
        assert!(sub.missed);
        assert!(sub.backlog.is_empty());
        // An id from a previous server run (ahead of this one) is also a miss.
        assert!(hub.subscribe(Some(1000)).missed);
        // Resuming exactly at the buffer's edge is not.
        assert!(!hub.subscribe(Some(24)).missed);
    }

    #[test]
    fn live_events_follow_the_backlog_without_gaps() {
        let hub = Hub::new(16);
        hub.publish(Audience::Fleet, &event(1));
        let mut sub = hub.subscribe(Some(0));
        hub.publish(Audience::Fleet, &event(2));
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.live.try_recv().unwrap().seq, 2);
    }

    #[test]
    fn each_event_is_serialized_once_and_shared() {
        let hub = Hub::new(16);
        let mut a = hub.subscribe(None);
        let mut b = hub.subscribe(None);
        hub.publish(Audience::Fleet, &event(7));
        let (pa, pb) = (a.live.try_recv().unwrap(), b.live.try_recv().unwrap());
        assert!(Arc::ptr_eq(&pa, &pb));
        assert!(pa.json.contains("test 7"));
        assert_eq!(pa.name, "resync");
    }

    #[test]
    fn tenants_see_their_projects_and_nothing_else() {
        let acme = ["acme".to_owned()];
        assert!(Audience::Fleet.admits(Role::Kiosk, &[]));
        assert!(Audience::Fleet.admits(Role::Operator, &[]));
        assert!(!Audience::Fleet.admits(Role::Tenant, &acme));
        let to_acme = Audience::Project("acme".into());
        assert!(to_acme.admits(Role::Tenant, &acme));
        assert!(!to_acme.admits(Role::Tenant, &["globex".to_owned()]));
        // Project events are in tenant words; the fleet has its own.
        assert!(!to_acme.admits(Role::Admin, &[]));
    }
}
