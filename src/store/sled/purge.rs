//! Compaction: record the compact revision durably, then remove in the background what
//! it made unreachable, walking the change log from its start in bounded chunks.
//!
//! A version older than the compact revision `C` is removed when a newer version of its
//! key older than `C` exists, or when it is a deletion; the newest value before `C`
//! stays (reads at `C` need it). Log entries before `C` go. Every step is idempotent,
//! so a purge a crash interrupted simply runs again at the next start.

use super::codec::{KIND_DELETE, META_COMPACT, decode_rev, decode_version, rev_bytes, version_key};
use super::{Inner, Result, Revision, StoreError, backend};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};

/// Log entries examined per chunk: bounds the work between checks for shutdown.
const PURGE_CHUNK: usize = 1000;

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
            if let Err(e) = self.purge_to(self.compact_revision.load(Ordering::SeqCst)) {
                tracing::error!(error = %e, "datastore compaction failed; it will be retried at the next compaction");
            }
        }
    }

    fn purge_to(&self, compact_revision: Revision) -> Result<()> {
        loop {
            if self.purge.is_shutdown() {
                return Ok(());
            }
            let chunk: Vec<(sled::IVec, sled::IVec)> = self
                .log
                .range(..rev_bytes(compact_revision))
                .take(PURGE_CHUNK)
                .collect::<std::result::Result<_, _>>()
                .map_err(backend)?;
            if chunk.is_empty() {
                return Ok(());
            }
            let mut versions = sled::Batch::default();
            let mut log = sled::Batch::default();
            for (raw_rev, raw_key) in &chunk {
                let revision = decode_rev(raw_rev)?;
                let key = std::str::from_utf8(raw_key)
                    .map_err(|_| StoreError::Backend("corrupt datastore: log key".into()))?;
                let this = version_key(key, revision);
                let superseded = self
                    .versions
                    .range(version_key(key, revision + 1)..version_key(key, compact_revision))
                    .next()
                    .is_some();
                let is_delete = match self.versions.get(&this).map_err(backend)? {
                    Some(raw) => decode_version(&raw)?.kind == KIND_DELETE,
                    None => false,
                };
                if superseded || is_delete {
                    versions.remove(this);
                }
                log.remove(raw_rev.clone());
            }
            self.versions.apply_batch(versions).map_err(backend)?;
            self.log.apply_batch(log).map_err(backend)?;
        }
    }
}
