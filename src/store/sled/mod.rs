//! The default, embedded backend: MVCC on sled 0.34, with group commit and an in-memory
//! watch fan-out.
//!
//! * A write takes the writer lock, checks its precondition against the latest version,
//!   gives itself the next revision, and stores the version and its change-log entry in
//!   one sled transaction. It is acknowledged only when the flusher thread has made it
//!   durable; all writes that arrive while one flush runs share the next one.
//! * Nobody sees a write before it is durable: reads are served at the durable revision
//!   and watchers receive changes from the flusher after each flush. A crash can only
//!   lose writes nobody saw, so revisions are never reused in any observable way.
//! * Compaction records the compact revision durably, then a background thread removes
//!   what it made unreachable, walking the change log (work proportional to the changes,
//!   not to the database size).
//!
//! What "durable" takes on Linux is in `docs/datastore.md`: sled's own flush only
//! issues `sync_file_range`, so we follow it with `fdatasync` on the log file and
//! `fsync` on new blob files and their directory.

mod codec;
mod durability;
mod purge;

pub use purge::DEFAULT_PURGE_CHUNK;

use super::hub::{DEFAULT_WATCH_BUFFER, History, Hub};
use super::{
    Event, GetResult, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError,
    Watch, list_start, prefix_end, validate_key,
};
use crate::store::memory::check_expected;
use async_trait::async_trait;
use codec::*;
use durability::{Durable, DurableFiles};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// Default page-cache size: small, for edge boxes.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Marker file written beside sled's files once the store is initialised; its presence
/// means "this directory holds skua data", so a damaged database is never mistaken for
/// a fresh one and initialised over.
const MARKER_FILE: &str = "skua-datastore";

/// How to open a sled store.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Directory of the database (created on first start).
    pub path: PathBuf,
    /// sled page-cache size in bytes.
    pub cache_bytes: u64,
    /// How many messages a watcher may fall behind before it is cut off.
    pub watch_buffer: usize,
    /// Change-log entries a compaction's purge handles per step (tests make it tiny,
    /// so crashes and reads land between steps).
    pub purge_chunk: usize,
}

impl SledOptions {
    /// Options for a store at `path`, with the default cache, watch buffer and purge step.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledOptions {
            path: path.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            watch_buffer: DEFAULT_WATCH_BUFFER,
            purge_chunk: purge::DEFAULT_PURGE_CHUNK,
        }
    }
}

/// See the module documentation.
pub struct SledStore {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

struct WriterState {
    /// Latest applied (not necessarily durable) revision.
    revision: Revision,
    /// Applied changes waiting for the next flush, in revision order.
    pending: Vec<Event>,
    shutdown: bool,
    failure: Option<String>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    versions: sled::Tree,
    log: sled::Tree,
    meta: sled::Tree,
    writer: Mutex<WriterState>,
    wake_flusher: Condvar,
    durable: watch::Sender<Durable>,
    files: DurableFiles,
    hub: Arc<Hub>,
    compact_revision: AtomicI64,
    compact_lock: Mutex<()>,
    purge: purge::PurgeSignal,
    /// Read by scans that look at several entries (lists, watch replay), written by
    /// each purge chunk: a scan never sees half of a chunk (see `purge.rs`).
    purge_gate: RwLock<()>,
    purge_chunk: usize,
}

impl SledStore {
    /// Opens (or, for an empty directory, initialises) the store at `opts.path`.
    pub fn open(opts: SledOptions) -> Result<SledStore> {
        let path = opts.path.clone();
        let db = open_db(&opts)?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| data_dir_error(&path, &format!("cannot open tree {name}: {e}")))
        };
        let (versions, log, meta) = (tree("versions")?, tree("log")?, tree("meta")?);
        let found_format = check_format(&path, &db, &versions, &log, &meta)?;

