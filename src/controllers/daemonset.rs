//! The DaemonSet controller: one pod on every node the pod may run on (node selector,
//! required node affinity, taints — with the tolerations upstream gives daemon pods),
//! placed by the scheduler through a node-name affinity as upstream does; a new node
//! gets its pod, a node that stops qualifying loses it. `RollingUpdate` replaces
//! outdated pods at most `maxUnavailable` at a time; `OnDelete` waits for the user.

use super::deployment::template_hash;
use super::replicaset::{active, available, feed};
use super::{Context, controller_ref, revisions};
use crate::api::meta::now_secs;
use crate::api::scheduling::{NodeInfo, Verdict, filter};
use crate::client::ClientError;
use crate::client::watch::{key_of, object_path};
use crate::runtime::informer::Informer;
use crate::runtime::queue::{Unseen, WorkQueue};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const HASH: &str = "controller-revision-hash";

const COMPONENT: &str = "daemonset-controller";

fn deleted(cx: &Context, ds: &Value, pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    cx.events.emit(
        ds,
        false,
        "SuccessfulDelete",
        format!("Deleted pod: {name}"),
        COMPONENT,
    );
}

pub async fn run(cx: Arc<Context>) {
    let sets = cx.informer(&crate::api::registry::DAEMONSETS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let nodes = cx.informer(&crate::api::registry::NODES);
    let history = cx.informer(&crate::api::registry::CONTROLLERREVISIONS);
    let queue = WorkQueue::default();
    feed(&cx, &sets, &pods, &queue);
    {
        // a node change may concern every daemon set
        let (mut changes, sets, queue) = (nodes.subscribe(), sets.clone(), queue.clone());
        cx.spawn(async move {
            while changes.recv().await.is_some() {
                for s in sets.list(None) {
                    queue.add(key_of(&s));
                }
            }
        });
    }
    sets.synced().await;
    pods.synced().await;
    nodes.synced().await;
    history.synced().await;
    super::resync(&cx, &sets, &queue, Duration::from_secs(30));
    // pods created but not yet seen, per daemon set: nothing new until they show up
    let mut pending = Unseen::default();
    loop {
        let key = queue.next().await;
        let outcome = sync(&cx, &sets, &pods, &nodes, &key, &mut pending).await;
        crate::runtime::controller::settle("daemonset", &queue, key, outcome);
    }
}

/// The tolerations upstream adds to every daemon pod.
fn with_daemon_tolerations(spec: &mut Value) {
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    spec["tolerations"] = json!(tolerations);
}

/// Whether the daemon pod `template` may run on `node` (resources aside: that is the
/// scheduler's business).
fn eligible(pod: &Value, node: &Arc<Value>) -> bool {
    match filter(pod, &NodeInfo::new(node.clone(), Vec::new())) {
        Verdict::Fits => true,
        Verdict::No(why) => why.iter().all(|w| {
            w.starts_with("Insufficient") || w == "Too many pods" || w.contains("free ports")
        }),
    }
}

async fn sync(
    cx: &Context,
    sets: &Informer,
    pods: &Informer,
    nodes: &Informer,
    key: &str,
    pending: &mut Unseen,
) -> Result<Option<Duration>, ClientError> {
    let Some(ds) = sets.get(key) else {
        return Ok(None);
    };
    if !ds["metadata"]["deletionTimestamp"].is_null() {
        return Ok(None);
    }
    let ns = ds["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = ds["metadata"]["name"].as_str().unwrap_or("").to_string();
    let hash = template_hash(&ds["spec"]["template"], 0);
    let mut spec = ds["spec"]["template"]["spec"].clone();
    with_daemon_tolerations(&mut spec);
    let probe = json!({"spec": spec});
    let uid = &ds["metadata"]["uid"];
    if pending.waiting(key, |n| pods.get(&format!("{ns}/{n}")).is_some()) {
        return Ok(Some(Duration::from_millis(200)));
    }
    let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in pods.controlled_by(uid.as_str().unwrap_or("")) {
        if active(&p) {
            let node = p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
                .as_str()
                .or_else(|| p["spec"]["nodeName"].as_str())
                .unwrap_or("")
                .to_string();
            by_node.entry(node).or_default().push(p);
        }
    }
    let in_use: HashSet<String> = by_node
        .values()
        .flatten()
        .filter_map(|p| p["metadata"]["labels"][HASH].as_str())
        .map(|h| format!("{name}-{h}"))
        .collect();
    revisions::record(
        cx,
        &cx.informer(&crate::api::registry::CONTROLLERREVISIONS),
        &ds,
        &format!("{name}-{hash}"),
        (HASH, &hash),
        &in_use,
    )
    .await?;
    let all_nodes = nodes.list(None);
    let wanted: Vec<&Arc<Value>> = all_nodes.iter().filter(|n| eligible(&probe, n)).collect();
    let min_ready = ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let now = now_secs();
    let pod_path = |p: &Value| {
        object_path(
            pods.res,
            Some(&ns),
            p["metadata"]["name"].as_str().unwrap_or(""),
        )
    };
    // pods on nodes that do not want them, and duplicates
    for (node, list) in &by_node {
        let keep = wanted
            .iter()
            .any(|n| n["metadata"]["name"] == *node.as_str());
        for (i, p) in list.iter().enumerate() {
            if !keep || i > 0 {
                cx.client.delete(&pod_path(p), &json!({})).await?;
                deleted(cx, &ds, p);
            }
        }
    }
    // rolling update: outdated pods go, at most maxUnavailable not available at once
    let rolling = ds["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let desired = wanted.len() as i64;
    let max_unavailable = match &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] {
        Value::Number(n) => n.as_i64().unwrap_or(1),
        Value::String(s) => s
            .trim_end_matches('%')
            .parse::<i64>()
            .map(|p| (p * desired / 100).max(1))
            .unwrap_or(1),
        _ => 1,
    };
    let current: Vec<&Arc<Value>> = wanted
        .iter()
        .filter_map(|n| {
            by_node
                .get(n["metadata"]["name"].as_str().unwrap_or(""))
                .and_then(|l| l.first())
        })
        .collect();
    let unavailable = desired
        - current
            .iter()
            .filter(|p| available(p, min_ready, now))
            .count() as i64;
    let mut budget = max_unavailable - unavailable;
    if rolling {
        for p in current
            .iter()
            .filter(|p| p["metadata"]["labels"][HASH] != *hash.as_str())
        {
            if budget <= 0 {
                break;
            }
            cx.client.delete(&pod_path(p), &json!({})).await?;
            deleted(cx, &ds, p);
            budget -= 1;
        }
    }
    // a pod for every wanted node without one
    for node in &wanted {
        let node_name = node["metadata"]["name"].as_str().unwrap_or("");
        if by_node.get(node_name).is_some_and(|l| !l.is_empty()) {
            continue;
        }
        let mut pod_spec = spec.clone();
        pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]
        });
        let mut labels = ds["spec"]["template"]["metadata"]["labels"].clone();
        labels[HASH] = json!(hash);
        labels["pod-template-generation"] = json!(
            ds["metadata"]["generation"]
                .as_i64()
                .unwrap_or(1)
                .to_string()
        );
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": labels,
                         "ownerReferences": [controller_ref(&ds)]},
            "spec": pod_spec,
        });
        if ds["spec"]["template"]["metadata"]["annotations"].is_object() {
            pod["metadata"]["annotations"] =
                ds["spec"]["template"]["metadata"]["annotations"].clone();
        }
        let made = cx
            .client
            .create(&format!("/api/v1/namespaces/{ns}/pods"), &pod)
            .await?;
        if let Some(n) = made["metadata"]["name"].as_str() {
            pending.created(key, n);
            cx.events.emit(
                &ds,
                false,
                "SuccessfulCreate",
                format!("Created pod: {n}"),
                COMPONENT,
            );
        }
    }
    // status
    let scheduled = current
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .count();
    let misscheduled = by_node
        .iter()
        .filter(|(node, _)| {
            !wanted
                .iter()
                .any(|n| n["metadata"]["name"] == *node.as_str())
        })
        .count();
    let status = json!({
        "currentNumberScheduled": scheduled,
        "desiredNumberScheduled": desired,
        "numberMisscheduled": misscheduled,
        "numberReady": current.iter().filter(|p| super::replicaset::ready(p)).count(),
        "numberAvailable": current.iter().filter(|p| available(p, min_ready, now)).count(),
        "numberUnavailable": unavailable.max(0),
        "updatedNumberScheduled": current.iter().filter(|p| p["metadata"]["labels"][HASH] == *hash.as_str()).count(),
        "observedGeneration": ds["metadata"]["generation"],
    });
    let mut status = status;
    for k in [
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
    ] {
        if status[k] == 0 {
            status.as_object_mut().map(|m| m.remove(k));
        }
    }
    if ds["status"] != status {
        let mut next = (*ds).clone();
        next["status"] = status;
        cx.client
            .update(
                &format!("{}/status", object_path(sets.res, Some(&ns), &name)),
                &next,
            )
            .await?;
    }
    Ok(None)
}
