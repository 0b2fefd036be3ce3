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
use crate::store::{EventKind, Revision, WatchMessage};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
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
    // the state to start from: current objects as ADDED events, or a revision
    let (initial, since) = if rv.is_empty() || rv == "0" || send_initial {
        let (items, revision, _, _) = read(&ctx, res, namespace, &selection, &[]).await?;
        (items, revision)
    } else {
        let since: Revision = rv
            .parse()
            .map_err(|_| ApiStatus::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        (Vec::new(), since)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut store_watch = match ctx.store.watch(&prefix(res, namespace), since).await {
        Ok(w) => Some(w),
        Err(e) => {
            let _ = tx.try_send(error_line(&store_error(e)));
            None
        }
    };
    let gauge = WatchGauge::open(&ctx, res);
    tokio::spawn(async move {
        let _gauge = gauge;
        let Some(w) = store_watch.as_mut() else {
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
                    // backends that cannot promise progress refuse; bookmarks are hints
                    let _ = w.request_progress().await;
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
                Some(Ok(WatchMessage::Progress(r))) if bookmarks => Some(bookmark(res, r, false)),
                Some(Ok(WatchMessage::Progress(_))) => None,
                Some(Ok(WatchMessage::Event(e))) => event_line(&selection, &e, render),
            };
            if let Some(out) = out {
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody::new(rx).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
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

/// The watch event a store change becomes for a selective watcher: an object that
/// starts or stops matching is ADDED or DELETED, as the watch cache does upstream.
fn event_line(selection: &Selection, e: &crate::store::Event, render: Render) -> Option<Bytes> {
    let line = |kind: &str, obj: &Value| line(kind, &render.one(obj));
    let prev = e.prev.as_ref().and_then(|kv| from_store(kv).ok());
    let prev_matches = prev.as_ref().is_some_and(|p| selection.matches(p));
    match e.kind {
        EventKind::Delete => {
            let mut obj = prev?;
            set_resource_version(&mut obj, e.revision());
            prev_matches.then(|| line("DELETED", &obj))
        }
        EventKind::Put => {
            let obj = from_store(&e.kv).ok()?;
            match (prev_matches, selection.matches(&obj)) {
                (true, true) => Some(line("MODIFIED", &obj)),
                (false, true) => Some(line("ADDED", &obj)),
                (true, false) => {
                    let mut old = prev?;
                    set_resource_version(&mut old, e.revision());
                    Some(line("DELETED", &old))
                }
                (false, false) => None,
            }
        }
    }
}