        let compact_revision = match meta.get(META_COMPACT).map_err(backend)? {
            Some(raw) => decode_rev(&raw)?,
            None => 0,
        };
        let last_logged = match log.last().map_err(backend)? {
            Some((rev, _)) => decode_rev(&rev)?,
            None => 0,
        };
        let revision = last_logged.max(compact_revision).max(1);
        let files = DurableFiles::open(&path)
            .map_err(|e| data_dir_error(&path, &format!("cannot open the database files: {e}")))?;
        let (durable, _) = watch::channel(Durable {
            revision,
            failure: None,
        });
        let inner = Arc::new(Inner {
            path,
            db,
            versions,
            log,
            meta,
            writer: Mutex::new(WriterState {
                revision,
                pending: Vec::new(),
                shutdown: false,
                failure: None,
            }),
            wake_flusher: Condvar::new(),
            durable,
            files,
            hub: Arc::new(Hub::new(revision, opts.watch_buffer)),
            compact_revision: AtomicI64::new(compact_revision),
            compact_lock: Mutex::new(()),
            purge: purge::PurgeSignal::default(),
            purge_gate: RwLock::new(()),
            purge_chunk: opts.purge_chunk.max(1),
        });
        // Establish a durable baseline (a previous run may have died between its
        // writes reaching the page cache and its fsync).
        inner
            .make_durable()
            .map_err(|e| data_dir_error(&inner.path, &format!("cannot sync the database: {e}")))?;
        if found_format < FORMAT {
            // first what the change log still names (the old purge may have died
            // between removing versions and removing their log entries), then the
            // versions no log entry names any more
            inner.purge_to(compact_revision)?;
            let removed = inner.repair_format1()?;
            tracing::warn!(
                path = %inner.path.display(),
                removed,
                compact_revision,
                "repaired a datastore written by an earlier skua, whose compaction could bring deleted or replaced versions back; it is now format {FORMAT} (older skua builds refuse it)"
            );
        }
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("skua-store-flush".into())
                .spawn(move || inner.run_flusher())
                .map_err(|e| StoreError::Backend(format!("cannot start the flusher: {e}")))?
        };
        let purger = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("skua-store-purge".into())
                .spawn(move || inner.run_purger())
                .map_err(|e| StoreError::Backend(format!("cannot start the purger: {e}")))?
        };
        inner.purge.request(); // resume a purge a crash interrupted
        tracing::info!(path = %inner.path.display(), revision, compact_revision, "sled datastore open");
        Ok(SledStore {
            inner,
            threads: vec![flusher, purger],
        })
    }

    /// Bytes the database occupies on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.db.size_on_disk().map_err(backend)
    }

    /// Waits until the background purge has removed everything compaction made
    /// unreachable (tests and benchmarks use this to measure steady-state size).
    pub fn wait_purged(&self) {
        self.inner.purge.wait_idle();
    }

    /// Checks that the version index and the change log agree (every logged revision
    /// has its version and vice versa). Used by the crash test after each restart.
    pub fn check_integrity(&self) -> Result<()> {
        self.inner.check_integrity()
    }

    /// Every version the store keeps, in key and revision order, with `true` for a
    /// deletion: tests compare it with what etcd's compaction keeps.
    pub fn retained_versions(&self) -> Result<Vec<(String, Revision, bool)>> {
        let _gate = self
            .inner
            .purge_gate
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for entry in self.inner.versions.iter() {
            let (raw_key, raw) = entry.map_err(backend)?;
            let (key, revision) = split_version_key(&raw_key)?;
            out.push((
                key.to_string(),
                revision,
                decode_version(&raw)?.kind == KIND_DELETE,
            ));
        }
        Ok(out)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        {
            let mut w = self.inner.lock_writer();
            w.shutdown = true;
        }
        self.inner.wake_flusher.notify_all();
        self.inner.purge.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.inner.hub.close();
        if let Err(e) = self.inner.make_durable() {
            tracing::error!(error = %e, "final datastore flush failed");
        }
    }
}

