//! The scheduler: binds each pod without a node (and for the default scheduler) to the
//! best node that passes every filter, through `pods/binding`. Filters and scores are
//! small functions (`plugins.rs`); a pod no node fits gets `PodScheduled=False` and a
//! `FailedScheduling` event in upstream's words, and is tried again whenever nodes or
//! pods change.

pub mod cache;
pub mod interpod;
/// The per-node filters and scores: pure, shared with the DaemonSet controller.
pub(crate) use crate::api::scheduling as plugins;
#[cfg(test)]
mod plugin_tests;
pub mod preemption;

use crate::client::watch::{key_of, object_path};
use crate::runtime::Context;
use crate::runtime::queue::WorkQueue;
use cache::Cache;
use interpod::Prepared;
use plugins::{NodeInfo, Verdict};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAME: &str = "default-scheduler";

/// Whether this scheduler should place `pod`.
fn wants(pod: &Value) -> bool {
    pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["spec"]["schedulerName"]
            .as_str()
            .is_none_or(|s| s == NAME)
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

pub async fn run(cx: Arc<Context>) {
    let pods = cx.informer(&crate::api::registry::PODS);
    let nodes = cx.informer(&crate::api::registry::NODES);
    let queue = WorkQueue::default();
    let cache: Arc<Mutex<Cache>> = Arc::default();
    let unschedulable: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (mut pod_changes, mut node_changes) = (pods.subscribe(), nodes.subscribe());
        let (queue, parked, cache, pods) = (
            queue.clone(),
            unschedulable.clone(),
            cache.clone(),
            pods.clone(),
        );
        cx.spawn(async move {
            loop {
                let retry_parked = tokio::select! {
                    Some(c) = pod_changes.recv() => {
                        lock(&cache).pod_changed(&c.key, c.new.as_ref());
                        if let Some(p) = c.new.as_deref().filter(|p| wants(p)) {
                            queue.add_ranked(c.key.clone(), preemption::priority(p));
                        }
                        // a pod that went or finished frees room
                        c.new.as_deref().is_none_or(|p| {
                            !p["metadata"]["deletionTimestamp"].is_null()
                                || matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                        })
                    }
                    Some(c) = node_changes.recv() => {
                        let name = c.new.as_ref().or(c.old.as_ref())
                            .and_then(|n| n["metadata"]["name"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        lock(&cache).node_changed(&name, c.new);
                        true
                    }
                    else => return,
                };
                if retry_parked {
                    for k in lock(&parked).drain(..) {
                        let rank = pods.get(&k).map_or(0, |p| preemption::priority(&p));
                        queue.add_ranked(k, rank);
                    }
                }
            }
        });
    }
    pods.synced().await;
    nodes.synced().await;
    // every pod still waiting is looked at again now and then: level-triggered, so a
    // lost event or a failed bind cannot leave a pod behind
    {
        let (pods, queue) = (pods.clone(), queue.clone());
        cx.spawn(async move {
            loop {
                for p in pods.list(None) {
                    if wants(&p) {
                        queue.add_ranked(key_of(&p), preemption::priority(&p));
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    // bindings are written concurrently (as upstream's binding cycle), a bounded number
    // at a time; the next decision already counts the pods being bound
    let binds = Arc::new(tokio::sync::Semaphore::new(BINDS_IN_FLIGHT));
    let mut turn = 0usize;
    let mut chosen = preemption::Chosen::default();
    loop {
        let key = queue.next().await;
        let Some(pod) = pods.get(&key) else { continue };
        if !wants(&pod) {
            continue;
        }
        let placed = {
            let cache = lock(&cache);
            if cache.is_assumed(&key) {
                continue; // its binding is being written
            }
            place(&pod, cache.nodes(), turn)
        };
        tracing::debug!(pod = %key, result = ?placed, "scheduling");
        match placed {
            Ok(node) => {
                turn += 1;
                lock(&cache).assume(&key, &node, pod.clone());
                let Ok(permit) = binds.clone().acquire_owned().await else {
                    return;
                };
                let (owner, cx, cache, queue) =
                    (cx.clone(), cx.clone(), cache.clone(), queue.clone());
                owner.spawn(async move {
                    let _permit = permit;
                    match bind(&cx, &pod, &node).await {
                        Ok(()) => {
                            cx.events.emit(
                                &with_kind(&pod),
                                false,
                                "Scheduled",
                                format!("Successfully assigned {key} to {node}"),
                                NAME,
                            );
                        }
                        Err(e) => {
                            tracing::debug!(pod = %key, error = %e, "binding failed; retrying");
                            lock(&cache).forget(&key);
                            let rank = preemption::priority(&pod);
                            queue.add_ranked_after(key, rank, Duration::from_millis(500));
                        }
                    }
                });
            }
            Err(why) => {
                lock(&unschedulable).push(key.clone());
                // as upstream's PostFilter: make room by preempting lower-priority pods
                // (then the message is the filters' alone, as upstream's)
                let plan = preemption::plan(&pod, lock(&cache).nodes(), &mut chosen);
                if let Some(plan) = &plan {
                    chosen.remember(plan);
                }
                let rank = preemption::priority(&pod);
                let message = match &plan {
                    Some(_) => why.without_preemption(),
                    None => why.to_string(),
                };
                mark_unschedulable(&cx, &pod, &message).await;
                if let Some(plan) = plan {
                    preemption::execute(&cx, &pod, &plan).await;
                }
                // also retry now and then, as upstream's unschedulable queue does
                queue.add_ranked_after(key, rank, Duration::from_secs(60));
            }
        }
    }
}

const BINDS_IN_FLIGHT: usize = 16;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn with_kind(pod: &Value) -> Value {
    let mut p = pod.clone();
    p["kind"] = json!("Pod");
    p["apiVersion"] = json!("v1");
    p
}

/// Why no node fits a pod, in upstream's words (the PodScheduled condition's message).
#[derive(Debug, thiserror::Error)]
pub enum Unschedulable {
    /// The cluster has no node.
    #[error("no nodes available to schedule pods")]
    NoNodes,
    /// Every node was filtered out.
    #[error(
        "0/{total} nodes are available: {reasons}. preemption: 0/{total} nodes are available: {preemption}."
    )]
    Filtered {
        /// The nodes looked at.
        total: usize,
        /// "<count> <reason>" for each reason, sorted.
        reasons: String,
        /// What preemption could do, as upstream's PostFilter says.
        preemption: String,
    },
}

impl Unschedulable {
    /// The filters' message alone (when preemption makes room, upstream omits its part).
    fn without_preemption(&self) -> String {
        match self {
            Unschedulable::Filtered { total, reasons, .. } => {
                format!("0/{total} nodes are available: {reasons}.")
            }
            other => other.to_string(),
        }
    }
}

/// The node for `pod`, or upstream's explanation of why there is none.
pub fn place(pod: &Value, all: &[NodeInfo], turn: usize) -> Result<String, Unschedulable> {
    let nodes: Vec<&NodeInfo> = all.iter().filter(|n| n.is_present()).collect();
    if nodes.is_empty() {
        return Err(Unschedulable::NoNodes);
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resource_only = 0;
    let mut feasible = Vec::new();
    let prepared = Prepared::new(pod, all);
    let facts = plugins::Facts::of(pod);
    // as upstream's percentageOfNodesToScore: in a big cluster, stop looking once
    // enough feasible nodes are found, starting each search where the last one ended
    let enough = nodes_to_find(nodes.len());
    let start = turn % nodes.len();
    let mut looked = 0;
    for info in nodes[start..].iter().chain(&nodes[..start]).copied() {
        if feasible.len() >= enough {
            break;
        }
        looked += 1;
        let verdict = match plugins::filter_with(pod, &facts, info) {
            Verdict::Fits => {
                let why = prepared.filter(info);
                if why.is_empty() {
                    Verdict::Fits
                } else {
                    Verdict::No(why)
                }
            }
            no => no,
        };
        match verdict {
            Verdict::Fits => feasible.push(info),
            Verdict::No(why) => {
                if why
                    .iter()
                    .all(|w| w.starts_with("Insufficient") || w == "Too many pods")
                {
                    resource_only += 1;
                }
                for w in why {
                    *reasons.entry(w).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        let total = nodes.len();
        // upstream sorts the "<count> <reason>" strings themselves
        let mut parts: Vec<String> = reasons.iter().map(|(w, n)| format!("{n} {w}")).collect();
        parts.sort();
        let mut pre = Vec::new();
        if resource_only > 0 {
            pre.push(format!(
                "{resource_only} No preemption victims found for incoming pod"
            ));
        }
        if total > resource_only {
            pre.push(format!(
                "{} Preemption is not helpful for scheduling",
                total - resource_only
            ));
        }
        pre.sort();
        return Err(Unschedulable::Filtered {
            total,
            reasons: parts.join(", "),
            preemption: pre.join(", "),
        });
    }
    tracing::trace!(looked, feasible = feasible.len(), "nodes filtered");
    let scores = total_scores(pod, &facts, &feasible, &prepared);
    let best = scores.iter().copied().max().unwrap_or(0);
    let top: Vec<&NodeInfo> = feasible
        .iter()
        .zip(&scores)
        .filter(|(_, s)| **s == best)
        .map(|(n, _)| *n)
        .collect();
    Ok(top[turn % top.len()].name().to_string())
}

/// How many feasible nodes are enough to choose from: all of them up to 100 nodes,
/// then upstream's adaptive share (50% less 1% per 125 nodes, at least 5%, and never
/// fewer than 100).
fn nodes_to_find(total: usize) -> usize {
    if total <= 100 {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(100)
}

/// Each feasible node's score: the plugins' scores normalised to 0–100 as upstream's
/// are, weighted as upstream's default profile (resources 1 + 1, node affinity 2,
/// inter-pod affinity 2, topology spread 2, taint toleration 3).
fn total_scores(
    pod: &Value,
    facts: &plugins::Facts,
    feasible: &[&NodeInfo],
    prepared: &Prepared,
) -> Vec<i64> {
    struct Raw {
        resources: i64,
        node_affinity: i64,
        taints: i64,
        pod_affinity: i64,
        spread: i64,
    }
    let raw: Vec<Raw> = feasible
        .iter()
        .map(|n| {
            let (resources, node_affinity, taints) = plugins::node_scores(pod, facts, n);
            let (pod_affinity, spread) = prepared.scores(n);
            Raw {
                resources,
                node_affinity,
                taints,
                pod_affinity,
                spread,
            }
        })
        .collect();
    let max_of = |f: fn(&Raw) -> i64| raw.iter().map(f).max().unwrap_or(0);
    let min_of = |f: fn(&Raw) -> i64| raw.iter().map(f).min().unwrap_or(0);
    let (aff_max, taint_max) = (max_of(|r| r.node_affinity), max_of(|r| r.taints));
    let (pod_max, pod_min) = (max_of(|r| r.pod_affinity), min_of(|r| r.pod_affinity));
    let (spread_max, spread_min) = (max_of(|r| r.spread), min_of(|r| r.spread));
    raw.iter()
        .map(|r| {
            let node_affinity = if aff_max > 0 {
                r.node_affinity * 100 / aff_max
            } else {
                0
            };
            let taint = if taint_max > 0 {
                100 - r.taints * 100 / taint_max
            } else {
                100
            };
            let inter = if pod_max > pod_min {
                (r.pod_affinity - pod_min) * 100 / (pod_max - pod_min)
            } else {
                0
            };
            let spread = if !prepared.spreads() {
                0
            } else if spread_max > 0 {
                100 * (spread_max + spread_min - r.spread) / spread_max
            } else {
                100
            };
            r.resources + 2 * node_affinity + 2 * inter + 2 * spread + 3 * taint
        })
        .collect()
}

async fn bind(cx: &Context, pod: &Value, node: &str) -> Result<(), crate::client::ClientError> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod["metadata"]["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    cx.client
        .create(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/binding"),
            &binding,
        )
        .await
        .map(|_| ())
}

async fn mark_unschedulable(cx: &Context, pod: &Value, message: &str) {
    let already = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["message"] == message);
    if already {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str();
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let mut conditions: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "PodScheduled")
        .collect();
    conditions.push(json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
        "lastProbeTime": null, "lastTransitionTime": crate::api::meta::now_rfc3339(),
    }));
    let path = format!(
        "{}/status",
        object_path(&crate::api::registry::PODS, ns, name)
    );
    let patch = json!({"status": {"conditions": conditions}});
    let _ = cx
        .client
        .call(
            http::Method::PATCH,
            &path,
            "application/merge-patch+json",
            Some(&patch),
        )
        .await;
    cx.events
        .record(&with_kind(pod), true, "FailedScheduling", message, NAME)
        .await;
}
