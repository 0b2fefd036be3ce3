//! Records histories (acknowledged writes and what watchers received) under concurrent
//! writers, and checks etcd's watch guarantees on them one by one:
//! ordered, unique, reliable, atomic, resumable, bookmarkable.

use skua::store::{EventKind, Revision, Store, StoreError, WatchMessage};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Op {
    pub revision: Revision,
    pub key: String,
    pub kind: EventKind,
    pub value: Vec<u8>,
}

/// The acknowledged history, indexed by revision.
pub struct History {
    ops: BTreeMap<Revision, Op>,
}

impl History {
    pub fn new(ops: impl IntoIterator<Item = Op>) -> Self {
        History {
            ops: ops.into_iter().map(|op| (op.revision, op)).collect(),
        }
    }

    pub fn last_revision(&self) -> Revision {
        self.ops.keys().next_back().copied().unwrap_or(0)
    }

    /// The version of `key` just before `revision` (value and its revision), if live.
    fn prev_of(&self, key: &str, revision: Revision) -> Option<(Vec<u8>, Revision)> {
        self.ops
            .range(..revision)
            .rev()
            .find(|(_, op)| op.key == key)
            .and_then(|(r, op)| (op.kind == EventKind::Put).then(|| (op.value.clone(), *r)))
    }
}