/// Makes everything below `dir` owner-only (directories 0700, files 0600), without
/// following links: the datastore's files, whatever created them.
fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)?.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let mode = if kind.is_dir() {
                stack.push(path.clone());
                0o700
            } else if kind.is_file() {
                0o600
            } else {
                continue;
            };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn open_db(opts: &SledOptions) -> Result<sled::Db> {
    let path = &opts.path;
    if path.exists() && !path.is_dir() {
        return Err(data_dir_error(path, "it is not a directory"));
    }
    std::fs::create_dir_all(path)
        .map_err(|e| data_dir_error(path, &format!("cannot create it: {e}")))?;
    // every Secret is in here: owner only, also for an older install's files
    restrict_tree(path).map_err(|e| data_dir_error(path, &e.to_string()))?;
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_bytes)
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace);
    // A store closed a moment ago can hold its file lock a little longer: sled's
    // I/O threads finish their last writes after the handle is dropped (a restart
    // in one process, or a server that has just exited). Only a lock held for
    // longer than that means another process uses the directory.
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        // sled panics on some kinds of damage instead of returning an error.
        let config = config.clone();
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
            .map_err(|_| {
                data_dir_error(path, "the database is damaged (sled could not read it)")
            })?;
        let text = match opened {
            Ok(db) => return Ok(db),
            Err(e) => e.to_string(),
        };
        let locked = text.contains("WouldBlock") || text.contains("lock");
        if !locked {
            return Err(data_dir_error(
                path,
                &format!("the database cannot be opened: {text}"),
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(data_dir_error(
                path,
                "it is in use by another process; stop the other skua server or choose another --data-dir",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// How long a held datastore lock may take to be released before the directory is
/// reported as in use.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Refuses data written by a newer skua, damaged data and foreign data; initialises an
/// empty directory. Returns the format found (this build's for a new directory).
fn check_format(
    path: &Path,
    db: &sled::Db,
    versions: &sled::Tree,
    log: &sled::Tree,
    meta: &sled::Tree,
) -> Result<u32> {
    let marker = path.join(MARKER_FILE);
    let format = meta.get(META_FORMAT).map_err(backend)?;
    match format {
        Some(raw) => {
            let found = u32::from_be_bytes(
                raw.as_ref()
                    .try_into()
                    .map_err(|_| data_dir_error(path, "its format marker is damaged"))?,
            );
            if found > FORMAT {
                return Err(data_dir_error(
                    path,
                    &format!(
                        "it was written by a newer skua (datastore format {found}; this skua reads format {FORMAT}); run that newer skua, or restore a backup made by this version"
                    ),
                ));
            }
            if !(FORMAT_REPAIRABLE..=FORMAT).contains(&found) {
                return Err(data_dir_error(
                    path,
                    &format!("it has an unknown datastore format {found}"),
                ));
            }
            Ok(found)
        }
        None if marker.exists() => Err(data_dir_error(
            path,
            "it held a skua datastore but its contents are unreadable or lost (damaged files)",
        )),
        None if !versions.is_empty() || !log.is_empty() => Err(data_dir_error(
            path,
            "it holds data that skua did not write",
        )),
        None => {
            meta.insert(META_FORMAT, &FORMAT.to_be_bytes())
                .map_err(backend)?;
            db.flush().map_err(backend)?;
            durability::write_synced(&marker, b"skua datastore; do not delete\n")
                .map_err(|e| data_dir_error(path, &format!("cannot write {MARKER_FILE}: {e}")))?;
            Ok(FORMAT)
        }
    }
}

/// A data-directory error that names the path and says what to do; nothing on disk
/// has been changed when it is returned.
fn data_dir_error(path: &Path, what: &str) -> StoreError {
    StoreError::DataDir(format!(
        "datastore {}: {what}. skua has not changed anything there; fix the cause, or move the directory away (keep it as a backup) to start an empty cluster",
        path.display()
    ))
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(format!("sled: {e}"))
}

/// Builds the event for a stored version (`raw`) of `key` at `revision`.
fn event_from(key: &str, revision: Revision, raw: &[u8], prev: Option<KeyValue>) -> Result<Event> {
    let stored = decode_version(raw)?;
    let value = (stored.kind == KIND_PUT).then(|| stored.value.to_vec());
    Ok(Event::of_write(
        key,
        revision,
        stored.create_revision,
        value,
        prev,
    ))
}

/// The value a stored version represents, or `None` for a deletion.
fn kv_from(key: &str, revision: Revision, raw: &[u8]) -> Result<Option<KeyValue>> {
    let stored = decode_version(raw)?;
    Ok((stored.kind == KIND_PUT).then(|| KeyValue {
        key: key.to_string(),
        value: stored.value.to_vec(),
        create_revision: stored.create_revision,
        mod_revision: revision,
    }))
}

impl Inner {
    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn durable_revision(&self) -> Revision {
        self.durable.borrow().revision
    }

    /// The latest version of `key` at or before `at` (`None`: absent then).
    fn visible(&self, key: &str, at: Revision) -> Result<Option<KeyValue>> {
        let lower = version_prefix(key);
        let upper = version_key(key, at);
        match self.versions.range(lower..=upper).next_back() {
            Some(entry) => {
                let (raw_key, raw) = entry.map_err(backend)?;
                let (_, revision) = split_version_key(&raw_key)?;
                kv_from(key, revision, &raw)
            }
            None => Ok(None),
        }
    }

    fn check_readable(&self, at: Revision) -> Result<()> {
        let compact_revision = self.compact_revision.load(Ordering::SeqCst);
        if at < compact_revision {
            return Err(StoreError::Compacted {
                requested: at,
                compact_revision,
            });
        }
        Ok(())
    }

    /// Applies one write (under the writer lock) and queues it for the next flush.
    /// On a failed precondition returns the error and the applied revision the caller
    /// must wait for before reporting it (the conflicting version may not be durable).
    fn apply(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        check: impl FnOnce(Option<&KeyValue>) -> Result<()>,
    ) -> std::result::Result<Revision, (StoreError, Revision)> {
        validate_key(key).map_err(|e| (e, 0))?;
        let mut w = self.lock_writer();
        if let Some(failure) = &w.failure {
            return Err((StoreError::Unavailable(failure.clone()), 0));
        }
        let prev = self.visible(key, Revision::MAX).map_err(|e| (e, 0))?;
        check(prev.as_ref()).map_err(|e| (e, w.revision))?;
        let revision = w.revision + 1;
        let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
        let kind = if value.is_some() {
            KIND_PUT
        } else {
            KIND_DELETE
        };
        let stored = encode_version(kind, create_revision, value.as_deref().unwrap_or_default());
        let vkey = version_key(key, revision);
        let lkey = rev_bytes(revision);
        let committed: std::result::Result<(), TransactionError<()>> = (&self.versions, &self.log)
            .transaction(|(versions, log)| {
                versions.insert(vkey.as_slice(), stored.as_slice())?;
                log.insert(&lkey[..], key.as_bytes())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        committed.map_err(|e| (StoreError::Backend(format!("sled transaction: {e:?}")), 0))?;
        w.revision = revision;
        w.pending
            .push(Event::of_write(key, revision, create_revision, value, prev));
        drop(w);
        self.wake_flusher.notify_one();
        Ok(revision)
    }

    /// Waits until `revision` is durable and readable.
    async fn wait_durable(&self, revision: Revision) -> Result<()> {
        let mut rx = self.durable.subscribe();
        let state = rx
            .wait_for(|d| d.revision >= revision || d.failure.is_some())
            .await
            .map_err(|_| StoreError::Unavailable("the datastore is shutting down".into()))?;
        if state.revision >= revision {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                state.failure.clone().unwrap_or_default(),
            ))
        }
    }

    async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        check: impl FnOnce(Option<&KeyValue>) -> Result<()>,
    ) -> Result<Revision> {
        match self.apply(key, value, check) {
            Ok(revision) => {
                self.wait_durable(revision).await?;
                Ok(revision)
            }
            Err((e, applied)) => {
                self.wait_durable(applied).await?;
                Err(e)
            }
        }
    }

    /// A list at `opts.revision`; one at the latest revision is retried when a
    /// compaction passes it while it is read (it asked for no particular revision).
    fn list_at(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        loop {
            match self.list_once(prefix, opts) {
                Err(StoreError::Compacted { .. }) if opts.revision == 0 => continue,
                other => return other,
            }
        }
    }

    fn list_once(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let start = list_start(prefix, opts)?;
        let durable = self.durable_revision();
        let at = if opts.revision == 0 {
            durable
        } else {
            opts.revision
        };
        if at > durable {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: durable,
            });
        }
        self.check_readable(at)?;
        let _gate = self.purge_gate.read().unwrap_or_else(|e| e.into_inner());
        let lower = scan_lower_bound(start);
        let upper = prefix_end(prefix.as_bytes());
        let iter = if upper.is_empty() {
            self.versions.range(lower..)
        } else {
            self.versions.range(lower..upper)
        };
        let mut kvs = Vec::new();
        let mut count = 0usize;
        let mut take = |key: &str, best: Option<(Revision, sled::IVec)>| -> Result<()> {
            if let Some((revision, raw)) = best {
                if let Some(kv) = kv_from(key, revision, &raw)? {
                    count += 1;
                    if opts.limit == 0 || kvs.len() < opts.limit {
                        kvs.push(kv);
                    }
                }
            }
            Ok(())
        };
        // Versions come grouped by key, oldest first: keep the newest one at or
        // before `at` of the key being scanned.
        let mut current: Option<(String, Option<(Revision, sled::IVec)>)> = None;
        for entry in iter {
            let (raw_key, raw) = entry.map_err(backend)?;
            let (key, revision) = split_version_key(&raw_key)?;
            if current.as_ref().is_none_or(|(k, _)| k != key) {
                if let Some((k, best)) = current.take() {
                    take(&k, best)?;
                }
                current = Some((key.to_string(), None));
            }
            if revision <= at {
                if let Some((_, best)) = current.as_mut() {
                    *best = Some((revision, raw));
                }
            }
        }
        if let Some((k, best)) = current {
            take(&k, best)?;
        }
        // A compaction that started while we scanned may have removed versions we need.
        self.check_readable(at)?;
        Ok(ListResult {
            more: count > kvs.len(),
            kvs,
            count,
            revision: at,
        })
    }

    fn check_integrity(&self) -> Result<()> {
        let compact_revision = self.compact_revision.load(Ordering::SeqCst);
        for entry in self.log.iter() {
            let (raw_rev, raw_key) = entry.map_err(backend)?;
            let revision = decode_rev(&raw_rev)?;
            let key = std::str::from_utf8(&raw_key)
                .map_err(|_| StoreError::Backend("corrupt datastore: log key".into()))?;
            if revision > compact_revision
                && self
                    .versions
                    .get(version_key(key, revision))
                    .map_err(backend)?
                    .is_none()
            {
                return Err(StoreError::Backend(format!(
                    "integrity: revision {revision} of {key:?} is logged but not stored"
                )));
            }
        }
        for entry in self.versions.iter() {
            let (raw_key, raw) = entry.map_err(backend)?;
            let (key, revision) = split_version_key(&raw_key)?;
            decode_version(&raw)?;
            if revision > compact_revision {
                let logged = self.log.get(rev_bytes(revision)).map_err(backend)?;
                if logged.as_deref() != Some(key.as_bytes()) {
                    return Err(StoreError::Backend(format!(
                        "integrity: revision {revision} of {key:?} is stored but not logged"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl History for Inner {
    fn events_between(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        max: usize,
    ) -> Result<Vec<Event>> {
        // events after a revision below C are not all kept: a purge removed the
        // deletions and superseded versions at or below C
        self.check_readable(after)?;
        let _gate = self.purge_gate.read().unwrap_or_else(|e| e.into_inner());
        let events = self.replay(prefix, after, upto, max);
        // a compaction recorded meanwhile is the reason for any gap: say that first
        self.check_readable(after)?;
        events
    }
}

impl Inner {
    fn replay(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        max: usize,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        for entry in self.log.range(rev_bytes(after + 1)..=rev_bytes(upto)) {
            let (raw_rev, raw_key) = entry.map_err(backend)?;
            if !raw_key.starts_with(prefix.as_bytes()) {
                continue;
            }
            let revision = decode_rev(&raw_rev)?;
            let key = std::str::from_utf8(&raw_key)
                .map_err(|_| StoreError::Backend("corrupt datastore: log key".into()))?;
            let mut older = self
                .versions
                .range(version_prefix(key)..=version_key(key, revision))
                .rev();
            let missing = || {
                StoreError::Backend(format!(
                    "corrupt datastore: revision {revision} of {key:?} is missing"
                ))
            };
            let (this_key, raw) = older
                .next()
                .transpose()
                .map_err(backend)?
                .ok_or_else(missing)?;
            if split_version_key(&this_key)?.1 != revision {
                return Err(missing());
            }
            let prev = match older.next().transpose().map_err(backend)? {
                Some((prev_key, prev_raw)) => {
                    let (_, prev_rev) = split_version_key(&prev_key)?;
                    kv_from(key, prev_rev, &prev_raw)?
                }
                None => None,
            };
            events.push(event_from(key, revision, &raw, prev)?);
            if events.len() == max {
                break;
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        loop {
            let at = self.inner.durable_revision();
            let kv = self.inner.visible(key, at)?;
            // a compaction past `at` (newer writes became durable meanwhile) may have
            // purged the version `at` needed: read again at the newer revision
            if self.inner.check_readable(at).is_ok() {
                return Ok(GetResult { kv, revision: at });
            }
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || inner.list_at(&prefix, &opts))
            .await
            .map_err(|e| StoreError::Backend(format!("list task failed: {e}")))?
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.inner
            .write(key, Some(value), |prev| match prev {
                Some(_) => Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                }),
                None => Ok(()),
            })
            .await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        self.inner
            .write(key, Some(value), |prev| check_expected(key, prev, expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.inner
            .write(key, None, |prev| check_expected(key, prev, expected))
            .await
    }

    async fn watch(&self, prefix: &str, since: Revision) -> Result<Watch> {
        if since != 0 {
            self.inner.check_readable(since)?;
        }
        // "from now on" is from the durable revision: a write already acknowledged
        // may not have reached the hub yet, and must not show up as new
        let since = if since == 0 {
            self.inner.durable_revision()
        } else {
            since
        };
        Ok(Watch::new(Box::new(self.inner.hub.watch(
            self.inner.clone(),
            prefix,
            since,
        ))))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.durable_revision())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.compact(revision))
            .await
            .map_err(|e| StoreError::Backend(format!("compaction task failed: {e}")))?
    }

    fn backend(&self) -> &'static str {
        "sled"
    }
}
