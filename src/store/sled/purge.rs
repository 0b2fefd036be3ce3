//! Compaction: record the compact revision durably, then remove in the background what
//! it made unreachable, walking the change log from its start in bounded chunks.
//!
//! What goes is exactly what etcd's compaction at `C` removes: every version at or
//! below `C` that a newer version at or below `C` supersedes, and the newest version at
//! or below `C` too when it is a deletion (the key is then gone entirely from `C` on).
//!
//! Each change-log entry at revision `R <= C` of a key says that every older version of
//! that key is superseded at `R`; so processing it removes *all* versions of the key
//! below `R` (not only the one the entry names — an earlier compaction may have kept a
//! version whose log entry it already dropped, and that version must go once it is
//! superseded), and the version at `R` as well when it is a deletion. Then the entry
//! goes. By induction every version at or below `C` that has a newer one at or below
//! `C` was removed with that newer one's entry, whichever compaction processed it.
//!
//! Every step is idempotent (the version removals are applied before the log entries
//! that caused them), so a purge a crash interrupted simply runs again at the next
//! start. Readers that scan several entries (lists, watch replay) hold the read side of
//! `purge_gate`, and each chunk is applied under its write side, so no scan sees an old
//! value without the deletion that ends it.
//!
//! Data directories of format 1 were purged by an earlier algorithm that processed
//! only the versions its log entries named (and kept tombstones at `C`): versions it
//! kept lost their log entries, so later purges never found them again and a deleted
//! or updated key could fall back to one of them. [`Inner::repair_format1`] scans every
//! version once at open and removes what the compaction should have, then marks the
//! directory format 2.

use super::codec::{
    FORMAT, KIND_DELETE, META_COMPACT, META_FORMAT, decode_rev, decode_version, rev_bytes,
    split_version_key, version_key, version_prefix,
};
use super::{Inner, Result, Revision, StoreError, backend};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Log entries (or versions, for the repair) examined per chunk by default: bounds
/// the work between checks for shutdown and the time the purge gate is held.
pub const DEFAULT_PURGE_CHUNK: usize = 1000;

/// How long a purge chunk waits for readers to leave the gate before it queues for
/// it (and new readers queue behind it).
const GATE_PATIENCE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct PurgeState {
    requested: bool,
    running: bool,
    shutdown: bool,
}

/// Wakes the purge thread and lets callers wait for it to go idle.
#[derive(Default)]
pub(super) struct PurgeSignal {
    state: Mutex<PurgeState>,
    changed: Condvar,
}

