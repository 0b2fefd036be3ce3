//! The namespace controller: empties namespaces being deleted, then lets them go.
//!
//! Deleting a namespace only marks it (`deletionTimestamp`, phase `Terminating`); its
//! `kubernetes` finalizer keeps it while this controller deletes every object in it
//! (objects with finalizers or graceful pods finish on their own time), reports
//! progress in upstream's five `NamespaceDeletion…`/`Namespace…Remaining` conditions,
//! and finally removes the finalizer, which deletes the namespace. It is
//! level-triggered: each pass looks at what is stored, so a restart (or a crash) in the
//! middle simply carries on.

use crate::api::meta::now_rfc3339;
use crate::api::registry::{RESOURCES, Resource};
use crate::apiserver::resources::object::{from_store, prefix};
use crate::apiserver::resources::{delete, guaranteed_update};
use crate::apiserver::status::ApiStatus;
use crate::store::{ListOptions, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn namespaces() -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.group.is_empty() && r.plural == "namespaces")
        .expect("the registry has namespaces")
}

/// Runs until `stop` resolves: a pass whenever a namespace changes, and every second
/// while some namespace is still waiting for content to go.
pub async fn run(store: Arc<dyn Store>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let ns_prefix = prefix(namespaces(), None);
    let mut watch = None;
    loop {
        if watch.is_none() {
            let since = store.current_revision().await.unwrap_or(0);
            watch = store.watch(&ns_prefix, since).await.ok();
        }
        let pending = match pass(&*store).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.message, "namespace controller pass failed; retrying");
                true
            }
        };
        let wait = if pending {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
            msg = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            } => {
                if !matches!(msg, Some(Ok(_))) {
                    watch = None; // ended or failed: watch again from now
                }
            }
        }
    }
}

/// One pass over all namespaces being deleted; true if some still wait.
pub async fn pass(store: &dyn Store) -> Result<bool, ApiStatus> {
    let list = store
        .list(&prefix(namespaces(), None), ListOptions::default())
        .await
        .map_err(crate::apiserver::resources::store_error)?;
    let mut pending = false;
    for kv in list.kvs {
        let ns = from_store(&kv)?;
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = ns["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        pending |= !finish(store, &name).await?;
    }
    Ok(pending)
}

/// Deletes what is left in namespace `ns`; true once the namespace is gone or
/// released.
async fn finish(store: &dyn Store, ns: &str) -> Result<bool, ApiStatus> {
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    for res in RESOURCES.iter().filter(|r| r.namespaced && r.is_stored()) {
        let page = store
            .list(&prefix(res, Some(ns)), ListOptions::default())
            .await
            .map_err(crate::apiserver::resources::store_error)?;
        for kv in page.kvs {
            let obj = from_store(&kv)?;
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let left = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                Some(obj)
            } else {
                match delete(store, res, Some(ns), name, b"").await {
                    Ok(v) if v["kind"] == "Status" => None,
                    Ok(still) => Some(still),
                    Err(e) if e.code == http::StatusCode::NOT_FOUND => None,
                    Err(e) => return Err(e),
                }
            };
            if let Some(obj) = left {
                *remaining
                    .entry(format!("{}.{}", res.plural, res.group))
                    .or_default() += 1;
                for f in obj
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    *finalizers.entry(f.to_string()).or_default() += 1;
                }
            }
        }
    }
    let empty = remaining.is_empty();
    let conditions = conditions(&remaining, &finalizers);
    let now = now_rfc3339();
    let result = guaranteed_update(store, namespaces(), None, ns, None, &|cur| {
        let mut next = cur.clone();
        next["status"]["conditions"] = merge_conditions(
            cur.pointer("/status/conditions").unwrap_or(&Value::Null),
            &conditions,
            &now,
        );
        if empty {
            // the content is gone: nothing is left to orphan or to wait for
            let keep = |list: Option<&Value>, drop: &[&str]| -> Value {
                json!(
                    list.and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|f| !drop.iter().any(|d| *f == &json!(d)))
                        .cloned()
                        .collect::<Vec<_>>()
                )
            };
            next["spec"]["finalizers"] = keep(cur.pointer("/spec/finalizers"), &["kubernetes"]);
            next["metadata"]["finalizers"] = keep(
                cur.pointer("/metadata/finalizers"),
                &["orphan", "foregroundDeletion"],
            );
        }
        Ok(next)
    })
    .await;
    match result {
        Ok(v) => Ok(empty
            && v["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)),
        Err(e) if e.code == http::StatusCode::NOT_FOUND => Ok(true),
        Err(e) => Err(e),
    }
}

/// Upstream's deletion conditions for what is left.
fn conditions(
    remaining: &BTreeMap<String, usize>,
    finalizers: &BTreeMap<String, usize>,
) -> Vec<Value> {
    let cond = |t: &str, status: &str, reason: &str, message: String| json!({"type": t, "status": status, "reason": reason, "message": message});
    let content = if remaining.is_empty() {
        cond(
            "NamespaceContentRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = remaining
            .iter()
            .map(|(gr, n)| format!("{gr} has {n} resource instances"))
            .collect();
        cond(
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let held = if finalizers.is_empty() {
        cond(
            "NamespaceFinalizersRemaining",
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        cond(
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    vec![
        cond(
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        cond(
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        content,
        held,
    ]
}

/// `wanted` conditions, keeping each one's `lastTransitionTime` while its status stays.
fn merge_conditions(current: &Value, wanted: &[Value], now: &str) -> Value {
    let empty = Vec::new();
    let current = current.as_array().unwrap_or(&empty);
    json!(
        wanted
            .iter()
            .map(|w| {
                let mut c = w.clone();
                let since = current
                    .iter()
                    .find(|o| o["type"] == w["type"] && o["status"] == w["status"])
                    .and_then(|o| o.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(now));
                c["lastTransitionTime"] = since;
                c
            })
            .collect::<Vec<_>>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains_as_upstream() {
        let mut remaining = BTreeMap::new();
        remaining.insert("configmaps.".to_string(), 2);
        let mut finalizers = BTreeMap::new();
        finalizers.insert("example.com/hold".to_string(), 1);
        let c = conditions(&remaining, &finalizers);
        assert_eq!(
            c[3]["message"],
            "Some resources are remaining: configmaps. has 2 resource instances"
        );
        assert_eq!(c[3]["status"], "True");
        assert_eq!(
            c[4]["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        let merged = merge_conditions(&Value::Null, &c, "t1");
        let again = merge_conditions(&merged, &c, "t2");
        assert_eq!(
            again[3]["lastTransitionTime"], "t1",
            "unchanged status keeps its time"
        );
        let done = conditions(&BTreeMap::new(), &BTreeMap::new());
        let moved = merge_conditions(&again, &done, "t3");
        assert_eq!(moved[3]["lastTransitionTime"], "t3");
        assert_eq!(moved[3]["reason"], "ContentRemoved");
        assert_eq!(moved[0]["lastTransitionTime"], "t1");
    }
}
