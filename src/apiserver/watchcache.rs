//! The watch cache, as upstream's cacher: per resource, one datastore watch keeps the
//! current objects and a window of recent changes in memory, and lists and watches
//! are served from there instead of each reading and watching the datastore (with
//! etcd, one etcd watch per resource instead of one per client).
//!
//! - **State.** Objects by key, each kept as the JSON clients get (with its
//!   `resourceVersion`, encoded once) plus a small view of what selectors read
//!   (name, namespace, labels and the kind's selectable fields). The cache's
//!   revision is the last change it applied or the last progress the datastore
//!   reported: its state is exactly the datastore's at that revision.
//! - **Freshness.** A list with `resourceVersion` unset is consistent, as upstream's
//!   consistent reads from cache: the datastore's current revision is read, and the
//!   cache waits (asking the datastore for progress) until it is there. `0` takes
//!   the cache as it is; `N` (NotOlderThan) waits until the cache has reached N.
//! - **Watches.** A watch from `N` replays the window's changes after `N`, then
//!   follows live ones; a start before the window is served by the datastore (which
//!   answers 410 once its history is compacted). A watcher too slow to take its
//!   changes is ended, and resumes from its last revision.
//! - **Relists.** If the datastore watch ends (compaction, a fall-behind, a restart
//!   of etcd), the cache lists again and ends every watcher; they resume as above.

use crate::api::registry::Resource;
use crate::apiserver::resources::kinds;
use crate::apiserver::resources::object::{from_store, prefix};
use crate::store::{Event, EventKind, KeyValue, ListOptions, Revision, Store, WatchMessage};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Changes kept for watches that resume from a recent revision.
const WINDOW: usize = 4096;
/// Changes a watcher may have queued before it is ended as too slow.
const WATCHER_QUEUE: usize = 4096;
/// How long a read waits for the cache to reach the revision it needs before it
/// is served by the datastore instead.
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// Pause before listing again after the datastore watch failed.
const RELIST_BACKOFF: Duration = Duration::from_millis(200);

/// One object as the cache keeps it.
pub struct Entry {
    /// The object as clients get it: JSON with its `resourceVersion`.
    pub body: Bytes,
    /// What selectors read: `metadata.name`, `.namespace`, `.labels`, the kind's
    /// selectable fields, and `apiVersion` (a version other than the one asked for
    /// needs converting).
    pub view: Value,
}

