//! The session store: the database's rows (tower-sessions' SQLx store) plus what this process
//! knows sooner than the rows can say it.
//!
//! - **A sign-out cannot be undone.** tower-sessions saves a session at the end of any
//!   request that changed it. A request that loaded the session before a sign-out and
//!   refreshed it (the idle expiry) would save it after the sign-out deleted it, bringing
//!   the row back. Every deleted id is remembered for a while ([`ENDED_KEPT`]); a save
//!   checks after writing and deletes again, and a load refuses it. (Writing first and
//!   checking after needs no lock: a delete marks the id before it deletes the row, so a
//!   save either lands before the delete or sees the mark.)
//! - **Live streams end with their session at once**, without a database read per
//!   stream: each open stream holds a [`StreamTicket`], cancelled when its session is
//!   deleted here, and one sweep every few seconds ends the streams whose rows have
//!   expired or gone by other means (one query for all of them).
//! - **Streams per principal are capped.** Opening one more than the limit is refused
//!   (the newest is refused, so a flood cannot push out the screens already watching).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

use crate::store::{self, SessionRows, Store};

/// How long a deleted session id is remembered: longer than any request that could have
/// loaded it before the delete takes to finish.
const ENDED_KEPT: Duration = Duration::from_secs(15 * 60);

/// Deleted ids remembered at most; past it the oldest are forgotten first.
const ENDED_MAX: usize = 100_000;

/// Who a stream counts against: an account, or a kiosk link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamOwner {
    /// A signed-in account, by username.
    User(String),
    /// A wall screen, by its kiosk token's id.
    Kiosk(i64),
}

/// The session store every request and stream goes through. Clones share everything.
#[derive(Debug, Clone)]
pub struct Sessions {
    rows: SessionRows,
    store: Store,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    ended: Mutex<Ended>,
    streams: Mutex<Streams>,
    next_ticket: AtomicU64,
}

#[derive(Debug, Default)]
struct Ended {
    ids: HashSet<Id>,
    order: VecDeque<(Instant, Id)>,
}

#[derive(Debug, Default)]
struct Streams {
    open: HashMap<u64, OpenStream>,
    per_owner: HashMap<StreamOwner, usize>,
}

#[derive(Debug)]
struct OpenStream {
    session: Id,
    owner: StreamOwner,
    ended: CancellationToken,
}

/// One open live stream's place in the registry; dropping it gives the place back.
#[derive(Debug)]
pub struct StreamTicket {
    id: u64,
    ended: CancellationToken,
    shared: Arc<Shared>,
}

/// Opening a stream was refused: the owner already has this many open.
#[derive(Debug, thiserror::Error)]
#[error(
    "{open} live streams are already open for this account (the limit); close a tab or screen first"
)]
pub struct TooManyStreams {
    /// Streams open now.
    pub open: usize,
}

impl StreamTicket {
    /// Cancelled when the stream's session ends (signed out, expired, or its kiosk link
    /// revoked).
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut streams = self.shared.lock_streams();
        if let Some(stream) = streams.open.remove(&self.id)
            && let Some(count) = streams.per_owner.get_mut(&stream.owner)
        {
            *count -= 1;
            if *count == 0 {
                streams.per_owner.remove(&stream.owner);
            }
        }
    }
}

impl Sessions {
    /// The sessions of the database's session table.
    pub fn new(store: &Store) -> Self {
        Self {
            rows: store.session_rows(),
            store: store.clone(),
            shared: Arc::default(),
        }
    }

    /// Registers a live stream of `session` for `owner`, unless `owner` already has `max`
    /// open.
    pub fn open_stream(
        &self,
        session: Id,
        owner: StreamOwner,
        max: usize,
    ) -> Result<StreamTicket, TooManyStreams> {
        let mut streams = self.shared.lock_streams();
        let count = streams.per_owner.entry(owner.clone()).or_default();
        if *count >= max {
            return Err(TooManyStreams { open: *count });
        }
        *count += 1;
        let id = self.shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        let ended = CancellationToken::new();
        if self.shared.was_ended(&session) {
            ended.cancel();
        }
        streams.open.insert(
            id,
            OpenStream {
                session,
                owner,
                ended: ended.clone(),
            },
        );
        Ok(StreamTicket {
            id,
            ended,
            shared: self.shared.clone(),
        })
    }

    /// Ends every open stream of a kiosk link (it was revoked).
    pub fn end_kiosk_streams(&self, token_id: i64) {
        let owner = StreamOwner::Kiosk(token_id);
        self.shared.end_streams(|s| s.owner == owner);
    }

