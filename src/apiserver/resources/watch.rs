//! Watch: one JSON line `{"type":…,"object":…}` per event, flushed as it happens.
//!
//! `resourceVersion` unset or "0" starts with synthetic ADDED events for the current
//! state; N resumes exactly after N. `allowWatchBookmarks` adds BOOKMARK events from the
//! store's progress notifications; `sendInitialEvents` ends the initial events with the
//! `k8s.io/initial-events-end` bookmark. A compacted start ends the stream with an
//! ERROR event carrying a 410 `Expired` Status.

use super::list::{Selection, read};
use super::object::{from_store, prefix, set_resource_version};
use super::{Render, store_error};
use crate::api::registry::Resource;
use crate::apiserver::ApiContext;
use crate::apiserver::status::{ApiStatus, Body, ChannelBody};
use crate::store::{Event, EventKind, Revision, WatchMessage};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a watch with bookmarks asks the store for progress (upstream: ~1 min).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Longest a watch stays open without `timeoutSeconds` (kube-apiserver's default
/// `--min-request-timeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(res: &Resource, revision: Revision, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": res.kind, "apiVersion": res.group_version(), "metadata": metadata}),
    )
}

fn error_line(status: &ApiStatus) -> Bytes {
    line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": status.message, "reason": status.reason, "code": status.code.as_u16(),
        }),
    )
}

