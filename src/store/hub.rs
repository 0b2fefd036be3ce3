//! The in-memory fan-out of the one ordered change stream of an embedded store.
//!
//! Writers publish each durable change exactly once; the hub copies it to every watcher
//! whose prefix matches, into a bounded buffer. A watcher whose buffer is full is cut off
//! from the live messages instead of slowing the writers down.
//! A new watcher first replays the stored history up to the revision at which it joined
//! the hub, then continues with the live messages, so it never misses or repeats one.
//! A watcher that was cut off does the same again from its last delivered revision: it
//! catches up from history (as upstream's watch cache serves a re-watch from its
//! window) instead of making its client list everything again. Only when that history
//! has been compacted away does its stream end with [`StoreError::Compacted`].

use super::{Event, Result, Revision, WatchMessage, WatchStream};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// How many messages a watcher may fall behind before it is cut off.
pub(crate) const DEFAULT_WATCH_BUFFER: usize = 1024;

/// Events replayed from history per read.
const REPLAY_CHUNK: usize = 512;

/// Stored history an embedded backend can replay to a watcher that starts in the past.
pub(crate) trait History: Send + Sync + 'static {
    /// Events of keys under `prefix` with `after < revision <= upto`, in revision order,
    /// at most `max` of them. Fails with [`StoreError::Compacted`] if part of that range
    /// is no longer kept.
    fn events_between(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        max: usize,
    ) -> Result<Vec<Event>>;
}

struct Slot {
    id: u64,
    prefix: String,
    tx: mpsc::Sender<WatchMessage>,
    /// Set to the hub's revision when the watcher is cut off; 0 while it is live.
    expired_at: Arc<AtomicI64>,
}

struct HubState {
    published: Revision,
    next_id: u64,
    slots: Vec<Slot>,
}

/// See the module documentation.
pub(crate) struct Hub {
    state: Mutex<HubState>,
    buffer: usize,
}

impl Hub {
    /// A hub whose stream has already reached `published`.
    pub(crate) fn new(published: Revision, buffer: usize) -> Self {
        Hub {
            state: Mutex::new(HubState {
                published,
                next_id: 1,
                slots: Vec::new(),
            }),
            buffer: buffer.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock cannot leave the state half-updated in a way
        // that matters (every field is updated by a single assignment), so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes changes in revision order. Never blocks on watchers.
    pub(crate) fn publish(&self, events: &[Event]) {
        let mut st = self.lock();
        for event in events {
            debug_assert!(event.revision() > st.published, "published out of order");
            let revision = event.revision();
            st.slots.retain(|slot| {
                if !event.kv.key.starts_with(&slot.prefix) {
                    return true;
                }
                deliver(slot, WatchMessage::Event(event.clone()), revision)
            });
            st.published = revision;
        }
    }

    /// Cuts every watcher off without an error: the store is shutting down.
    pub(crate) fn close(&self) {
        self.lock().slots.clear();
    }

    fn subscribe(
        &self,
        prefix: &str,
    ) -> (Revision, u64, mpsc::Receiver<WatchMessage>, Arc<AtomicI64>) {
        let (tx, rx) = mpsc::channel(self.buffer);
        let expired_at = Arc::new(AtomicI64::new(0));
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.slots.push(Slot {
            id,
            prefix: prefix.to_string(),
            tx,
            expired_at: expired_at.clone(),
        });
        (st.published, id, rx, expired_at)
    }

    fn request_progress(&self, id: u64) {
        let mut st = self.lock();
        let published = st.published;
        st.slots.retain(|slot| {
            slot.id != id || deliver(slot, WatchMessage::Progress(published), published)
        });
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().slots.retain(|slot| slot.id != id);
    }

    /// Starts a watch of `prefix` after revision `since` (0: from now on), replaying
    /// `history` for the part that was published before the watcher joined.
    pub(crate) fn watch<H: History>(
        self: &Arc<Self>,
        history: Arc<H>,
        prefix: &str,
        since: Revision,
    ) -> LocalWatch<H> {
        let (joined_at, id, rx, expired_at) = self.subscribe(prefix);
        let after = if since == 0 { joined_at } else { since };
        LocalWatch {
            hub: self.clone(),
            history,
            prefix: prefix.to_string(),
            id,
            rx,
            expired_at,
            replayed_upto: after.min(joined_at),
            replay_until: joined_at,
            skip_upto: after,
            delivered: after,
            pending: VecDeque::new(),
            finished: false,
        }
    }
}

/// Tries to hand a message to a watcher; returns false (drop the slot) when it is full
/// or gone, marking it expired at `revision` so its reader learns why.
fn deliver(slot: &Slot, msg: WatchMessage, revision: Revision) -> bool {
    match slot.tx.try_send(msg) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            slot.expired_at.store(revision.max(1), Ordering::SeqCst);
            tracing::debug!(prefix = %slot.prefix, revision, "watcher fell behind; cutting it off");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A watch on an embedded store: replay from history, then live messages from the hub.
pub(crate) struct LocalWatch<H: History> {
    hub: Arc<Hub>,
    history: Arc<H>,
    prefix: String,
    id: u64,
    rx: mpsc::Receiver<WatchMessage>,
    expired_at: Arc<AtomicI64>,
    /// History has been replayed up to here.
    replayed_upto: Revision,
    /// Live messages start after this revision.
    replay_until: Revision,
    /// Events at or below this revision were not asked for (a watch from the future).
    skip_upto: Revision,
    /// Everything up to here has been handed to the reader.
    delivered: Revision,
    pending: VecDeque<Event>,
    finished: bool,
}

impl<H: History> Drop for LocalWatch<H> {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[async_trait]
impl<H: History> WatchStream for LocalWatch<H> {
    async fn next(&mut self) -> Option<Result<WatchMessage>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.delivered = self.delivered.max(event.revision());
                return Some(Ok(WatchMessage::Event(event)));
            }
            if self.replayed_upto < self.replay_until {
                match self.history.events_between(
                    &self.prefix,
                    self.replayed_upto,
                    self.replay_until,
                    REPLAY_CHUNK,
                ) {
                    Ok(events) => {
                        self.replayed_upto = match events.last() {
                            Some(last) if events.len() == REPLAY_CHUNK => last.revision(),
                            _ => self.replay_until,
                        };
                        self.pending.extend(events);
                        continue;
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
            }
            match self.rx.recv().await {
                Some(WatchMessage::Event(e)) if e.revision() <= self.skip_upto => continue,
                Some(msg) => {
                    self.delivered = self.delivered.max(match &msg {
                        WatchMessage::Event(e) => e.revision(),
                        WatchMessage::Progress(r) => *r,
                    });
                    return Some(Ok(msg));
                }
                None if self.expired_at.load(Ordering::SeqCst) > 0 => {
                    // cut off for falling behind: join again, and replay from history
                    // what was published since the last message this reader took
                    self.hub.unsubscribe(self.id);
                    let (joined_at, id, rx, expired_at) = self.hub.subscribe(&self.prefix);
                    tracing::debug!(prefix = %self.prefix, from = self.delivered, to = joined_at, "slow watcher catching up from history");
                    (self.id, self.rx, self.expired_at) = (id, rx, expired_at);
                    self.replayed_upto = self.delivered.min(joined_at);
                    self.replay_until = joined_at;
                    continue;
                }
                None => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }

    async fn request_progress(&mut self) -> Result<()> {
        self.hub.request_progress(self.id);
        Ok(())
    }
}
