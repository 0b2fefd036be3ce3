//! Pod garbage collection, as upstream's PodGC controller:
//!
//! - A pod bound to a node that does not exist (for longer than the node monitor grace
//!   period, a quarantine against a lagging informer) is deleted at once, since no
//!   kubelet will ever finish it.
//! - Terminated pods (Succeeded or Failed) beyond `--terminated-pod-gc-threshold`
//!   (12,500 by default, as upstream; 0 turns it off) are deleted oldest first, so
//!   finished pods cannot fill the datastore.

use super::Context;
use crate::client::watch::{key_of, object_path};
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often orphans are looked for.
const ORPHANS_EVERY: Duration = Duration::from_secs(2);
/// How often terminated pods are counted (upstream's gcCheckPeriod).
const TERMINATED_EVERY: Duration = Duration::from_secs(20);

pub async fn run(cx: Arc<Context>, quarantine: Duration, threshold: usize) {
    let nodes = cx.informer(&crate::api::registry::NODES);
    let pods = cx.informer(&crate::api::registry::PODS);
    nodes.synced().await;
    pods.synced().await;
    let mut orphans_since: HashMap<String, Instant> = HashMap::new();
    let mut counted: Option<Instant> = None;
    loop {
        if let Err(e) = collect_orphans(&cx, &nodes, &pods, quarantine, &mut orphans_since).await {
            tracing::debug!(error = %e, "pod garbage collection failed; retrying");
        }
        if threshold > 0 && counted.is_none_or(|t| t.elapsed() >= TERMINATED_EVERY) {
            counted = Some(Instant::now());
            if let Err(e) = collect_terminated(&cx, &pods, threshold).await {
                tracing::debug!(error = %e, "terminated pod garbage collection failed; retrying");
            }
        }
        tokio::time::sleep(ORPHANS_EVERY).await;
    }
}

/// Upstream's pod garbage collector for orphans: a pod bound to a node that does not
/// exist (for longer than the grace period, as a quarantine against a lagging
/// informer) is deleted at once, since no kubelet will ever finish it.
async fn collect_orphans(
    cx: &Context,
    nodes: &Informer,
    pods: &Informer,
    quarantine: Duration,
    since: &mut HashMap<String, Instant>,
) -> Result<(), crate::client::ClientError> {
    let mut seen = HashSet::new();
    let missing = pods
        .nodes_bound()
        .into_iter()
        .filter(|node| nodes.get(node).is_none());
    for (node, pod) in
        missing.flat_map(|n| pods.on_node(&n).into_iter().map(move |p| (n.clone(), p)))
    {
        let node = node.as_str();
        let key = key_of(&pod);
        seen.insert(key.clone());
        let first = *since.entry(key.clone()).or_insert_with(Instant::now);
        if first.elapsed() < quarantine {
            continue;
        }
        // a live check: the node may be newer than the informer
        match cx.client.get(&format!("/api/v1/nodes/{node}")).await {
            Ok(_) => continue,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let path = object_path(
            pods.res,
            pod["metadata"]["namespace"].as_str(),
            pod["metadata"]["name"].as_str().unwrap_or(""),
        );
        tracing::info!(pod = %key, node, "deleting a pod bound to a node that is gone");
        cx.client
            .delete(
                &path,
                &json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}),
            )
            .await?;
    }
    since.retain(|k, _| seen.contains(k));
    Ok(())
}

fn terminated(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Deletes the oldest terminated pods beyond `threshold`, as upstream: pods evicted
/// first, then by creation time (names break ties, so the order is stable).
async fn collect_terminated(
    cx: &Context,
    pods: &Informer,
    threshold: usize,
) -> Result<(), crate::client::ClientError> {
    let mut done: Vec<Arc<Value>> = pods
        .list(None)
        .into_iter()
        .filter(|p| terminated(p) && p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    if done.len() <= threshold {
        return Ok(());
    }
    let evicted = |p: &Value| p["status"]["reason"] == "Evicted";
    done.sort_by(|a, b| {
        let order = |p: &Value| {
            (
                !evicted(p),
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                key_of(p),
            )
        };
        order(a).cmp(&order(b))
    });
    let excess = done.len() - threshold;
    tracing::info!(
        terminated = done.len(),
        threshold,
        deleting = excess,
        "too many terminated pods; deleting the oldest"
    );
    for pod in done.iter().take(excess) {
        let path = object_path(
            pods.res,
            pod["metadata"]["namespace"].as_str(),
            pod["metadata"]["name"].as_str().unwrap_or(""),
        );
        match cx
            .client
            .delete(
                &path,
                &json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}}),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