    /// Live streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.lock_streams().open.len()
    }

    /// Ends the streams whose session rows have expired or gone (one query for all).
    pub async fn end_streams_of_lapsed_sessions(&self) -> Result<(), store::Error> {
        let watched: HashSet<Id> = {
            let streams = self.shared.lock_streams();
            streams.open.values().map(|s| s.session).collect()
        };
        if watched.is_empty() {
            return Ok(());
        }
        let live = self.store.live_session_ids().await?;
        let lapsed: HashSet<Id> = watched.difference(&live).copied().collect();
        if !lapsed.is_empty() {
            tracing::info!(
                streams = lapsed.len(),
                "live streams ended: their sessions expired"
            );
            self.shared.end_streams(|s| lapsed.contains(&s.session));
        }
        Ok(())
    }

    /// Deletes the rows of sessions past their expiry.
    pub async fn delete_expired(&self) -> session_store::Result<()> {
        self.rows.delete_expired().await
    }
}

impl Shared {
    fn lock_streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_ended(&self) -> std::sync::MutexGuard<'_, Ended> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn end_streams(&self, which: impl Fn(&OpenStream) -> bool) {
        for stream in self.lock_streams().open.values().filter(|s| which(s)) {
            stream.ended.cancel();
        }
    }

    fn mark_ended(&self, id: Id) {
        let now = Instant::now();
        let mut ended = self.lock_ended();
        while let Some((at, old)) = ended.order.front().copied() {
            if now.duration_since(at) < ENDED_KEPT && ended.order.len() < ENDED_MAX {
                break;
            }
            ended.order.pop_front();
            ended.ids.remove(&old);
        }
        if ended.ids.insert(id) {
            ended.order.push_back((now, id));
        }
    }

    fn was_ended(&self, id: &Id) -> bool {
        self.lock_ended().ids.contains(id)
    }
}

#[async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.rows.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.rows.save(record).await?;
        if self.shared.was_ended(&record.id) {
            // A request that loaded the session before it was deleted saved it after.
            self.rows.delete(&record.id).await?;
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        if self.shared.was_ended(id) {
            return Ok(None);
        }
        self.rows.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        // Marked first: see the module's note on saves racing this.
        self.shared.mark_ended(*id);
        self.shared.end_streams(|s| s.session == *id);
        self.rows.delete(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Duration as TimeDuration, OffsetDateTime};

    async fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        (dir, Sessions::new(&store))
    }

    fn record() -> Record {
        Record {
            id: Id::default(),
            data: HashMap::new(),
            expiry_date: OffsetDateTime::now_utc() + TimeDuration::minutes(30),
        }
    }

    #[tokio::test]
    async fn a_save_after_a_sign_out_does_not_bring_the_session_back() {
        let (_dir, store) = sessions().await;
        let mut session = record();
        store.create(&mut session).await.unwrap();
        let loaded_before = store.load(&session.id).await.unwrap().unwrap();
        store.delete(&session.id).await.unwrap();
        // The slower request finishes now and saves what it loaded.
        store.save(&loaded_before).await.unwrap();
        assert!(store.load(&session.id).await.unwrap().is_none());
        // Not just hidden from this process: the row is gone.
        assert!(store.rows.load(&session.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn streams_end_with_their_session_and_are_capped_per_owner() {
        let (_dir, store) = sessions().await;
        let mut a = record();
        store.create(&mut a).await.unwrap();
        let owner = StreamOwner::User("ada".into());
        let first = store.open_stream(a.id, owner.clone(), 2).unwrap();
        let second = store.open_stream(a.id, owner.clone(), 2).unwrap();
        let refused = store.open_stream(a.id, owner.clone(), 2).unwrap_err();
        assert_eq!(refused.open, 2);
        drop(second);
        let third = store.open_stream(a.id, owner.clone(), 2).unwrap();
        assert!(!first.ended().is_cancelled());
        store.delete(&a.id).await.unwrap();
        assert!(first.ended().is_cancelled() && third.ended().is_cancelled());
        drop((first, third));
        assert_eq!(store.open_streams(), 0);
    }

    #[tokio::test]
    async fn the_sweep_ends_streams_whose_rows_lapsed_and_only_those() {
        let (_dir, store) = sessions().await;
        let (mut live, mut lapsing) = (record(), record());
        store.create(&mut live).await.unwrap();
        store.create(&mut lapsing).await.unwrap();
        let owner = StreamOwner::Kiosk(7);
        let watching_live = store.open_stream(live.id, owner.clone(), 9).unwrap();
        let watching_lapsed = store.open_stream(lapsing.id, owner.clone(), 9).unwrap();
        lapsing.expiry_date = OffsetDateTime::now_utc() - TimeDuration::seconds(1);
        store.rows.save(&lapsing).await.unwrap();
        store.end_streams_of_lapsed_sessions().await.unwrap();
        assert!(watching_lapsed.ended().is_cancelled());
        assert!(!watching_live.ended().is_cancelled());
        store.end_kiosk_streams(7);
        assert!(watching_live.ended().is_cancelled());
    }
}