/// Checks one watcher's stream (`since` exclusive, up to `until` inclusive).
pub fn check_stream(
    history: &History,
    prefix: &str,
    since: Revision,
    until: Revision,
    stream: &[WatchMessage],
) -> Result<(), String> {
    let events: Vec<_> = stream
        .iter()
        .filter_map(|m| match m {
            WatchMessage::Event(e) => Some(e),
            WatchMessage::Progress(_) => None,
        })
        .collect();
    // ordered: revisions only go up
    for pair in events.windows(2) {
        if pair[1].revision() < pair[0].revision() {
            return Err(format!(
                "ordered: revision {} delivered after {}",
                pair[1].revision(),
                pair[0].revision()
            ));
        }
    }
    // unique: no revision twice (each write here is a single-key change)
    for pair in events.windows(2) {
        if pair[1].revision() == pair[0].revision() {
            return Err(format!(
                "unique: revision {} delivered twice",
                pair[0].revision()
            ));
        }
    }
    // reliable: exactly the acknowledged writes under the prefix, no gap
    let expected: Vec<Revision> = history
        .ops
        .range(since + 1..=until)
        .filter(|(_, op)| op.key.starts_with(prefix))
        .map(|(r, _)| *r)
        .collect();
    let got: Vec<Revision> = events
        .iter()
        .map(|e| e.revision())
        .filter(|r| *r <= until)
        .collect();
    if got != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|r| !got.contains(r))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|r| !expected.contains(r))
            .take(5)
            .collect();
        return Err(format!(
            "reliable: {} events delivered, {} expected; missing {missing:?}, unexpected {extra:?}",
            got.len(),
            expected.len()
        ));
    }
    // atomic: each event is the whole change: kind, key, value and the previous version
    for e in &events {
        let Some(op) = history.ops.get(&e.revision()) else {
            continue; // beyond the recorded history (checked above up to `until`)
        };
        if e.kind != op.kind || e.kv.key != op.key {
            return Err(format!(
                "atomic: revision {} delivered as {:?} {} but was {:?} {}",
                e.revision(),
                e.kind,
                e.kv.key,
                op.kind,
                op.key
            ));
        }
        if op.kind == EventKind::Put && e.kv.value != op.value {
            return Err(format!(
                "atomic: revision {} carries the wrong value",
                e.revision()
            ));
        }
        let prev = e
            .prev
            .as_ref()
            .map(|kv| (kv.value.clone(), kv.mod_revision));
        if prev != history.prev_of(&op.key, op.revision) {
            return Err(format!(
                "atomic: revision {} of {} carries a wrong previous version {:?}",
                e.revision(),
                op.key,
                e.prev.as_ref().map(|kv| kv.mod_revision)
            ));
        }
    }
    // bookmarkable: a progress notification at R comes after every event <= R and
    // before every event > R
    let mut delivered_upto = since;
    for (i, m) in stream.iter().enumerate() {
        match m {
            WatchMessage::Event(e) => delivered_upto = delivered_upto.max(e.revision()),
            WatchMessage::Progress(r) => {
                let owed = history
                    .ops
                    .range(delivered_upto + 1..)
                    .take_while(|(rev, _)| **rev <= *r)
                    .find(|(_, op)| op.key.starts_with(prefix));
                if let Some((owed, _)) = owed {
                    return Err(format!(
                        "bookmarkable: progress {r} at message {i} before event {owed} was delivered"
                    ));
                }
                if let Some(late) = stream[i + 1..].iter().find_map(|m| match m {
                    WatchMessage::Event(e) if e.revision() <= *r => Some(e.revision()),
                    _ => None,
                }) {
                    return Err(format!(
                        "bookmarkable: event {late} delivered after progress {r}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What one concurrent run recorded.
pub struct Recording {
    pub history: History,
    pub progress_supported: bool,
    pub start: Revision,
    /// (name, prefix, since, messages)
    pub streams: Vec<(String, String, Revision, Vec<WatchMessage>)>,
}

const KEYS: usize = 16;

/// Runs `writers` concurrent writers doing `ops_each` acknowledged writes each on
/// shared keys under `/wc/`, while several watchers record what they see.
pub async fn record(store: Arc<dyn Store>, writers: usize, ops_each: usize) -> Recording {
    let start = store.current_revision().await.unwrap();
    let total = writers * ops_each;

    let mut watchers = Vec::new();
    // plain watcher of everything; it asks for progress now and then (bookmarks)
    let progress = store.supports_progress();
    watchers.push(spawn_watcher(
        store.clone(),
        "all+progress",
        "/wc/",
        start,
        None,
        progress,
    ));
    // a narrower prefix: keys k1, k10..k15
    watchers.push(spawn_watcher(
        store.clone(),
        "prefix k1",
        "/wc/k1",
        start,
        None,
        false,
    ));
    // a watcher that is stopped and resumed from its last revision three times
    watchers.push(spawn_watcher(
        store.clone(),
        "resumed",
        "/wc/",
        start,
        Some(total / 4 + 1),
        false,
    ));

    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { write_loop(store, w, ops_each).await },
        ));
    }
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await.unwrap());
    }
    let history = History::new(ops);
    let last = history.last_revision();
    let mut streams = Vec::new();
    for (name, prefix, handle) in watchers {
        let expected_last = history
            .ops
            .values()
            .filter(|op| op.key.starts_with(&prefix))
            .map(|op| op.revision)
            .max()
            .unwrap_or(start);
        let _ = handle.0.send(expected_last);
        let messages = tokio::time::timeout(Duration::from_secs(60), handle.1)
            .await
            .unwrap_or_else(|_| {
                panic!("watcher {name} did not reach revision {expected_last} (last write {last})")
            })
            .unwrap();
        streams.push((name, prefix, start, messages));
    }
    Recording {
        history,
        start,
        streams,
        progress_supported: progress,
    }
}

type WatcherHandle = (
    tokio::sync::oneshot::Sender<Revision>,
    tokio::task::JoinHandle<Vec<WatchMessage>>,
);

fn spawn_watcher(
    store: Arc<dyn Store>,
    name: &str,
    prefix: &str,
    since: Revision,
    resume_every: Option<usize>,
    progress: bool,
) -> (String, String, WatcherHandle) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<Revision>();
    let p = prefix.to_string();
    let handle = tokio::spawn(async move {
        let mut messages: Vec<WatchMessage> = Vec::new();
        let mut last = since;
        let mut until: Option<Revision> = None;
        let mut watch = store.watch(&p, last).await.unwrap();
        let mut since_resume = 0usize;
        loop {
            if let Some(u) = until {
                if last >= u {
                    // drain a final progress notification for the bookmark check
                    if progress {
                        watch.request_progress().await.unwrap();
                        if let Ok(Some(Ok(m))) =
                            tokio::time::timeout(Duration::from_secs(5), watch.next()).await
                        {
                            messages.push(m);
                        }
                    }
                    return messages;
                }
            }
            tokio::select! {
                r = &mut stop_rx, if until.is_none() => { until = Some(r.unwrap_or(last)); }
                msg = watch.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(StoreError::Expired { .. })) | None => {
                            panic!("watcher {p} ended early at {last}")
                        }
                        Some(Err(e)) => panic!("watcher {p} failed: {e}"),
                    };
                    if let WatchMessage::Event(e) = &msg {
                        last = e.revision();
                        since_resume += 1;
                        if progress && since_resume % 7 == 0 {
                            watch.request_progress().await.unwrap();
                        }
                    }
                    messages.push(msg);
                    if resume_every.is_some_and(|n| since_resume >= n) {
                        // resumable: stop and watch again from the last revision seen
                        drop(watch);
                        watch = store.watch(&p, last).await.unwrap();
                        since_resume = 0;
                    }
                }
            }
        }
    });
    (name.to_string(), prefix.to_string(), (stop_tx, handle))
}

