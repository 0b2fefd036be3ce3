//! The scheduler: binds each pod without a node (and for the default scheduler) to the
//! best node that passes every filter, through `pods/binding`. Filters and scores are
//! small functions (`plugins.rs`); a pod no node fits gets `PodScheduled=False` and a
//! `FailedScheduling` event in upstream's words, and is tried again whenever nodes or
//! pods change.

pub mod plugins;

use crate::client::watch::{Informer, key_of, object_path};
use crate::controllers::Context;
use crate::controllers::events;
use crate::controllers::queue::WorkQueue;
use plugins::{NodeInfo, Verdict};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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
    let pods = cx.informer("", "pods");
    let nodes = cx.informer("", "nodes");
    let queue = WorkQueue::default();
    let unschedulable: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    {
        let (mut pod_changes, mut node_changes) = (pods.subscribe(), nodes.subscribe());
        let (queue, parked) = (queue.clone(), unschedulable.clone());
        tokio::spawn(async move {
            loop {
                let retry_parked = tokio::select! {
                    Some(c) = pod_changes.recv() => {
                        if c.new.as_deref().is_some_and(wants) {
                            queue.add(c.key.clone());
                        }
                        // a pod that went frees room
                        c.new.is_none() || c.new.as_deref().is_some_and(|p| !p["metadata"]["deletionTimestamp"].is_null())
                    }
                    Some(_) = node_changes.recv() => true,
                    else => return,
                };
                if retry_parked {
                    for k in parked.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                        queue.add(k);
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
        tokio::spawn(async move {
            loop {
                for p in pods.list(None) {
                    if wants(&p) {
                        queue.add(key_of(&p));
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    // pods bound by this scheduler that the informer has not shown bound yet
    let mut assumed: HashMap<String, (String, Arc<Value>)> = HashMap::new();
    let mut turn = 0usize;
    loop {
        // one snapshot of the nodes serves a batch of pods (each placement is added to
        // it), so the cost of reading every pod is paid once per batch, not per pod
        let mut batch = vec![queue.next().await];
        while batch.len() < 256 {
            match queue.try_next() {
                Some(k) => batch.push(k),
                None => break,
            }
        }
        assumed.retain(|k, _| pods.get(k).is_some_and(|p| wants(&p)));
        let mut infos = node_infos(&pods, &nodes, &assumed);
        for key in batch {
            let Some(pod) = pods.get(&key) else { continue };
            if !wants(&pod) {
                continue;
            }
            let placed = place(&pod, &infos, turn);
            tracing::debug!(pod = %key, nodes = infos.len(), result = ?placed, "scheduling");
            match placed {
                Ok(node) => {
                    turn += 1;
                    match bind(&cx, &pod, &node).await {
                        Ok(()) => {
                            assumed.insert(key.clone(), (node.clone(), pod.clone()));
                            if let Some(info) = infos.iter_mut().find(|i| i.name() == node) {
                                info.add(pod.clone());
                            }
                            let msg = format!("Successfully assigned {key} to {node}");
                            events::record(
                                &cx.client,
                                &with_kind(&pod),
                                false,
                                "Scheduled",
                                &msg,
                                NAME,
                            )
                            .await;
                        }
                        Err(e) => {
                            tracing::debug!(pod = %key, error = %e, "binding failed; retrying");
                            queue.add_after(key, Duration::from_millis(500));
                        }
                    }
                }
                Err(message) => {
                    unschedulable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(key.clone());
                    mark_unschedulable(&cx, &pod, &message).await;
                    // also retry now and then, as upstream's unschedulable queue does
                    queue.add_after(key, Duration::from_secs(60));
                }
            }
        }
    }
}

fn with_kind(pod: &Value) -> Value {
    let mut p = pod.clone();
    p["kind"] = json!("Pod");
    p["apiVersion"] = json!("v1");
    p
}

/// Every node with what is already placed on it.
fn node_infos(
    pods: &Informer,
    nodes: &Informer,
    assumed: &HashMap<String, (String, Arc<Value>)>,
) -> Vec<NodeInfo> {
    let mut by_node: BTreeMap<String, Vec<Arc<Value>>> = BTreeMap::new();
    for p in pods.list(None) {
        let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        by_node.entry(n.to_string()).or_default().push(p.clone());
    }
    for (node, pod) in assumed.values() {
        by_node.entry(node.clone()).or_default().push(pod.clone());
    }
    nodes
        .list(None)
        .into_iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
            NodeInfo::new(n, by_node.remove(&name).unwrap_or_default())
        })
        .collect()
}

/// The node for `pod`, or upstream's explanation of why there is none.
pub fn place(pod: &Value, nodes: &[NodeInfo], turn: usize) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resource_only = 0;
    let mut feasible = Vec::new();
    let anti = plugins::anti_affine(nodes);
    for info in nodes {
        let verdict = match plugins::filter(pod, info) {
            Verdict::Fits => {
                let why = plugins::filter_cluster(pod, info, nodes, &anti);
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
        return Err(format!(
            "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
            parts.join(", "),
            pre.join(", ")
        ));
    }
    let best = feasible
        .iter()
        .map(|n| plugins::score(pod, n))
        .fold(i64::MIN, i64::max);
    let top: Vec<&&NodeInfo> = feasible
        .iter()
        .filter(|n| plugins::score(pod, n) == best)
        .collect();
    Ok(top[turn % top.len()].name().to_string())
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
        object_path(crate::controllers::resource("", "pods"), ns, name)
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
    events::record(
        &cx.client,
        &with_kind(pod),
        true,
        "FailedScheduling",
        message,
        NAME,
    )
    .await;
}
