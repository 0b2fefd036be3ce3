//! Lists: label and field selectors, `limit`/`continue` paging on one consistent
//! snapshot, `resourceVersion`/`resourceVersionMatch`, and deletecollection.

use super::object::{from_store, prefix};
use super::{Render, delete, store_error};
use crate::api::registry::Resource;
use crate::api::selector::{FieldSelector, LabelSelector};
use crate::apiserver::ApiContext;
use crate::apiserver::status::{ApiStatus, Body, json};
use crate::store::{ListOptions, Revision};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Query parameters of a list or watch.
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    pub fn from_query(res: &Resource, query: &[(String, String)]) -> Result<Selection, ApiStatus> {
        let get = |k: &str| {
            query
                .iter()
                .find(|(q, _)| q == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        Ok(Selection {
            labels: LabelSelector::parse(get("labelSelector"))
                .map_err(|e| ApiStatus::bad_request(e.to_string()))?,
            fields: FieldSelector::parse(
                get("fieldSelector"),
                &super::kinds::selectable_fields(res),
            )
            .map_err(|e| ApiStatus::bad_request(e.to_string()))?,
        })
    }

    /// Whether this selects every object (no label or field selector).
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields == FieldSelector::default()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.fields.matches(obj)
            && self
                .labels
                .matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

fn param<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(q, _)| q == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn encode_continue(revision: Revision, start: &str) -> String {
    B64.encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start}).to_string())
}

fn decode_continue(token: &str, list_prefix: &str) -> Result<(Revision, String), ApiStatus> {
    let bad = |why: &str| ApiStatus::bad_request(format!("continue key is not valid: {why}"));
    let raw = B64
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad("not a continue token"))?;
    let rv = v["rv"]
        .as_i64()
        .filter(|r| *r > 0)
        .ok_or_else(|| bad("no resource version"))?;
    let start = v["start"].as_str().ok_or_else(|| bad("no start key"))?;
    if !start.starts_with(list_prefix) {
        return Err(bad("it belongs to another list"));
    }
    Ok((rv, start.to_string()))
}

/// Reads up to `limit` (0: all) matching objects, consistently at one revision.
/// Returns (items, revision, next continue key, remaining count if known).
pub async fn read(
    ctx: &ApiContext,
    res: &Resource,
    namespace: Option<&str>,
    selection: &Selection,
    query: &[(String, String)],
) -> Result<(Vec<Value>, Revision, Option<String>, Option<usize>), ApiStatus> {
    let list_prefix = prefix(res, namespace);
    let limit: usize = match param(query, "limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiStatus::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let (mut revision, mut start) = match param(query, "continue") {
        Some(token) => {
            let (rv, start) = decode_continue(token, &list_prefix)?;
            (rv, Some(start))
        }
        None => {
            let exact = param(query, "resourceVersionMatch") == Some("Exact");
            match param(query, "resourceVersion") {
                Some(rv) if exact => (
                    rv.parse().map_err(|_| {
                        ApiStatus::bad_request(format!("invalid resourceVersion {rv:?}"))
                    })?,
                    None,
                ),
                _ => (0, None),
            }
        }
    };
    let continuing = start.is_some();
    let mut items = Vec::new();
    loop {
        let page = ctx
            .store
            .list(
                &list_prefix,
                ListOptions {
                    revision,
                    limit: if limit == 0 { 0 } else { limit.max(64) },
                    continue_from: start.clone(),
                },
            )
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Compacted { .. } if continuing => {
                    ApiStatus::new(StatusCode::GONE, "Expired", EXPIRED_CONTINUE)
                }
                e => store_error(e),
            })?;
        revision = page.revision;
        for (i, kv) in page.kvs.iter().enumerate() {
            // one unreadable stored object (written before the depth limit, or damaged
            // on disk) must not make the whole resource unlistable: it is skipped and
            // reported, and can still be deleted by name
            let obj = match from_store(kv) {
                Ok(obj) => obj,
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e.message, "list: skipping an unreadable stored object; delete it by name");
                    continue;
                }
            };
            if !selection.matches(&obj) {
                continue;
            }
            items.push(crate::api::convert::to_version(obj, res));
            if limit > 0 && items.len() == limit {
                let more = page.more || i + 1 < page.kvs.len();
                let remaining = (selection.is_everything()).then(|| page.count - (i + 1));
                let next = more.then(|| format!("{}\0", kv.key));
                return Ok((
                    items,
                    revision,
                    next.map(|n| encode_continue(revision, &n)),
                    remaining.filter(|_| more),
                ));
            }
        }
        match page.continue_key() {
            Some(next) => start = Some(next),
            None => return Ok((items, revision, None, None)),
        }
    }
}

