//! The event hub: every live update is serialized once, numbered, kept in a bounded
//! replay buffer, and broadcast to the streams of those who may see it.
//!
//! Each audience has a channel of its own — the fleet one, and one per project — with its
//! own sequence numbers, replay buffer and broadcast queue. A tenant's stream therefore
//! carries nothing shaped by the rest of the fleet: not its event ids (which would count
//! the fleet's activity), not a resync caused by fleet traffic, and no per-viewer
//! filtering of events that were never for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use converge_api::{LiveEvent, Role};
use tokio::sync::broadcast;

/// Events a project's channel keeps for tenants that reconnect (tenant views change
/// rarely: a VM's move is a few dozen events).
const PROJECT_REPLAY: usize = 256;

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

/// An event as it goes out: numbered within its audience and already serialized.
#[derive(Debug)]
pub struct Published {
    /// Position in its audience's stream.
    pub seq: u64,
    /// The SSE `event` name.
    pub name: &'static str,
    /// Who may see it.
    pub audience: Audience,
    /// The JSON payload, serialized once for every viewer.
    pub json: String,
}

/// What a new viewer of one audience starts from.
#[derive(Debug)]
pub struct Subscription {
    /// Buffered events after the viewer's last seen one, oldest first.
    pub backlog: Vec<Arc<Published>>,
    /// Live events from here on.
    pub live: broadcast::Receiver<Arc<Published>>,
    /// The viewer asked to resume from further back than the buffer reaches.
    pub missed: bool,
    /// The sequence number of the last event published before this subscription.
    pub position: u64,
}

/// Publishes events to every viewer.
#[derive(Debug)]
pub struct Hub {
    fleet: Channel,
    projects: Mutex<HashMap<String, Arc<Channel>>>,
    project_replay: usize,
}

/// One audience's numbered stream.
#[derive(Debug)]
struct Channel {
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
    /// A hub keeping the last `replay` fleet events for viewers that reconnect. Each
    /// viewer may fall up to the same number of events behind before it is told to
    /// resync. Projects keep fewer.
    pub fn new(replay: usize) -> Self {
        Self {
            fleet: Channel::new(replay),
            projects: Mutex::new(HashMap::new()),
            project_replay: replay.min(PROJECT_REPLAY),
        }
    }

    /// Serializes `event` once and sends it to every viewer of `audience`.
    pub fn publish(&self, audience: Audience, event: &LiveEvent) {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "cannot serialize a live event");
                return;
            }
        };
        let channel = match &audience {
            Audience::Fleet => None,
            Audience::Project(project) => Some(self.project(project)),
        };
        channel
            .as_deref()
            .unwrap_or(&self.fleet)
            .publish(audience, event.name(), json);
    }

    /// Subscribes a fleet viewer that last saw `last_seen` (its `Last-Event-ID`), or a
    /// new viewer (`None`, which starts from now).
    pub fn subscribe_fleet(&self, last_seen: Option<u64>) -> Subscription {
        self.fleet.subscribe(last_seen)
    }

    /// Subscribes a tenant viewer to one project's events after `last_seen`.
    pub fn subscribe_project(&self, project: &str, last_seen: Option<u64>) -> Subscription {
        self.project(project).subscribe(last_seen)
    }

    /// Sequence number the next fleet event will get.
    pub fn next_seq(&self) -> u64 {
        self.fleet.lock().next_seq
    }

    fn project(&self, project: &str) -> Arc<Channel> {
        let mut projects = self
            .projects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        projects
            .entry(project.to_owned())
            .or_insert_with(|| Arc::new(Channel::new(self.project_replay)))
            .clone()
    }
}

impl Channel {
    fn new(replay: usize) -> Self {
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

    fn publish(&self, audience: Audience, name: &'static str, json: String) {
        let mut state = self.lock();
        let published = Arc::new(Published {
            seq: state.next_seq,
            name,
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

    fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
        let state = self.lock();
        // Subscribing under the lock: nothing published between reading the buffer and
        // subscribing can be lost or duplicated.
        let live = self.sender.subscribe();
        let position = state.next_seq - 1;
        let Some(last_seen) = last_seen else {
            return Subscription {
                backlog: Vec::new(),
                live,
                missed: false,
                position,
            };
        };
        let oldest = state.buffer.front().map_or(state.next_seq, |p| p.seq);
        // The id is the client's word: any u64, so no arithmetic that can overflow.
        let missed = last_seen < oldest.saturating_sub(1) || last_seen >= state.next_seq;
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
            position,
        }
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
        let sub = hub.subscribe_fleet(Some(3));
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
        let sub = hub.subscribe_fleet(Some(2));
        assert!(sub.missed);
        assert!(sub.backlog.is_empty());
        // An id from a previous server run (ahead of this one) is also a miss.
        assert!(hub.subscribe_fleet(Some(1000)).missed);
        // Resuming exactly at the buffer's edge is not.
        assert!(!hub.subscribe_fleet(Some(24)).missed);
        // Nor can a hostile id overflow anything.
        assert!(hub.subscribe_fleet(Some(u64::MAX)).missed);
    }

    #[test]
    fn live_events_follow_the_backlog_without_gaps() {
        let hub = Hub::new(16);
        hub.publish(Audience::Fleet, &event(1));
        let mut sub = hub.subscribe_fleet(Some(0));
        hub.publish(Audience::Fleet, &event(2));
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.live.try_recv().unwrap().seq, 2);
    }

    #[test]
    fn each_event_is_serialized_once_and_shared() {
        let hub = Hub::new(16);
        let mut a = hub.subscribe_fleet(None);
        let mut b = hub.subscribe_fleet(None);
        hub.publish(Audience::Fleet, &event(7));
        let (pa, pb) = (a.live.try_recv().unwrap(), b.live.try_recv().unwrap());
        assert!(Arc::ptr_eq(&pa, &pb));
        assert!(pa.json.contains("test 7"));
        assert_eq!(pa.name, "resync");
    }

    #[test]
    fn each_project_counts_its_own_events_and_sees_no_others() {
        let hub = Hub::new(16);
        let mut blue = hub.subscribe_project("blue", None);
        for n in 0..100 {
            hub.publish(Audience::Fleet, &event(n));
        }
        hub.publish(Audience::Project("green".into()), &event(1));
        hub.publish(Audience::Project("blue".into()), &event(2));
        let first = blue.live.try_recv().unwrap();
        assert_eq!(
            first.seq, 1,
            "a project's ids say nothing of the fleet's traffic"
        );
        assert!(first.json.contains("test 2"));
        assert!(
            blue.live.try_recv().is_err(),
            "nothing of green, nothing of the fleet"
        );
        assert_eq!(hub.next_seq(), 101);
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