impl Entry {
    fn of(res: &Resource, kv: &KeyValue) -> Option<Entry> {
        let obj = match from_store(kv) {
            Ok(obj) => obj,
            Err(e) => {
                // as the datastore path: skipped and reported, deletable by name
                tracing::warn!(key = %kv.key, error = %e.message, "watch cache: skipping an unreadable stored object; delete it by name");
                return None;
            }
        };
        let mut view = json!({"apiVersion": obj.get("apiVersion"), "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "labels": obj.pointer("/metadata/labels"),
        }});
        for field in kinds::of(res).selectable_fields() {
            let found = field.split('.').try_fold(&obj, |v, k| v.get(k));
            if let Some(found) = found {
                set_path(&mut view, field, found.clone());
            }
        }
        let body = Bytes::from(serde_json::to_vec(&obj).ok()?);
        Some(Entry { body, view })
    }

    /// The object, decoded (for conversion or a Table).
    pub fn object(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn set_path(view: &mut Value, path: &str, value: Value) {
    let mut at = view;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return;
        }
        at = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// What a watcher of the cache receives.
pub enum Msg {
    /// A change to an object under the watched prefix.
    Event(Arc<Event>),
    /// Every change up to this revision has been sent.
    Progress(Revision),
}

struct State {
    ready: bool,
    objects: BTreeMap<String, Arc<Entry>>,
    revision: Revision,
    /// Changes after `oldest`, oldest first.
    window: VecDeque<Arc<Event>>,
    oldest: Revision,
    watchers: Vec<mpsc::Sender<Msg>>,
}

/// One resource's cache.
pub struct Cache {
    res: &'static Resource,
    state: Mutex<State>,
    revision: watch::Sender<Revision>,
    /// Shared with the feeder, which holds the cache itself only weakly (dropping
    /// the cache stops it).
    progress_wanted: Arc<Notify>,
    feeder: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.feeder).take() {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // every change under these locks is a whole assignment or insert
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A consistent view of the objects under a key prefix.
pub struct Snapshot {
    /// The datastore revision the view is at.
    pub revision: Revision,
    /// In key order.
    pub entries: Vec<(String, Arc<Entry>)>,
}

impl Cache {
    /// Waits until the cache holds the datastore's state at `min` or later (0: any
    /// state, once loaded). `None` if that takes longer than [`FRESHNESS_WAIT`].
    pub async fn fresh(&self, min: Revision) -> Option<Revision> {
        let mut rx = self.revision.subscribe();
        let wait = async {
            loop {
                {
                    let st = lock(&self.state);
                    if st.ready && st.revision >= min {
                        return st.revision;
                    }
                }
                self.progress_wanted.notify_one();
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(FRESHNESS_WAIT, wait).await.ok()
    }

    /// The objects under `key_prefix` at the cache's revision.
    pub fn snapshot(&self, key_prefix: &str) -> Snapshot {
        let st = lock(&self.state);
        Snapshot {
            revision: st.revision,
            entries: entries_under(&st, key_prefix),
        }
    }

    /// The objects under `key_prefix` and a subscription to every change after
    /// them, taken together (no change is missed or seen twice).
    pub fn snapshot_and_watch(&self, key_prefix: &str) -> (Snapshot, mpsc::Receiver<Msg>) {
        let mut st = lock(&self.state);
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        st.watchers.push(tx);
        let snapshot = Snapshot {
            revision: st.revision,
            entries: entries_under(&st, key_prefix),
        };
        (snapshot, rx)
    }

    /// A subscription to every change after `since`, starting with the window's;
    /// `None` if `since` is before the window (or the cache is not loaded yet).
    pub fn watch_from(&self, since: Revision) -> Option<mpsc::Receiver<Msg>> {
        let mut st = lock(&self.state);
        if !st.ready || since < st.oldest {
            return None;
        }
        let replay: Vec<Arc<Event>> = st
            .window
            .iter()
            .filter(|e| e.revision() > since)
            .cloned()
            .collect();
        if replay.len() >= WATCHER_QUEUE {
            return None; // more than a watcher may have queued: the datastore serves it
        }
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        for e in replay {
            // room was checked above
            let _ = tx.try_send(Msg::Event(e));
        }
        st.watchers.push(tx);
        Some(rx)
    }

    /// Asks the datastore for a progress notification (a bookmark's revision).
    pub fn want_progress(&self) {
        self.progress_wanted.notify_one();
    }

    fn load(&self, kvs: &[KeyValue], revision: Revision) {
        let objects = kvs
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), Arc::new(Entry::of(self.res, kv)?))))
            .collect();
        let mut st = lock(&self.state);
        st.objects = objects;
        st.revision = revision;
        st.window.clear();
        st.oldest = revision;
        st.ready = true;
        // watchers of the old state end and resume from their last revision
        st.watchers.clear();
        drop(st);
        self.revision.send_replace(revision);
    }

    fn apply(&self, msg: WatchMessage) {
        let mut st = lock(&self.state);
        let revision = msg.revision();
        let out = match msg {
            WatchMessage::Event(e) => {
                match e.kind {
                    EventKind::Put => match Entry::of(self.res, &e.kv) {
                        Some(entry) => st.objects.insert(e.kv.key.clone(), Arc::new(entry)),
                        None => st.objects.remove(&e.kv.key),
                    },
                    EventKind::Delete => st.objects.remove(&e.kv.key),
                };
                let e = Arc::new(e);
                st.window.push_back(e.clone());
                while st.window.len() > WINDOW {
                    if let Some(old) = st.window.pop_front() {
                        st.oldest = old.revision();
                    }
                }
                Msg::Event(e)
            }
            WatchMessage::Progress(r) => Msg::Progress(r),
        };
        st.revision = st.revision.max(revision);
        let current = st.revision;
        st.watchers.retain(|w| {
            let msg = match &out {
                Msg::Event(e) => Msg::Event(e.clone()),
                Msg::Progress(r) => Msg::Progress(*r),
            };
            // a full queue: the watcher is too slow and ends (it resumes from its
            // last revision)
            w.try_send(msg).is_ok()
        });
        drop(st);
        self.revision.send_replace(current);
    }
}

