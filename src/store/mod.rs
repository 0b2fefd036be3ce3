//! The datastore contract every other part of skua stands on.
//!
//! The [`Store`] trait is modelled on what Kubernetes needs from etcd (etcd's
//! `client/v3/kubernetes` interface): single-key reads and optimistic writes, consistent
//! paged lists at a revision, and an ordered watch stream with previous values.
//! Revisions are one global, strictly increasing counter that becomes the
//! `resourceVersion` of every object; a backend never hands the same revision out twice,
//! not even across crashes.
//!
//! Backends: [`sled::SledStore`] (embedded, default), [`etcd::EtcdStore`] (external
//! etcd v3 for HA) and [`memory::MemoryStore`] (tests).

pub(crate) mod compactor;
pub mod etcd;
pub mod etcd_local;
mod hub;
pub mod memory;
pub mod sled;

use async_trait::async_trait;
use std::fmt;

/// A store revision. Revision `0` is never assigned to a write; in arguments it means
/// "the latest" (lists) or "from now on" (watches), as in Kubernetes.
pub type Revision = i64;

/// One key and the version of its value that a read or an event saw.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes (empty in the `kv` of a delete event).
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the write that produced this version; Kubernetes' `resourceVersion`.
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value", &String::from_utf8_lossy(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// The answer to a single-key read: the version (if the key exists) and the store
/// revision the read was served at, so a caller can watch from there without a gap.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GetResult {
    /// The key's current version; `None` if it does not exist.
    pub kv: Option<KeyValue>,
    /// The store revision the read was served at.
    pub revision: Revision,
}

/// How to list: at which revision, how many items, and where to continue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Revision to list at; `0` means the latest. A past revision works until it is
    /// compacted, then the list fails with [`StoreError::Compacted`].
    pub revision: Revision,
    /// Maximum number of items to return; `0` means no limit.
    pub limit: usize,
    /// Inclusive key to start from (the key after the last one of the previous page,
    /// see [`ListResult::continue_key`]); it must lie within the listed prefix.
    pub continue_from: Option<String>,
}

/// One page of a list, consistent at `revision`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListResult {
    /// Items in key order.
    pub kvs: Vec<KeyValue>,
    /// Number of keys from the start key to the end of the prefix at `revision`,
    /// including the returned ones (so `count - kvs.len()` items remain).
    pub count: usize,
    /// The revision this page was read at; later pages must be read at the same one.
    pub revision: Revision,
    /// Whether items remain after this page.
    pub more: bool,
}

impl ListResult {
    /// The `continue_from` for the next page, if there is one: the last key plus a NUL,
    /// the smallest key greater than it.
    pub fn continue_key(&self) -> Option<String> {
        if !self.more {
            return None;
        }
        self.kvs.last().map(|kv| format!("{}\0", kv.key))
    }
}

/// What a write did to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Whether the key was written or deleted.
    pub kind: EventKind,
    /// The new version; for a delete, the key with an empty value and `mod_revision`
    /// set to the revision of the delete.
    pub kv: KeyValue,
    /// The version this change replaced, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The event of a write at `revision`: a put of `value`, or a delete for `None`.
    pub(crate) fn of_write(
        key: &str,
        revision: Revision,
        create_revision: Revision,
        value: Option<Vec<u8>>,
        prev: Option<KeyValue>,
    ) -> Event {
        let (kind, value, create_revision) = match value {
            Some(value) => (EventKind::Put, value, create_revision),
            None => (EventKind::Delete, Vec::new(), 0),
        };
        Event {
            kind,
            kv: KeyValue {
                key: key.to_string(),
                value,
                create_revision,
                mod_revision: revision,
            },
            prev,
        }
    }

    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// One message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// A change to a key under the watched prefix.
    Event(Event),
    /// Every event of the watched prefix up to and including this revision has been
    /// delivered (etcd's progress notification; Kubernetes turns it into a bookmark).
    Progress(Revision),
}

impl WatchMessage {
    /// The revision of the event, or the one the progress reached.
    pub fn revision(&self) -> Revision {
        match self {
            WatchMessage::Event(e) => e.revision(),
            WatchMessage::Progress(r) => *r,
        }
    }
}

/// A live watch. Messages arrive in revision order without gaps; the stream ends with
/// an error when the watcher falls too far behind or its start was compacted, after
/// which the caller relists (Kubernetes answers `410 Gone`).
pub struct Watch {
    inner: Box<dyn WatchStream>,
}

impl Watch {
    pub(crate) fn new(inner: Box<dyn WatchStream>) -> Self {
        Watch { inner }
    }

    /// The next message; `None` once the store has shut down.
    pub async fn next(&mut self) -> Option<Result<WatchMessage, StoreError>> {
        self.inner.next().await
    }

    /// Asks for a [`WatchMessage::Progress`] to be delivered in order with the events.
    pub async fn request_progress(&mut self) -> Result<(), StoreError> {
        self.inner.request_progress().await
    }
}

/// What backends implement to serve a [`Watch`].
#[async_trait]
pub(crate) trait WatchStream: Send {
    async fn next(&mut self) -> Option<Result<WatchMessage, StoreError>>;
    async fn request_progress(&mut self) -> Result<(), StoreError>;
}

