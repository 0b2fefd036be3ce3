//! ControllerRevisions: the template history of DaemonSets and StatefulSets, which
//! `kubectl rollout history` lists and `kubectl rollout undo` patches back onto the
//! owner. As upstream, a revision's `data` is a strategic merge patch that replaces
//! `spec.template`; going back to an old template makes its revision the newest again.

use super::{Context, controller_ref};
use crate::client::ClientError;
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Records `owner`'s current template as the ControllerRevision `name` (labelled
/// `hash_label: hash`) with the highest revision number, and deletes the oldest
/// revisions beyond `spec.revisionHistoryLimit` (default 10) that no live pod uses
/// (`in_use`: revision names). Returns the current revision number.
pub async fn record(
    cx: &Context,
    history: &Informer,
    owner: &Value,
    name: &str,
    (hash_label, hash): (&str, &str),
    in_use: &HashSet<String>,
) -> Result<i64, ClientError> {
    let ns = owner["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = owner["metadata"]["uid"].as_str().unwrap_or("");
    let mut owned = history.controlled_by(uid);
    owned.sort_by_key(|r| r["revision"].as_i64().unwrap_or(0));
    let newest = owned
        .last()
        .and_then(|r| r["revision"].as_i64())
        .unwrap_or(0);
    let path = |n: &str| object_path(history.res, Some(ns), n);
    let current = match owned.iter().find(|r| r["metadata"]["name"] == name) {
        Some(r) if r["revision"].as_i64().unwrap_or(0) < newest => {
            let mut next = (**r).clone();
            next["revision"] = json!(newest + 1);
            cx.client.update(&path(name), &next).await?;
            newest + 1
        }
        Some(r) => r["revision"].as_i64().unwrap_or(0),
        None => {
            let template = &owner["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[hash_label] = json!(hash);
            // kubectl decides an undo is a no-op by comparing these bytes with its own
            // rendering of the owner, where an unset creationTimestamp is `null`
            let mut data_template = template.clone();
            if data_template["metadata"]["creationTimestamp"].is_null() {
                data_template["metadata"]["creationTimestamp"] = Value::Null;
            }
            data_template["$patch"] = json!("replace");
            let mut revision = json!({
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "ownerReferences": [controller_ref(owner)]},
                "data": {"spec": {"template": data_template}},
                "revision": newest + 1,
            });
            if let Some(a) = owner["metadata"]["annotations"].as_object() {
                revision["metadata"]["annotations"] = json!(a);
            }
            let collection = format!("/apis/apps/v1/namespaces/{ns}/controllerrevisions");
            match cx.client.create(&collection, &revision).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
            newest + 1
        }
    };
    let limit = owner["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let old: Vec<&Value> = owned
        .iter()
        .map(|r| &**r)
        .filter(|r| {
            let n = r["metadata"]["name"].as_str().unwrap_or("");
            n != name && !in_use.contains(n)
        })
        .collect();
    for r in old.iter().take(old.len().saturating_sub(limit)) {
        let n = r["metadata"]["name"].as_str().unwrap_or("");
        match cx.client.delete(&path(n), &json!({})).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}
