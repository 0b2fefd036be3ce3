//! Node lifecycle, as upstream's node lifecycle controller and taint manager:
//!
//! - A node whose Lease (and status heartbeat) is older than the grace period
//!   (`--node-monitor-grace-period`, 40 s) gets its conditions set to `Unknown`
//!   ("Kubelet stopped posting node status.") and the `node.kubernetes.io/unreachable`
//!   NoSchedule and NoExecute taints; a node reporting `Ready=False` gets the
//!   `not-ready` ones; a cordoned node gets `node.kubernetes.io/unschedulable`.
//!   The taints go when the node is back.
//! - Pods on an unreachable node are marked not ready.
//! - Pods on a node with a NoExecute taint they do not tolerate are deleted; pods that
//!   tolerate it for `tolerationSeconds` (300 s by default, added to every pod) are
//!   deleted when that time is up — so their controllers replace them elsewhere.

use super::Context;
use crate::api::meta::{now_rfc3339, now_secs, parse_rfc3339};
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub async fn run(cx: Arc<Context>, grace: Duration) {
    let nodes = cx.informer(&crate::api::registry::NODES);
    let leases = cx.informer(&crate::api::registry::LEASES);
    let pods = cx.informer(&crate::api::registry::PODS);
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    leases.synced().await;
    pods.synced().await;
    loop {
        if let Err(e) = pass(&cx, &nodes, &leases, &pods, grace.as_secs() as i64).await {
            tracing::debug!(error = %e, "node lifecycle pass failed; retrying");
        }
        tokio::select! {
            // a pass reads every node: at most a few a second, however busy the nodes
            Some(_) = changes.recv() => tokio::time::sleep(Duration::from_millis(250)).await,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        while changes.try_recv().is_ok() {}
    }
}

fn time_of(v: &Value) -> Option<i64> {
    v.as_str().and_then(parse_rfc3339)
}

fn tolerates(pod: &Value, taint: &Value) -> Option<Option<i64>> {
    // Some(None): forever; Some(Some(s)): for s seconds; None: not at all
    let mut best: Option<Option<i64>> = None;
    for t in pod["spec"]["tolerations"].as_array().into_iter().flatten() {
        // the taints asked about here are NoExecute ones
        if crate::api::scheduling::toleration_matches(t, taint) {
            let s = t["tolerationSeconds"].as_i64();
            best = Some(match (best, s) {
                (Some(None), _) | (_, None) => None,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
                (None, Some(b)) => Some(b),
            });
        }
    }
    best
}

async fn pass(
    cx: &Context,
    nodes: &Informer,
    leases: &Informer,
    pods: &Informer,
    grace: i64,
) -> Result<(), crate::client::ClientError> {
    let now = now_secs();
    let now_text = now_rfc3339();
    for node in nodes.list(None) {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let conditions = node["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready = conditions
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or(Value::Null);
        let renewed = leases
            .get(&format!("kube-node-lease/{name}"))
            .and_then(|l| time_of(&l["spec"]["renewTime"]));
        let heartbeat = time_of(&ready["lastHeartbeatTime"]);
        let created = time_of(&node["metadata"]["creationTimestamp"]).unwrap_or(now);
        let last = renewed
            .into_iter()
            .chain(heartbeat)
            .max()
            .unwrap_or(created);
        let silent = now - last > grace;
        if silent && ready["status"] != "Unknown" {
            let unknown: Vec<Value> = conditions
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(now_text);
                    c
                })
                .collect();
            let path = format!("/api/v1/nodes/{name}/status");
            cx.client
                .call(
                    http::Method::PATCH,
                    &path,
                    "application/merge-patch+json",
                    Some(&json!({"status": {"conditions": unknown}})),
                )
                .await?;
            tracing::info!(node = %name, "node stopped renewing its lease; marked unreachable");
        }
        // the taints this node should carry
        let status = if silent {
            "Unknown"
        } else {
            ready["status"].as_str().unwrap_or("Unknown")
        };
        let mut wanted: Vec<(&str, &str)> = match status {
            "True" => vec![],
            "False" => vec![(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
            _ => vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
        };
        if node["spec"]["unschedulable"] == true {
            wanted.push((UNSCHEDULABLE, "NoSchedule"));
        }
        let taints = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ours = |t: &Value| {
            [UNREACHABLE, NOT_READY, UNSCHEDULABLE].contains(&t["key"].as_str().unwrap_or(""))
        };
        let mut next: Vec<Value> = taints
            .iter()
            .filter(|t| {
                !ours(t)
                    || wanted
                        .iter()
                        .any(|(k, e)| t["key"] == *k && t["effect"] == *e)
            })
            .cloned()
            .collect();
        for (k, e) in &wanted {
            if !next.iter().any(|t| t["key"] == *k && t["effect"] == *e) {
                let mut t = json!({"key": k, "effect": e});
                if *e == "NoExecute" {
                    t["timeAdded"] = json!(now_text);
                }
                next.push(t);
            }
        }
        if next != taints {
            cx.client
                .patch(
                    &format!("/api/v1/nodes/{name}"),
                    &json!({"spec": {"taints": next}}),
                )
                .await?;
        }
        // pods on this node: only an unreachable node or a NoExecute taint asks
        // anything of them (looked up by index: a scan per node is quadratic)
        let no_execute: Vec<&Value> = next.iter().filter(|t| t["effect"] == "NoExecute").collect();
        if status != "Unknown" && no_execute.is_empty() {
            continue;
        }
        let on_node: Vec<Arc<Value>> = pods
            .on_node(&name)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        for pod in on_node {
            let ns = pod["metadata"]["namespace"].as_str();
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
            let path = object_path(pods.res, ns, pod_name);
            if status == "Unknown" {
                let ready_now = pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready_now {
                    let conditions: Vec<Value> = pod["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|mut c| {
                            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                                c["status"] = json!("False");
                                c["lastTransitionTime"] = json!(now_text);
                            }
                            c
                        })
                        .collect();
                    let _ = cx
                        .client
                        .call(
                            http::Method::PATCH,
                            &format!("{path}/status"),
                            "application/merge-patch+json",
                            Some(&json!({"status": {"conditions": conditions}})),
                        )
                        .await;
                }
            }
            // the taint manager: the earliest moment a NoExecute taint evicts this pod
            let mut due: Option<i64> = None;
            for t in &no_execute {
                let added = time_of(&t["timeAdded"]).unwrap_or(now);
                let at = match tolerates(&pod, t) {
                    None => Some(now),
                    Some(None) => None,
                    Some(Some(s)) => Some(added + s),
                };
                due = match (due, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if due.is_some_and(|d| d <= now) {
                let mut p = (*pod).clone();
                p["kind"] = json!("Pod");
                p["apiVersion"] = json!("v1");
                cx.events
                    .record(
                        &p,
                        false,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {}/{pod_name}", ns.unwrap_or("")),
                        "taint-eviction-controller",
                    )
                    .await;
                cx.client.delete(&path, &json!({})).await?;
            }
        }
    }
    Ok(())
}
