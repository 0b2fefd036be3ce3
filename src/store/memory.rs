//! An in-memory [`Store`] for unit tests: the same contract as the durable backends
//! (revisions, history, compaction, watch fan-out), kept in a few ordered maps.

use super::hub::{DEFAULT_WATCH_BUFFER, History, Hub};
use super::{
    Event, GetResult, KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError,
    Watch, list_start, validate_key,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// See the module documentation.
pub struct MemoryStore {
    state: Arc<Shared>,
    hub: Arc<Hub>,
}

struct Shared {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    compact_revision: Revision,
    /// Every kept version of every key, oldest first; a `None` value is a deletion.
    versions: BTreeMap<String, Vec<Version>>,
    /// Revision → key, for watch replay.
    log: BTreeMap<Revision, String>,
}

#[derive(Clone)]
struct Version {
    revision: Revision,
    create_revision: Revision,
    value: Option<Vec<u8>>,
}

impl Version {
    fn to_kv(&self, key: &str) -> Option<KeyValue> {
        self.value.as_ref().map(|value| KeyValue {
            key: key.to_string(),
            value: value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.revision,
        })
    }
}

impl State {
    /// The version of `key` visible at `at`, if the key existed then.
    fn visible(&self, key: &str, at: Revision) -> Option<KeyValue> {
        self.versions
            .get(key)?
            .iter()
            .rev()
            .find(|v| v.revision <= at)?
            .to_kv(key)
    }

    fn check_readable(&self, at: Revision) -> Result<()> {
        if at < self.compact_revision {
            return Err(StoreError::Compacted {
                requested: at,
                compact_revision: self.compact_revision,
            });
        }
        if at > self.revision {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default watch buffer.
    pub fn new() -> Self {
        Self::with_watch_buffer(DEFAULT_WATCH_BUFFER)
    }

    /// A store whose watchers are cut off after falling `buffer` messages behind.
    pub fn with_watch_buffer(buffer: usize) -> Self {
        let state = State {
            revision: 1,
            ..State::default()
        };
        MemoryStore {
            state: Arc::new(Shared {
                inner: Mutex::new(state),
            }),
            hub: Arc::new(Hub::new(1, buffer)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Every version the store keeps, in key and revision order, with `true` for a
    /// deletion: tests compare it with what etcd's compaction keeps.
    pub fn retained_versions(&self) -> Vec<(String, Revision, bool)> {
        let st = self.lock();
        st.versions
            .iter()
            .flat_map(|(key, versions)| {
                versions
                    .iter()
                    .map(|v| (key.clone(), v.revision, v.value.is_none()))
            })
            .collect()
    }

    /// Applies one write under the lock and publishes it before releasing the lock, so
    /// watchers see writes in revision order.
    fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        check: impl FnOnce(Option<&KeyValue>) -> Result<()>,
    ) -> Result<Revision> {
        validate_key(key)?;
        let mut st = self.lock();
        let prev = st.visible(key, st.revision);
        check(prev.as_ref())?;
        let revision = st.revision + 1;
        let create_revision = prev.as_ref().map_or(revision, |p| p.create_revision);
        st.revision = revision;
        st.versions
            .entry(key.to_string())
            .or_default()
            .push(Version {
                revision,
                create_revision,
                value: value.clone(),
            });
        st.log.insert(revision, key.to_string());
        let event = Event::of_write(key, revision, create_revision, value, prev);
        self.hub.publish(std::slice::from_ref(&event));
        Ok(revision)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl History for Shared {
    fn events_between(
        &self,
        prefix: &str,
        after: Revision,
        upto: Revision,
        max: usize,
    ) -> Result<Vec<Event>> {
        let st = self.lock();
        // events after a revision below C are not all kept (see `compact`)
        if after < st.compact_revision {
            return Err(StoreError::Compacted {
                requested: after,
                compact_revision: st.compact_revision,
            });
        }
        let mut events = Vec::new();
        for (&revision, key) in st.log.range(after + 1..=upto) {
            if !key.starts_with(prefix) {
                continue;
            }
            let versions = &st.versions[key];
            let idx = versions
                .iter()
                .position(|v| v.revision == revision)
                .ok_or_else(|| {
                    StoreError::Backend(format!("missing version {revision} of {key}"))
                })?;
            let prev = idx.checked_sub(1).and_then(|i| versions[i].to_kv(key));
            let v = &versions[idx];
            events.push(Event::of_write(
                key,
                revision,
                v.create_revision,
                v.value.clone(),
                prev,
            ));
            if events.len() == max {
                break;
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        let st = self.lock();
        Ok(GetResult {
            kv: st.visible(key, st.revision),
            revision: st.revision,
        })
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let start = list_start(prefix, &opts)?;
        let st = self.lock();
        let at = if opts.revision == 0 {
            st.revision
        } else {
            opts.revision
        };
        st.check_readable(at)?;
        let visible = st
            .versions
            .range(start.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, _)| st.visible(k, at));
        let mut kvs = Vec::new();
        let mut count = 0;
        for kv in visible {
            count += 1;
            if opts.limit == 0 || kvs.len() < opts.limit {
                kvs.push(kv);
            }
        }
        Ok(ListResult {
            more: count > kvs.len(),
            kvs,
            count,
            revision: at,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.write(key, Some(value), |prev| match prev {
            Some(_) => Err(StoreError::AlreadyExists {
                key: key.to_string(),
            }),
            None => Ok(()),
        })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        self.write(key, Some(value), |prev| check_expected(key, prev, expected))
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.write(key, None, |prev| check_expected(key, prev, expected))
    }

    async fn watch(&self, prefix: &str, since: Revision) -> Result<Watch> {
        let compact_revision = self.lock().compact_revision;
        if since != 0 && since < compact_revision {
            return Err(StoreError::Compacted {
                requested: since,
                compact_revision,
            });
        }
        Ok(Watch::new(Box::new(self.hub.watch(
            self.state.clone(),
            prefix,
            since,
        ))))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut st = self.lock();
        if revision <= st.compact_revision {
            return Err(StoreError::Compacted {
                requested: revision,
                compact_revision: st.compact_revision,
            });
        }
        st.check_readable(revision)?;
        st.compact_revision = revision;
        st.log = st.log.split_off(&(revision + 1));
        st.versions.retain(|_, versions| {
            // What etcd's compaction keeps: every version after `revision`, and the
            // newest one at or below it if that one is a value (reads at `revision`
            // need it); a deletion at or below it goes with everything before it.
            let after = versions.partition_point(|v| v.revision <= revision);
            let keep_from = match after.checked_sub(1) {
                Some(i) if versions[i].value.is_some() => i,
                _ => after,
            };
            versions.drain(..keep_from);
            !versions.is_empty()
        });
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// The optimistic-concurrency check shared by update and delete.
pub(crate) fn check_expected(
    key: &str,
    current: Option<&KeyValue>,
    expected: Revision,
) -> Result<()> {
    super::validate_expected(expected)?;
    match current {
        Some(kv) if kv.mod_revision == expected => Ok(()),
        _ => Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            current: current.cloned(),
        }),
    }
}