fn entries_under(st: &State, key_prefix: &str) -> Vec<(String, Arc<Entry>)> {
    st.objects
        .range(key_prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(key_prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Keeps one resource's cache: list, then watch from the list's revision; list
/// again when the watch ends.
async fn feed(
    cache: Weak<Cache>,
    wanted: Arc<Notify>,
    store: Arc<dyn Store>,
    res: &'static Resource,
) {
    let key_prefix = prefix(res, None);
    loop {
        let listed = store.list(&key_prefix, ListOptions::default()).await;
        let page = match listed {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(resource = res.plural, error = %e, "watch cache: list failed; retrying");
                tokio::time::sleep(RELIST_BACKOFF).await;
                continue;
            }
        };
        let Some(c) = cache.upgrade() else { return };
        c.load(&page.kvs, page.revision);
        drop(c);
        let mut w = match store.watch(&key_prefix, page.revision).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(resource = res.plural, error = %e, "watch cache: watch failed; listing again");
                tokio::time::sleep(RELIST_BACKOFF).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                msg = w.next() => msg,
                _ = wanted.notified() => {
                    if store.supports_progress() {
                        // a hint: a datastore that cannot promise progress refuses
                        let _ = w.request_progress().await;
                    }
                    continue;
                }
            };
            let Some(c) = cache.upgrade() else { return };
            match msg {
                Some(Ok(msg)) => c.apply(msg),
                Some(Err(e)) => {
                    tracing::info!(resource = res.plural, error = %e, "watch cache: the datastore watch ended; listing again");
                    break;
                }
                None => return, // the datastore shut down
            }
        }
        tokio::time::sleep(RELIST_BACKOFF).await;
    }
}

/// Every resource's cache, each started the first time it is read.
pub struct WatchCaches {
    store: Arc<dyn Store>,
    caches: Mutex<HashMap<String, Arc<Cache>>>,
    enabled: bool,
}

impl WatchCaches {
    /// Caches over `store`; `enabled: false` (upstream's `--watch-cache=false`) serves
    /// every list and watch from the datastore.
    pub fn new(store: Arc<dyn Store>, enabled: bool) -> WatchCaches {
        WatchCaches {
            store,
            caches: Mutex::default(),
            enabled,
        }
    }

    /// Whether lists and watches may be served from memory.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The cache of `res` (every namespace), started on first use.
    pub fn of(&self, res: &'static Resource) -> Arc<Cache> {
        let key_prefix = prefix(res, None);
        let mut caches = lock(&self.caches);
        if let Some(c) = caches.get(&key_prefix) {
            return c.clone();
        }
        let cache = Arc::new(Cache {
            res,
            state: Mutex::new(State {
                ready: false,
                objects: BTreeMap::new(),
                revision: 0,
                window: VecDeque::new(),
                oldest: 0,
                watchers: Vec::new(),
            }),
            revision: watch::channel(0).0,
            progress_wanted: Arc::new(Notify::new()),
            feeder: Mutex::new(None),
        });
        let task = tokio::spawn(feed(
            Arc::downgrade(&cache),
            cache.progress_wanted.clone(),
            self.store.clone(),
            res,
        ));
        *lock(&cache.feeder) = Some(task);
        caches.insert(key_prefix, cache.clone());
        cache
    }

    /// The datastore's current revision (what a consistent read must reach).
    pub async fn current_revision(&self) -> Option<Revision> {
        self.store.current_revision().await.ok()
    }
}

#[cfg(test)]
mod tests;