pub async fn watch(
    ctx: Arc<ApiContext>,
    res: &'static Resource,
    namespace: Option<&str>,
    query: &[(String, String)],
    render: Render,
) -> Result<Response<Body>, ApiStatus> {
    let selection = Selection::from_query(res, query)?;
    let param = |k: &str| {
        query
            .iter()
            .find(|(q, _)| q == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let bookmarks = param("allowWatchBookmarks") == "true";
    let send_initial = param("sendInitialEvents") == "true";
    let timeout = match param("timeoutSeconds") {
        "" => DEFAULT_TIMEOUT,
        t => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiStatus::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let rv = param("resourceVersion");
    let from_now = rv.is_empty() || rv == "0" || send_initial;
    let since: Option<Revision> = if from_now {
        None
    } else {
        Some(
            rv.parse()
                .map_err(|_| ApiStatus::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        )
    };
    let key_prefix = prefix(res, namespace);
    // from the watch cache when it can serve the start; else from the datastore
    let mut initial: Vec<Value> = Vec::new();
    let start = match since {
        Some(n) => Some(n),
        // "": the current state, consistently (needs the datastore's progress)
        None if rv.is_empty() && !ctx.store.supports_progress() => None,
        None if rv.is_empty() => ctx.watch_cache.current_revision().await,
        None => Some(0),
    };
    let mut cached = None;
    if ctx.watch_cache.enabled() {
        let cache = ctx.watch_cache.of(res);
        match (since, start) {
            (Some(n), _) => cached = cache.watch_from(n).map(|rx| (n, rx, cache)),
            (None, Some(min)) if cache.fresh(min).await.is_some() => {
                let (snapshot, rx) = cache.snapshot_and_watch(&key_prefix);
                initial = snapshot
                    .entries
                    .iter()
                    .filter(|(_, e)| selection.matches(&e.view))
                    .filter_map(|(_, e)| e.object())
                    .collect();
                cached = Some((snapshot.revision, rx, cache));
            }
            _ => {}
        }
    }
    let (tx, body) = mpsc::channel::<Bytes>(64);
    let (since, mut source) = match cached {
        Some((revision, rx, cache)) => (revision, Some(Live::Cache(rx, cache))),
        None => {
            let since = match since {
                Some(n) => n,
                None => {
                    let (items, revision, _, _) =
                        read(&ctx, res, namespace, &selection, &[]).await?;
                    initial = items;
                    revision
                }
            };
            let live = match ctx.store.watch(&key_prefix, since).await {
                Ok(w) => Some(Live::Store(w)),
                Err(e) => {
                    let _ = tx.try_send(error_line(&store_error(e)));
                    None
                }
            };
            (since, live)
        }
    };
    let gauge = WatchGauge::open(&ctx, res);
    tokio::spawn(async move {
        let _gauge = gauge;
        let Some(w) = source.as_mut() else {
            return;
        };
        for obj in &initial {
            if tx.send(line("ADDED", &render.one(obj))).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(res, since, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            let msg = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticks.tick(), if bookmarks => {
                    w.request_progress().await;
                    continue;
                }
                msg = w.next() => msg,
            };
            let out = match msg {
                None => return,
                Some(Err(e)) => {
                    let _ = tx.send(error_line(&store_error(e))).await;
                    return;
                }
                Some(Ok(Next::Progress(r))) if bookmarks => Some(bookmark(res, r, false)),
                Some(Ok(Next::Progress(_))) => None,
                // the cache serves every namespace, and may have changes the client
                // has already seen (its revision came from another resource)
                Some(Ok(Next::Event(e)))
                    if e.kv.key.starts_with(&key_prefix) && e.revision() > since =>
                {
                    event_line(&ctx.watch_memo, &selection, &e, render)
                }
                Some(Ok(Next::Event(_))) => None,
            };
            if let Some(out) = out {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody::new(body).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A running watch's changes.
enum Live {
    Store(crate::store::Watch),
    /// The receiver, and the cache (asked for progress for bookmarks).
    Cache(
        mpsc::Receiver<crate::apiserver::watchcache::Msg>,
        Arc<crate::apiserver::watchcache::Cache>,
    ),
}

/// One message of a running watch.
enum Next {
    Event(Arc<Event>),
    Progress(Revision),
}

impl Live {
    async fn next(&mut self) -> Option<Result<Next, crate::store::StoreError>> {
        use crate::apiserver::watchcache::Msg;
        match self {
            Live::Store(w) => Some(w.next().await?.map(|m| match m {
                WatchMessage::Event(e) => Next::Event(Arc::new(e)),
                WatchMessage::Progress(r) => Next::Progress(r),
            })),
            Live::Cache(rx, _) => Some(Ok(match rx.recv().await? {
                Msg::Event(e) => Next::Event(e),
                Msg::Progress(r) => Next::Progress(r),
            })),
        }
    }

    /// Asks for progress (for a bookmark); backends that cannot promise progress
    /// refuse, and bookmarks are hints.
    async fn request_progress(&mut self) {
        match self {
            Live::Store(w) => {
                let _ = w.request_progress().await;
            }
            Live::Cache(_, cache) => cache.want_progress(),
        }
    }
}

/// Counts an open watch in `apiserver_longrunning_requests` until dropped.
struct WatchGauge {
    metrics: Arc<crate::apiserver::metrics::Metrics>,
    res: &'static Resource,
}

impl WatchGauge {
    fn open(ctx: &ApiContext, res: &'static Resource) -> WatchGauge {
        ctx.metrics.watch(res.group, res.version, res.plural, 1);
        WatchGauge {
            metrics: ctx.metrics.clone(),
            res,
        }
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        self.metrics
            .watch(self.res.group, self.res.version, self.res.plural, -1);
    }
}

/// How many recent changes [`EventMemo`] keeps decoded.
const MEMO_EVENTS: usize = 1024;

/// Store changes decoded (and their watch lines encoded) once for all their watchers:
/// every watcher of a resource gets the same change within moments, and decoding and
/// encoding a pod is most of what a watch costs. Like upstream's watch cache, which
/// serialises an event once per encoding for all watchers.
#[derive(Default)]
pub struct EventMemo {
    recent: Mutex<Recent>,
}

/// Decoded changes by revision, and their revisions oldest first (for eviction).
type Recent = (HashMap<Revision, Arc<Decoded>>, VecDeque<Revision>);

/// One store change as its watchers see it.
struct Decoded {
    key: String,
    /// The object after a put, with its resourceVersion (`None` for a delete).
    obj: Option<Value>,
    /// The object before the change, at the change's revision (what DELETED carries);
    /// decoded only when a watcher needs it.
    gone: OnceLock<Option<Value>>,
    /// Encoded lines by (event type, resource asked for, table or not).
    lines: Mutex<Vec<(LineKey, Bytes)>>,
}

type LineKey = (&'static str, usize, Option<&'static str>);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // every update below is a single insert or push: a panic cannot leave it torn
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventMemo {
    fn decoded(&self, e: &Event) -> Arc<Decoded> {
        let revision = e.revision();
        if let Some(d) = locked(&self.recent).0.get(&revision)
            && d.key == e.kv.key
        {
            return d.clone();
        }
        let d = Arc::new(Decoded {
            key: e.kv.key.clone(),
            obj: match e.kind {
                EventKind::Put => from_store(&e.kv).ok(),
                EventKind::Delete => None,
            },
            gone: OnceLock::new(),
            lines: Mutex::default(),
        });
        let mut recent = locked(&self.recent);
        let (map, order) = &mut *recent;
        if map.insert(revision, d.clone()).is_none() {
            order.push_back(revision);
        }
        while order.len() > MEMO_EVENTS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        d
    }
}

impl Decoded {
    fn gone(&self, e: &Event) -> Option<&Value> {
        self.gone
            .get_or_init(|| {
                let mut prev = from_store(e.prev.as_ref()?).ok()?;
                set_resource_version(&mut prev, e.revision());
                Some(prev)
            })
            .as_ref()
    }

    fn line(&self, kind: &'static str, obj: &Value, render: Render) -> Bytes {
        let key = (kind, render.res as *const Resource as usize, render.kind);
        if let Some((_, b)) = locked(&self.lines).iter().find(|(k, _)| *k == key) {
            return b.clone();
        }
        let b = line(kind, &render.one(obj));
        locked(&self.lines).push((key, b.clone()));
        b
    }
}

/// The watch event a store change becomes for a selective watcher: an object that
/// starts or stops matching is ADDED or DELETED, as the watch cache does upstream.
fn event_line(memo: &EventMemo, selection: &Selection, e: &Event, render: Render) -> Option<Bytes> {
    let d = memo.decoded(e);
    // a watcher of everything needs no decoding of the old object to know it matched
    let prev_matches = if selection.is_everything() {
        e.prev.is_some()
    } else {
        d.gone(e).is_some_and(|p| selection.matches(p))
    };
    match e.kind {
        EventKind::Delete => {
            if !prev_matches {
                return None;
            }
            Some(d.line("DELETED", d.gone(e)?, render))
        }
        EventKind::Put => {
            let obj = d.obj.as_ref()?;
            match (prev_matches, selection.matches(obj)) {
                (true, true) => Some(d.line("MODIFIED", obj, render)),
                (false, true) => Some(d.line("ADDED", obj, render)),
                (true, false) => Some(d.line("DELETED", d.gone(e)?, render)),
                (false, false) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyValue;

    fn pod(app: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": app}}}))
        .unwrap()
    }

    fn put(revision: Revision, app: &str, prev: Option<(Revision, &str)>) -> Event {
        let prev = prev.map(|(r, a)| KeyValue {
            key: "/registry/pods/default/p".into(),
            value: pod(a),
            create_revision: 1,
            mod_revision: r,
        });
        Event::of_write(
            "/registry/pods/default/p",
            revision,
            1,
            Some(pod(app)),
            prev,
        )
    }

    fn selection(labels: &str) -> Selection {
        let res = crate::api::registry::find("", "v1", "pods").unwrap();
        Selection::from_query(res, &[("labelSelector".into(), labels.into())]).unwrap()
    }

    fn event(line: &Bytes) -> (String, String, String) {
        let v: Value = serde_json::from_slice(line).unwrap();
        (
            v["type"].as_str().unwrap().to_string(),
            v["object"]["metadata"]["labels"]["app"]
                .as_str()
                .unwrap()
                .to_string(),
            v["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    #[test]
    fn a_change_is_decoded_once_for_all_its_watchers() {
        let memo = EventMemo::default();
        let e = put(7, "web", Some((5, "web")));
        let (a, b) = (memo.decoded(&e), memo.decoded(&e));
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second watcher reuses the decoding"
        );
        let render = Render {
            kind: None,
            res: crate::api::registry::find("", "v1", "pods").unwrap(),
        };
        let everything = selection("");
        let first = event_line(&memo, &everything, &e, render).unwrap();
        let second = event_line(&memo, &everything, &e, render).unwrap();
        assert_eq!(first, second);
        assert_eq!(locked(&a.lines).len(), 1, "encoded once");
        assert_eq!(event(&first), ("MODIFIED".into(), "web".into(), "7".into()));
        // another revision is another change
        assert!(!Arc::ptr_eq(
            &a,
            &memo.decoded(&put(8, "web", Some((7, "web"))))
        ));
    }

    #[test]
    fn selective_watchers_see_objects_enter_and_leave_their_selection() {
        let memo = EventMemo::default();
        let render = Render {
            kind: None,
            res: crate::api::registry::find("", "v1", "pods").unwrap(),
        };
        let web = selection("app=web");
        let db = selection("app=db");
        // relabelled from web to db: web's watcher sees it go (as of the change's
        // revision), db's sees it come; the same change serves both
        let e = put(9, "db", Some((4, "web")));
        let left = event_line(&memo, &web, &e, render).unwrap();
        assert_eq!(event(&left), ("DELETED".into(), "web".into(), "9".into()));
        let came = event_line(&memo, &db, &e, render).unwrap();
        assert_eq!(event(&came), ("ADDED".into(), "db".into(), "9".into()));
        // a change outside the selection before and after says nothing
        let other = put(10, "db", Some((9, "db")));
        assert!(event_line(&memo, &web, &other, render).is_none());
        // a delete of a selected object
        let gone = Event::of_write(
            "/registry/pods/default/p",
            11,
            0,
            None,
            Some(KeyValue {
                key: "/registry/pods/default/p".into(),
                value: pod("db"),
                create_revision: 1,
                mod_revision: 10,
            }),
        );
        let deleted = event_line(&memo, &db, &gone, render).unwrap();
        assert_eq!(
            event(&deleted),
            ("DELETED".into(), "db".into(), "11".into())
        );
        assert!(event_line(&memo, &web, &gone, render).is_none());
    }
}
