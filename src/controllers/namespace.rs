//! The namespace controller: empties namespaces being deleted, then lets them go.
//!
//! Deleting a namespace only marks it (`deletionTimestamp`, phase `Terminating`); its
//! `kubernetes` finalizer keeps it while this controller deletes every object in it
//! (objects with finalizers or graceful pods finish on their own time), reports
//! progress in upstream's five `NamespaceDeletion…`/`Namespace…Remaining` conditions,
//! and finally removes the finalizer, which deletes the namespace. It is
//! level-triggered: each pass looks at what is stored, so a restart (or a crash) in the
//! middle simply carries on.

use super::Context;
use crate::api::meta::now_rfc3339;
use crate::client::{ApiClient, ClientError};
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Runs for the term: a pass whenever a namespace changes, and every second while some
/// namespace is still waiting for content to go. Everything goes through the API, as
/// any client's deletions do (authorization, admission, metrics, managed fields):
/// as upstream's namespace-controller (`cx`), and, for the namespace's own
/// `orphan`/`foregroundDeletion` finalizers, as its garbage collector (`collector`).
pub async fn run(cx: Arc<Context>, collector: Arc<Context>) {
    let namespaces = cx.informer(&crate::api::registry::NAMESPACES);
    let mut changes = namespaces.subscribe();
    namespaces.synced().await;
    loop {
        let pending = match pass(&cx.client, &collector.client, &namespaces).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "namespace controller pass failed; retrying");
                true
            }
        };
        let wait = if pending {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(_) = changes.recv() => {}
        }
        while changes.try_recv().is_ok() {}
    }
}

/// One pass over all namespaces being deleted; true if some still wait.
async fn pass(
    client: &ApiClient,
    collector: &ApiClient,
    namespaces: &Informer,
) -> Result<bool, ClientError> {
    let mut pending = false;
    for ns in namespaces.list(None) {
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or_default();
        pending |= !finish(client, collector, &ns, name).await?;
    }
    Ok(pending)
}

/// Deletes what is left in namespace `ns` (upstream's namespaced-resources deleter:
/// a deletecollection per resource, then a list of what remains); true once the
/// namespace is gone or released.
async fn finish(
    client: &ApiClient,
    collector: &ApiClient,
    current: &Value,
    ns: &str,
) -> Result<bool, ClientError> {
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    let items = |list: &Value| list["items"].as_array().cloned().unwrap_or_default();
    let resources = crate::client::discovery::preferred_resources(client).await?;
    for res in resources
        .iter()
        .filter(|r| r.namespaced && r.has_verb("list") && r.has_verb("deletecollection"))
    {
        let path = res.collection_path(Some(ns));
        let mut left = items(&client.get(&path).await?);
        if left
            .iter()
            .any(|o| o.pointer("/metadata/deletionTimestamp").is_none())
        {
            client.delete(&path, &json!({})).await?;
            left = items(&client.get(&path).await?);
        }
        for obj in left {
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
    let gone = |e: &ClientError| e.is_not_found();
    let path = format!("/api/v1/namespaces/{ns}");
    let conditions = merge_conditions(
        current
            .pointer("/status/conditions")
            .unwrap_or(&Value::Null),
        &conditions(&remaining, &finalizers),
        &now_rfc3339(),
    );
    if current.pointer("/status/conditions") != Some(&conditions) {
        // an update of the status (what upstream's role grants), not a patch
        let mut next = current.clone();
        next["status"]["conditions"] = conditions;
        match client.update(&format!("{path}/status"), &next).await {
            Err(e) if gone(&e) => return Ok(true),
            other => {
                other?;
            }
        }
    }
    if !remaining.is_empty() {
        return Ok(false);
    }
    // the content is gone: nothing is left to orphan or to wait for
    let keep = |list: Option<&Value>, drop: &[&str]| -> Vec<Value> {
        list.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| !drop.iter().any(|d| *f == &json!(d)))
            .cloned()
            .collect()
    };
    let held = current.pointer("/metadata/finalizers");
    let kept = keep(held, &["orphan", "foregroundDeletion"]);
    if held
        .and_then(Value::as_array)
        .is_some_and(|h| h.len() != kept.len())
    {
        match collector
            .patch(&path, &json!({"metadata": {"finalizers": kept}}))
            .await
        {
            Err(e) if gone(&e) => return Ok(true),
            other => {
                other?;
            }
        }
    }
    let finalize = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
        "spec": {"finalizers": keep(current.pointer("/spec/finalizers"), &["kubernetes"])}});
    match client.update(&format!("{path}/finalize"), &finalize).await {
        Ok(v) => Ok(v["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty)),
        Err(e) if gone(&e) => Ok(true),
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