impl PurgeSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, PurgeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn request(&self) {
        self.lock().requested = true;
        self.changed.notify_all();
    }

    pub(super) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.changed.notify_all();
    }

    fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }

    pub(super) fn wait_idle(&self) {
        let mut st = self.lock();
        while (st.requested || st.running) && !st.shutdown {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until a purge is requested; false on shutdown.
    fn next(&self) -> bool {
        let mut st = self.lock();
        st.running = false;
        self.changed.notify_all();
        while !st.requested && !st.shutdown {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.requested = false;
        st.running = !st.shutdown;
        !st.shutdown
    }
}

impl Inner {
    /// The `Store::compact` contract: validate, record durably, start the purge.
    pub(super) fn compact(&self, revision: Revision) -> Result<()> {
        let _serial = self.compact_lock.lock().unwrap_or_else(|e| e.into_inner());
        let compact_revision = self.compact_revision.load(Ordering::SeqCst);
        if revision <= compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision,
            });
        }
        let current = self.durable_revision();
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        self.meta
            .insert(META_COMPACT, &rev_bytes(revision))
            .map_err(backend)?;
        self.make_durable()
            .map_err(|e| StoreError::Backend(format!("recording the compaction: {e}")))?;
        self.compact_revision.store(revision, Ordering::SeqCst);
        self.purge.request();
        Ok(())
    }

    pub(super) fn run_purger(&self) {
        while self.purge.next() {
            let revision = self.compact_revision.load(Ordering::SeqCst);
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.purge_to(revision)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "datastore compaction failed; it will be retried at the next compaction")
                }
                Err(_) => tracing::error!(
                    "datastore compaction panicked; it will be retried at the next compaction"
                ),
            }
        }
    }

    /// The write side of the purge gate. Readers are let go first: while one holds
    /// the gate a waiting writer would make every new reader (watch replays run on the
    /// async workers) wait too, so the purge only queues after [`GATE_PATIENCE`].
    fn gate_for_purge(&self) -> RwLockWriteGuard<'_, ()> {
        let started = Instant::now();
        loop {
            match self.purge_gate.try_write() {
                Ok(guard) => return guard,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < GATE_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return self.purge_gate.write().unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    pub(super) fn purge_to(&self, compact_revision: Revision) -> Result<()> {
        loop {
            if self.purge.is_shutdown() {
                return Ok(());
            }
            let chunk: Vec<(sled::IVec, sled::IVec)> = self
                .log
                .range(..=rev_bytes(compact_revision))
                .take(self.purge_chunk)
                .collect::<std::result::Result<_, _>>()
                .map_err(backend)?;
            if chunk.is_empty() {
                return Ok(());
            }
            // per key, the newest revision this chunk logs: its entry supersedes every
            // older version, those the chunk's other entries of the key name included
            let mut newest: HashMap<&str, Revision> = HashMap::new();
            let mut log = sled::Batch::default();
            for (raw_rev, raw_key) in &chunk {
                let revision = decode_rev(raw_rev)?;
                let key = std::str::from_utf8(raw_key)
                    .map_err(|_| StoreError::Backend("corrupt datastore: log key".into()))?;
                let r = newest.entry(key).or_insert(revision);
                *r = (*r).max(revision);
                log.remove(raw_rev.clone());
            }
            let mut versions = sled::Batch::default();
            for (key, revision) in newest {
                // every older version of the key is superseded at `revision <= C`
                for older in self
                    .versions
                    .range(version_prefix(key)..version_key(key, revision))
                {
                    let (older, _) = older.map_err(backend)?;
                    versions.remove(older);
                }
                let this = version_key(key, revision);
                if let Some(raw) = self.versions.get(&this).map_err(backend)? {
                    if decode_version(&raw)?.kind == KIND_DELETE {
                        versions.remove(this);
                    }
                }
            }
            let _gate = self.gate_for_purge();
            self.versions.apply_batch(versions).map_err(backend)?;
            self.log.apply_batch(log).map_err(backend)?;
        }
    }

    /// Repairs a format-1 directory (see the module documentation): of every key, the
    /// versions at or below the compact revision are reduced to the newest one, and to
    /// none when that one is a deletion. Versions above the compact revision and every
    /// live value are untouched. Idempotent; the directory becomes format 2 only once
    /// the repair is durable.
    pub(super) fn repair_format1(&self) -> Result<usize> {
        let compact_revision = self.compact_revision.load(Ordering::SeqCst);
        let mut removed = 0usize;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        // the versions of the key being scanned that are at or below C, oldest first
        let mut group: Option<(String, Vec<(sled::IVec, bool)>)> = None;
        let mut settle = |group: Option<(String, Vec<(sled::IVec, bool)>)>,
                          batch: &mut sled::Batch,
                          in_batch: &mut usize| {
            if let Some((_, mut below)) = group {
                if let Some((last, is_delete)) = below.pop() {
                    if is_delete {
                        below.push((last, true));
                    }
                }
                for (raw_key, _) in below {
                    batch.remove(raw_key);
                    *in_batch += 1;
                    removed += 1;
                }
            }
        };
        for entry in self.versions.iter() {
            let (raw_key, raw) = entry.map_err(backend)?;
            let (key, revision) = split_version_key(&raw_key)?;
            if group.as_ref().is_none_or(|(k, _)| k != key) {
                settle(group.take(), &mut batch, &mut in_batch);
                group = Some((key.to_string(), Vec::new()));
                if in_batch >= self.purge_chunk {
                    let _gate = self.gate_for_purge();
                    self.versions
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(backend)?;
                    in_batch = 0;
                }
            }
            if revision <= compact_revision {
                let is_delete = decode_version(&raw)?.kind == KIND_DELETE;
                if let Some((_, below)) = group.as_mut() {
                    below.push((raw_key, is_delete));
                }
            }
        }
        settle(group.take(), &mut batch, &mut in_batch);
        {
            let _gate = self.gate_for_purge();
            self.versions.apply_batch(batch).map_err(backend)?;
        }
        self.make_durable()
            .map_err(|e| StoreError::Backend(format!("repairing the datastore: {e}")))?;
        self.meta
            .insert(META_FORMAT, &FORMAT.to_be_bytes())
            .map_err(backend)?;
        self.make_durable()
            .map_err(|e| StoreError::Backend(format!("repairing the datastore: {e}")))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SledOptions, SledStore};
    use super::*;
    use crate::store::Store;

    /// The purge of format 1, kept as a test fixture: it builds the damaged
    /// directories that the repair at open must handle. `torn`: it dies after
    /// applying its first chunk's version removals, before their log removals.
    fn legacy_purge_to(inner: &Inner, compact_revision: Revision, torn: bool) {
        loop {
            let chunk: Vec<(sled::IVec, sled::IVec)> = inner
                .log
                .range(..rev_bytes(compact_revision))
                .take(DEFAULT_PURGE_CHUNK)
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            if chunk.is_empty() {
                return;
            }
            let mut versions = sled::Batch::default();
            let mut log = sled::Batch::default();
            for (raw_rev, raw_key) in &chunk {
                let revision = decode_rev(raw_rev).unwrap();
                let key = std::str::from_utf8(raw_key).unwrap();
                let this = version_key(key, revision);
                let superseded = inner
                    .versions
                    .range(version_key(key, revision + 1)..version_key(key, compact_revision))
                    .next()
                    .is_some();
                let is_delete = match inner.versions.get(&this).unwrap() {
                    Some(raw) => decode_version(&raw).unwrap().kind == KIND_DELETE,
                    None => false,
                };
                if superseded || is_delete {
                    versions.remove(this);
                }
                log.remove(raw_rev.clone());
            }
            inner.versions.apply_batch(versions).unwrap();
            if torn {
                return;
            }
            inner.log.apply_batch(log).unwrap();
        }
    }

    fn legacy_compact(store: &SledStore, revision: Revision) {
        legacy_compact_with(store, revision, false)
    }

    fn legacy_compact_with(store: &SledStore, revision: Revision, torn: bool) {
        // the purge requested when the store opened must not run alongside
        store.wait_purged();
        let inner = &store.inner;
        inner
            .meta
            .insert(META_COMPACT, &rev_bytes(revision))
            .unwrap();
        inner.compact_revision.store(revision, Ordering::SeqCst);
        legacy_purge_to(inner, revision, torn);
    }

    fn mark_format1(store: &SledStore) {
        store
            .inner
            .meta
            .insert(META_FORMAT, &1u32.to_be_bytes())
            .unwrap();
    }

    fn versions_of(store: &SledStore, key: &str) -> Vec<(Revision, bool)> {
        store
            .retained_versions()
            .unwrap()
            .into_iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, r, d)| (r, d))
            .collect()
    }

    async fn value_of(store: &SledStore, key: &str) -> Option<(Vec<u8>, Revision)> {
        store
            .get(key)
            .await
            .unwrap()
            .kv
            .map(|kv| (kv.value, kv.mod_revision))
    }

    /// A directory written and compacted by the format-1 purge: the repair at open
    /// removes what etcd's compaction would have (stale versions it orphaned, a
    /// deletion at the compact revision and what it deleted), keeps every live value,
    /// marks the directory format 2, and later compactions finish the keys whose
    /// deletion the old purge had not yet reached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_compacted_by_the_format1_purge_is_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        let live = store.create("/r/live", b"live".to_vec()).await.unwrap();
        let pending = store.create("/r/pending", b"p1".to_vec()).await.unwrap();
        let zombie = store.create("/r/zombie", b"z1".to_vec()).await.unwrap();
        let stale1 = store.create("/r/stale", b"s1".to_vec()).await.unwrap();
        let c1 = store.create("/r/dummy", b"d".to_vec()).await.unwrap();
        legacy_compact(&store, c1);
        let zombie2 = store
            .update("/r/zombie", b"z2".to_vec(), zombie)
            .await
            .unwrap();
        store.delete("/r/zombie", zombie2).await.unwrap();
        let stale2 = store
            .update("/r/stale", b"s2".to_vec(), stale1)
            .await
            .unwrap();
        let stale3 = store
            .update("/r/stale", b"s3".to_vec(), stale2)
            .await
            .unwrap();
        let tomb = store.create("/r/tomb", b"t1".to_vec()).await.unwrap();
        let c2 = store.delete("/r/tomb", tomb).await.unwrap();
        legacy_compact(&store, c2);
        // the fixture is the old code path: it brought the deleted /r/zombie back
        assert_eq!(
            value_of(&store, "/r/zombie").await,
            Some((b"z1".to_vec(), zombie))
        );
        // and left an orphaned version of /r/stale and a deletion at C behind
        assert_eq!(
            versions_of(&store, "/r/stale"),
            vec![(stale1, false), (stale3, false)]
        );
        assert_eq!(
            versions_of(&store, "/r/tomb"),
            vec![(tomb, false), (c2, true)]
        );
        // deleted after the old purge's last run: its next purge would have brought
        // p1 back
        let deleted = store.delete("/r/pending", pending).await.unwrap();
        mark_format1(&store);
        drop(store);

        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        assert_eq!(
            store.inner.meta.get(META_FORMAT).unwrap().as_deref(),
            Some(&FORMAT.to_be_bytes()[..])
        );
        store.check_integrity().unwrap();
        assert_eq!(
            value_of(&store, "/r/live").await,
            Some((b"live".to_vec(), live))
        );
        assert_eq!(versions_of(&store, "/r/live"), vec![(live, false)]);
        assert_eq!(versions_of(&store, "/r/stale"), vec![(stale3, false)]);
        assert_eq!(
            value_of(&store, "/r/stale").await,
            Some((b"s3".to_vec(), stale3))
        );
        assert_eq!(versions_of(&store, "/r/tomb"), vec![]);
        assert_eq!(value_of(&store, "/r/tomb").await, None);
        assert_eq!(value_of(&store, "/r/pending").await, None);
        // a deletion the old purge already lost is not recorded anywhere: the object
        // it brought back stays (it must be deleted again)
        assert_eq!(
            value_of(&store, "/r/zombie").await,
            Some((b"z1".to_vec(), zombie))
        );
        // the next compactions (the new purge) keep /r/pending deleted
        store.compact(deleted).await.unwrap();
        store.wait_purged();
        assert_eq!(versions_of(&store, "/r/pending"), vec![]);
        assert_eq!(value_of(&store, "/r/pending").await, None);
        let later = store.create("/r/later", b"x".to_vec()).await.unwrap();
        store.compact(later).await.unwrap();
        store.wait_purged();
        assert_eq!(value_of(&store, "/r/pending").await, None);
        assert_eq!(
            value_of(&store, "/r/live").await,
            Some((b"live".to_vec(), live))
        );
        store.check_integrity().unwrap();
        let before = store.retained_versions().unwrap();
        // the repair is idempotent: a directory marked format 1 again (a crash before
        // the mark was durable) comes out the same
        mark_format1(&store);
        drop(store);
        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        assert_eq!(store.retained_versions().unwrap(), before);
        assert_eq!(
            value_of(&store, "/r/live").await,
            Some((b"live".to_vec(), live))
        );
        assert_eq!(value_of(&store, "/r/pending").await, None);
    }

    /// The old purge applied its version removals before its log removals: a crash
    /// in between left log entries naming versions already gone, while the version
    /// an earlier compaction had orphaned was visible again. The open runs the purge
    /// those entries still ask for before it serves anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_directory_whose_format1_purge_died_midway_is_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        let a = store.create("/t/a", b"a1".to_vec()).await.unwrap();
        let c1 = store.create("/t/dummy", b"d".to_vec()).await.unwrap();
        legacy_compact(&store, c1);
        let b = store.update("/t/a", b"a2".to_vec(), a).await.unwrap();
        let d = store.delete("/t/a", b).await.unwrap();
        let live = store.create("/t/live", b"l".to_vec()).await.unwrap();
        legacy_compact_with(&store, live, true);
        // the torn purge removed b and d but not their log entries: a1 shows again
        assert_eq!(versions_of(&store, "/t/a"), vec![(a, false)]);
        assert_eq!(value_of(&store, "/t/a").await, Some((b"a1".to_vec(), a)));
        assert!(store.inner.log.get(rev_bytes(d)).unwrap().is_some());
        mark_format1(&store);
        drop(store);

        let store = SledStore::open(SledOptions::new(&path)).unwrap();
        assert_eq!(value_of(&store, "/t/a").await, None);
        assert_eq!(versions_of(&store, "/t/a"), vec![]);
        assert_eq!(
            value_of(&store, "/t/live").await,
            Some((b"l".to_vec(), live))
        );
        assert_eq!(
            value_of(&store, "/t/dummy").await,
            Some((b"d".to_vec(), c1))
        );
        store.check_integrity().unwrap();
    }

    /// The new purge over the same history: nothing stale is left, whatever the order
    /// of compactions, and every removal is what etcd's compaction would do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_kept_by_one_compaction_goes_when_a_later_one_passes_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledOptions::new(dir.path().join("db"))).unwrap();
        let a1 = store.create("/k/a", b"1".to_vec()).await.unwrap();
        let c1 = store.create("/k/other", b"x".to_vec()).await.unwrap();
        store.compact(c1).await.unwrap();
        store.wait_purged();
        // a1 is the newest at or below c1: kept, though its log entry is gone
        assert_eq!(versions_of(&store, "/k/a"), vec![(a1, false)]);
        let a2 = store.update("/k/a", b"2".to_vec(), a1).await.unwrap();
        let gone = store.delete("/k/a", a2).await.unwrap();
        store.compact(gone).await.unwrap();
        store.wait_purged();
        assert_eq!(versions_of(&store, "/k/a"), vec![]);
        assert_eq!(value_of(&store, "/k/a").await, None);
        assert!(store.inner.log.is_empty());
    }
}