/// Everything that can go wrong in the store, in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StoreError {
    /// A create found the key already there.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete expected another `mod_revision`; `current` is the version
    /// now stored (`None` if the key does not exist), so the caller can retry at once.
    #[error("key {key:?} was modified: expected revision {expected}, found {}", current.as_ref().map_or("no key".to_string(), |kv| kv.mod_revision.to_string()))]
    Conflict {
        /// The key.
        key: String,
        /// The `mod_revision` the caller expected.
        expected: Revision,
        /// The version now stored, if any.
        current: Option<KeyValue>,
    },
    /// A read or watch asked for a revision that compaction has discarded.
    #[error(
        "revision {requested} has been compacted; the oldest available revision is {compact_revision}"
    )]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still available.
        compact_revision: Revision,
    },
    /// A read asked for a revision the store has not reached yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A watcher fell too far behind and was stopped; it must list again.
    #[error(
        "watch fell too far behind at revision {revision} and was stopped; list again and watch from the list's revision"
    )]
    Expired {
        /// The revision the watch had reached.
        revision: Revision,
    },
    /// A key the backends cannot store (empty, or containing a NUL byte).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: std::borrow::Cow<'static, str>,
    },
    /// A request the store cannot serve as asked, such as an expected revision that is
    /// not one or a continue key outside the listed prefix.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The data directory cannot be used as it is; the message names the path and what
    /// to do. Nothing has been changed on disk.
    #[error("{0}")]
    DataDir(String),
    /// The datastore cannot do this at all (e.g. an etcd without progress requests).
    #[error("not supported by this datastore: {0}")]
    Unsupported(String),
    /// The datastore cannot be reached now; the request may succeed if retried.
    #[error("the datastore is unavailable: {0}")]
    Unavailable(String),
    /// Any other failure of the datastore itself.
    #[error("datastore error: {0}")]
    Backend(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The contract between skua and its datastore (see the module documentation).
///
/// All writes are single-key and acknowledged only once durable; all reads are
/// linearizable (they see every acknowledged write).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<GetResult>;

    /// Lists the keys starting with `prefix`, consistently at one revision.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    /// Returns the revision of the write.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Replaces `key` if its `mod_revision` is still `expected`, else fails with
    /// [`StoreError::Conflict`]. Returns the revision of the write.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision>;

    /// Deletes `key` if its `mod_revision` is still `expected`, else fails with
    /// [`StoreError::Conflict`]. Returns the revision of the delete.
    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision>;

    /// Watches every key starting with `prefix` for changes after revision `since`
    /// (`0`: from now on). Fails with [`StoreError::Compacted`] if events after `since`
    /// are no longer kept.
    async fn watch(&self, prefix: &str, since: Revision) -> Result<Watch>;

    /// The latest revision: every acknowledged write has a revision at or below it.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards the history before `revision`: reads and watches that need an older
    /// revision fail with [`StoreError::Compacted`] afterwards.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// A short name for logs and benchmarks ("sled", "etcd", "memory").
    fn backend(&self) -> &'static str;

    /// Whether [`Watch::request_progress`] is available (it is not on etcd versions
    /// whose progress notifications can run ahead of events).
    fn supports_progress(&self) -> bool {
        true
    }
}

/// Rejects keys the backends cannot all store the same way. NUL is reserved: the
/// sled backend uses it to separate a key from its revision, and list continuation
/// uses it to build "the next key".
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason: "a key must not be empty".into(),
        });
    }
    if key.as_bytes().contains(&0) {
        return Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason: "a key must not contain a NUL byte".into(),
        });
    }
    Ok(())
}

/// Update and delete need the revision the caller read; 0 would mean "absent" to etcd.
pub(crate) fn validate_expected(expected: Revision) -> Result<()> {
    if expected <= 0 {
        return Err(StoreError::InvalidArgument(format!(
            "expected revision {expected} is not a revision; pass the mod_revision you read"
        )));
    }
    Ok(())
}

/// Checks a list's continuation key against its prefix and returns the start key.
pub(crate) fn list_start<'a>(prefix: &'a str, opts: &'a ListOptions) -> Result<&'a str> {
    match opts.continue_from.as_deref() {
        None => Ok(prefix),
        Some(start) if start.starts_with(prefix) => Ok(start),
        Some(start) => Err(StoreError::InvalidArgument(format!(
            "continue key {start:?} is outside the listed prefix {prefix:?}"
        ))),
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`);
/// empty means "no end".
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_carries() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }

    #[test]
    fn keys_must_be_nonempty_and_nul_free() {
        assert!(validate_key("/registry/pods/a").is_ok());
        assert!(matches!(
            validate_key(""),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            validate_key("a\0b"),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    #[test]
    fn continue_key_is_the_successor_of_the_last_key() {
        let kv = |k: &str| KeyValue {
            key: k.into(),
            value: vec![],
            create_revision: 1,
            mod_revision: 1,
        };
        let page = ListResult {
            kvs: vec![kv("/a/1"), kv("/a/2")],
            count: 5,
            revision: 9,
            more: true,
        };
        assert_eq!(page.continue_key().as_deref(), Some("/a/2\0"));
        let last = ListResult {
            more: false,
            ..page
        };
        assert_eq!(last.continue_key(), None);
    }

    #[test]
    fn continuation_outside_prefix_is_refused() {
        let opts = ListOptions {
            continue_from: Some("/b/x".into()),
            ..Default::default()
        };
        assert!(matches!(
            list_start("/a/", &opts),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