/// A first page (or a whole list) from the watch cache, when the request allows it:
/// not a continuation and not `resourceVersionMatch=Exact` (those read the
/// datastore at their revision, as upstream), and the cache reaches the revision
/// the request needs in time. `None`: the datastore serves it.
async fn from_cache(
    ctx: &ApiContext,
    res: &'static Resource,
    namespace: Option<&str>,
    selection: &Selection,
    query: &[(String, String)],
) -> Option<Page> {
    if !ctx.watch_cache.enabled()
        || param(query, "continue").is_some()
        || param(query, "resourceVersionMatch").is_some_and(|m| m != "NotOlderThan")
    {
        return None;
    }
    let limit: usize = match param(query, "limit") {
        Some(l) => l.parse().ok()?,
        None => 0,
    };
    let min = match param(query, "resourceVersion") {
        // a consistent read: the cache must reach the datastore's current revision,
        // which needs the datastore's progress notifications
        None if ctx.store.supports_progress() => ctx.watch_cache.current_revision().await?,
        None => return None,
        Some("0") => 0,
        Some(rv) => rv.parse().ok()?,
    };
    let cache = ctx.watch_cache.of(res);
    cache.fresh(min).await?;
    let snapshot = cache.snapshot(&prefix(res, namespace));
    let mut page = Page {
        revision: snapshot.revision,
        entries: Vec::new(),
        next: None,
        remaining: None,
    };
    let total = snapshot.entries.len();
    for (i, (key, entry)) in snapshot.entries.into_iter().enumerate() {
        if !selection.matches(&entry.view) {
            continue;
        }
        page.entries.push(entry);
        if limit > 0 && page.entries.len() == limit {
            if i + 1 < total {
                page.next = Some(encode_continue(page.revision, &format!("{key}\0")));
                page.remaining = selection.is_everything().then_some(total - (i + 1));
            }
            break;
        }
    }
    Some(page)
}

/// One page of a list read from the watch cache.
struct Page {
    revision: Revision,
    entries: Vec<std::sync::Arc<crate::apiserver::watchcache::Entry>>,
    next: Option<String>,
    remaining: Option<usize>,
}

impl Page {
    /// The items as `res`'s version shows them (converted only where the stored
    /// version is another).
    fn objects(&self, res: &Resource) -> Vec<Value> {
        self.entries
            .iter()
            .filter_map(|e| e.object())
            .map(|o| crate::api::convert::to_version(o, res))
            .collect()
    }

    /// The list as JSON, the stored objects spliced in as they are.
    fn body(&self, res: &Resource) -> Vec<u8> {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(next) = &self.next {
            metadata["continue"] = json!(next);
        }
        if let Some(n) = self.remaining {
            metadata["remainingItemCount"] = json!(n);
        }
        let head = json!({"kind": format!("{}List", res.kind), "apiVersion": res.group_version(), "metadata": metadata});
        let mut out = head.to_string().into_bytes();
        out.pop(); // the closing brace: the items follow
        out.extend_from_slice(b",\"items\":[");
        let want = res.group_version();
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if e.view["apiVersion"] == want.as_str() {
                out.extend_from_slice(&e.body);
            } else if let Some(o) = e.object() {
                let converted = crate::api::convert::to_version(o, res);
                out.extend_from_slice(converted.to_string().as_bytes());
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

pub async fn list(
    ctx: &Arc<ApiContext>,
    res: &'static Resource,
    namespace: Option<&str>,
    query: &[(String, String)],
    render: Render,
) -> Result<http::Response<Body>, ApiStatus> {
    let selection = Selection::from_query(res, query)?;
    if let Some(rv) = param(query, "resourceVersion") {
        // as upstream: a version that is not one is refused, whichever path serves
        if rv.parse::<Revision>().map_or(true, |r| r < 0) {
            return Err(ApiStatus::bad_request(format!(
                "invalid resourceVersion {rv:?}: it must be a resourceVersion the server returned"
            )));
        }
    }
    let cached = from_cache(ctx, res, namespace, &selection, query).await;
    let (items, revision, next, remaining) = match cached {
        Some(page) if render.kind.is_none() => {
            return Ok(crate::apiserver::status::json_bytes(
                StatusCode::OK,
                page.body(res),
            ));
        }
        Some(page) => (page.objects(res), page.revision, page.next, page.remaining),
        None => read(ctx, res, namespace, &selection, query).await?,
    };
    if let Some(kind) = render.kind {
        let mut table = crate::api::printers::table(
            kind,
            &items,
            &revision.to_string(),
            true,
            crate::api::meta::now_secs(),
        );
        if let Some(next) = next {
            table["metadata"]["continue"] = json!(next);
        }
        if let Some(n) = remaining {
            table["metadata"]["remainingItemCount"] = json!(n);
        }
        return Ok(json(StatusCode::OK, &table));
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    if let Some(n) = remaining {
        metadata["remainingItemCount"] = json!(n);
    }
    Ok(json(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.group_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

pub async fn delete_collection(
    ctx: &Arc<ApiContext>,
    w: &super::Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    query: &[(String, String)],
) -> Result<http::Response<Body>, ApiStatus> {
    let selection = Selection::from_query(res, query)?;
    let (items, _, _, _) = read(ctx, res, namespace, &selection, &[]).await?;
    for obj in items {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        match delete(w, res, ns.or(namespace), name, b"").await {
            Ok(_) => {}
            Err(s) if s.code == StatusCode::NOT_FOUND => {}
            Err(s) => return Err(s),
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_list() {
        let t = encode_continue(42, "/registry/core/configmaps/default/b\0");
        assert_eq!(
            decode_continue(&t, "/registry/core/configmaps/default/").unwrap(),
            (42, "/registry/core/configmaps/default/b\0".to_string())
        );
        assert!(decode_continue(&t, "/registry/core/secrets/").is_err());
        assert!(decode_continue("!!!", "/").is_err());
    }
}