/// One writer: random creates, updates and deletes on shared keys, with optimistic
/// retries; returns its acknowledged writes.
async fn write_loop(store: Arc<dyn Store>, writer: usize, ops: usize) -> Vec<Op> {
    let mut rng = (writer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut done = Vec::new();
    let mut seen: HashMap<String, Option<skua::store::KeyValue>> = HashMap::new();
    let mut i = 0;
    while done.len() < ops {
        let key = format!("/wc/k{}", next() as usize % KEYS);
        let current = match seen.remove(&key) {
            Some(kv) => kv,
            None => store.get(&key).await.unwrap().kv,
        };
        i += 1;
        let value = format!("w{writer}-{i}").into_bytes();
        let result = match &current {
            None => store
                .create(&key, value.clone())
                .await
                .map(|r| (r, EventKind::Put)),
            Some(kv) if next() % 4 == 0 => store
                .delete(&key, kv.mod_revision)
                .await
                .map(|r| (r, EventKind::Delete)),
            Some(kv) => store
                .update(&key, value.clone(), kv.mod_revision)
                .await
                .map(|r| (r, EventKind::Put)),
        };
        match result {
            Ok((revision, kind)) => done.push(Op {
                revision,
                key,
                kind,
                value: if kind == EventKind::Put {
                    value
                } else {
                    Vec::new()
                },
            }),
            Err(StoreError::Conflict { current, .. }) => {
                seen.insert(key, current);
            }
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("writer {writer}: {e}"),
        }
    }
    done
}

/// Checks every recorded stream and returns a one-line summary.
pub fn check_recording(rec: &Recording) -> Result<String, String> {
    let last = rec.history.last_revision();
    let mut progress = 0;
    for (name, prefix, since, stream) in &rec.streams {
        check_stream(&rec.history, prefix, *since, last, stream)
            .map_err(|e| format!("{name}: {e}"))?;
        progress += stream
            .iter()
            .filter(|m| matches!(m, WatchMessage::Progress(_)))
            .count();
    }
    if rec.progress_supported && progress == 0 {
        return Err("bookmarkable: no progress notification was delivered".into());
    }
    let bookmarkable = if rec.progress_supported {
        "bookmarkable"
    } else {
        "bookmarkable not checked: the backend refuses progress requests"
    };
    Ok(format!(
        "watch guarantees hold: ordered, unique, reliable, atomic, resumable, {bookmarkable} ({} writes, {} watchers, {progress} progress notifications)",
        rec.history.ops.len(),
        rec.streams.len()
    ))
}
