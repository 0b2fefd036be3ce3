//! The ReplicaSet controller: keeps `spec.replicas` pods that match the selector,
//! adopting matching orphans and releasing pods that stopped matching; when there are
//! too many it deletes first the pods that matter least (unscheduled, then pending,
//! then not ready, then the newest), as upstream. Status counts replicas, ready and
//! available pods.
//!
//! The informer may lag behind this controller's own writes, so it remembers what it
//! created and deleted ("expectations", as upstream) and does not act on a replica set
//! again until the informer has seen those changes (or a few seconds have passed).

use super::{Context, controller_of, controller_ref};
use crate::api::meta::{now_secs, parse_rfc3339};
use crate::api::selector::LabelSelector;
use crate::client::watch::{key_of, object_path};
use crate::runtime::informer::Informer;
use crate::runtime::queue::WorkQueue;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pods created or deleted at once per replica set (upstream's burstReplicas).
const BURST: usize = 500;

#[derive(Default)]
struct Expectation {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Runs the controller for ReplicaSets or, with the same logic,
/// ReplicationControllers.
pub async fn run(cx: Arc<Context>, res: &'static crate::api::registry::Resource) {
    let rss = cx.informer(res);
    let pods = cx.informer(&crate::api::registry::PODS);
    let queue = WorkQueue::default();
    feed(&cx, &rss, &pods, &queue);
    rss.synced().await;
    pods.synced().await;
    super::resync(&cx, &rss, &queue, Duration::from_secs(30));
    let mut expectations: HashMap<String, Expectation> = HashMap::new();
    loop {
        let key = queue.next().await;
        let outcome = sync(&cx, &rss, &pods, &key, &mut expectations, &queue)
            .await
            .map(|()| None);
        crate::runtime::controller::settle(res.plural, &queue, key, outcome);
    }
}

/// Upstream's name for the controller of `owner`'s kind, as its events say.
fn component(owner: &Value) -> &'static str {
    if owner["kind"] == "ReplicationController" {
        "replication-controller"
    } else {
        "replicaset-controller"
    }
}

/// Queues a replica set when it or one of its pods (or a pod it could adopt) changes.
pub(super) fn feed(cx: &Context, owners: &Arc<Informer>, pods: &Arc<Informer>, queue: &WorkQueue) {
    let (mut owner_changes, mut pod_changes) = (owners.subscribe(), pods.subscribe());
    let (owners, queue) = (owners.clone(), queue.clone());
    let kind = owners.res.kind;
    cx.spawn(async move {
        loop {
            tokio::select! {
                Some(c) = owner_changes.recv() => queue.add(c.key),
                Some(c) = pod_changes.recv() => {
                    for pod in [c.old.as_deref(), c.new.as_deref()].into_iter().flatten() {
                        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
                        match controller_of(pod) {
                            Some(r) if r["kind"] == kind => {
                                queue.add(format!("{ns}/{}", r["name"].as_str().unwrap_or("")));
                            }
                            Some(_) => {}
                            None => {
                                // an orphan: whoever selects it may adopt it
                                for o in owners.list(Some(ns)) {
                                    if selects(&o, pod) {
                                        queue.add(key_of(&o));
                                    }
                                }
                            }
                        }
                    }
                }
                else => return,
            }
        }
    });
}

/// Whether `owner`'s selector matches `pod`'s labels.
pub(super) fn selects(owner: &Value, pod: &Value) -> bool {
    let selector = &owner["spec"]["selector"];
    // a ReplicationController's selector is a plain map of labels
    let plain = selector.get("matchLabels").is_none()
        && selector.get("matchExpressions").is_none()
        && selector
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
    let selector = if plain {
        json!({"matchLabels": selector})
    } else {
        selector.clone()
    };
    LabelSelector::from_object(&selector)
        .ok()
        .filter(|s| !s.is_empty())
        .is_some_and(|s| s.matches(pod["metadata"]["labels"].as_object()))
}

/// Whether a pod counts as a replica (not finished, not being deleted).
pub(super) fn active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

pub fn ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Ready for at least `min_ready` seconds.
pub(super) fn available(pod: &Value, min_ready: i64, now: i64) -> bool {
    ready(pod)
        && (min_ready == 0
            || condition(pod, "Ready")
                .and_then(|c| c["lastTransitionTime"].as_str())
                .and_then(parse_rfc3339)
                .is_some_and(|t| t + min_ready <= now))
}

/// Deletion order: unscheduled, pending, not ready, then newest first.
fn deletion_rank(pod: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let running = pod["status"]["phase"] == "Running";
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(ready(pod)),
        std::cmp::Reverse(
            pod["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ),
    )
}

async fn sync(
    cx: &Context,
    rss: &Informer,
    pods: &Informer,
    key: &str,
    expectations: &mut HashMap<String, Expectation>,
    queue: &WorkQueue,
) -> Result<(), crate::client::ClientError> {
    let Some(rs) = rss.get(key) else {
        expectations.remove(key);
        return Ok(());
    };
    if !rs["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let ns = rs["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let uid = rs["metadata"]["uid"].as_str().unwrap_or("");
    let pod_res = pods.res;
    // adopt matching orphans, release owned pods that no longer match
    let mut owned = Vec::new();
    for pod in pods.controlled_by(uid).into_iter().chain(pods.orphans(&ns)) {
        let mine = controller_of(&pod).is_some_and(|r| r["uid"] == uid);
        let matches = selects(&rs, &pod);
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        if mine && !matches && active(&pod) {
            let refs: Vec<Value> = pod["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["uid"] != uid)
                .cloned()
                .collect();
            cx.client
                .patch(
                    &object_path(pod_res, Some(&ns), name),
                    &json!({"metadata": {"ownerReferences": refs, "uid": pod["metadata"]["uid"]}}),
                )
                .await?;
            continue;
        }
        if !mine && matches && controller_of(&pod).is_none() && active(&pod) {
            let mut refs = pod["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            refs.push(controller_ref(&rs));
            cx.client
                .patch(
                    &object_path(pod_res, Some(&ns), name),
                    &json!({"metadata": {"ownerReferences": refs, "uid": pod["metadata"]["uid"]}}),
                )
                .await?;
            owned.push(pod);
            continue;
        }
        if mine {
            owned.push(pod);
        }
    }
    // wait for the informer to see this controller's last changes
    if let Some(e) = expectations.get_mut(key) {
        let names: HashSet<&str> = owned
            .iter()
            .filter(|p| active(p))
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        e.adds.retain(|n| !names.contains(n.as_str()));
        e.deletes.retain(|n| names.contains(n.as_str()));
        let fresh = e
            .since
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
        if (!e.adds.is_empty() || !e.deletes.is_empty()) && fresh {
            queue.add_after(key.to_string(), Duration::from_millis(200));
            return Ok(());
        }
        expectations.remove(key);
    }
    let mut live: Vec<Arc<Value>> = owned.iter().filter(|p| active(p)).cloned().collect();
    let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
    let mut expectation = Expectation {
        since: Some(Instant::now()),
        ..Default::default()
    };
    if live.len() < want {
        let template = &rs["spec"]["template"];
        let rs_name = rs["metadata"]["name"].as_str().unwrap_or("");
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{rs_name}-"),
                "namespace": ns,
                "labels": template["metadata"]["labels"],
                "ownerReferences": [controller_ref(&rs)],
            },
            "spec": template["spec"],
        });
        if let Some(a) = template["metadata"]["annotations"].as_object() {
            pod["metadata"]["annotations"] = json!(a);
        }
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..(want - live.len()).min(BURST) {
            let (client, path, pod) = (cx.client.clone(), path.clone(), pod.clone());
            tasks.spawn(async move { client.create(&path, &pod).await });
        }
        let mut failed = None;
        let component = component(&rs);
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(created)) => {
                    if let Some(n) = created["metadata"]["name"].as_str() {
                        expectation.adds.insert(n.to_string());
                        cx.events.emit(
                            &rs,
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {n}"),
                            component,
                        );
                    }
                }
                Ok(Err(e)) => {
                    cx.events.emit(
                        &rs,
                        true,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                        component,
                    );
                    failed = Some(e);
                }
                Err(_) => {}
            }
        }
        expectations.insert(key.to_string(), expectation);
        if let Some(e) = failed {
            return Err(e);
        }
    } else if live.len() > want {
        live.sort_by_key(|p| deletion_rank(p));
        let mut tasks = tokio::task::JoinSet::new();
        for pod in live.iter().take((live.len() - want).min(BURST)) {
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            expectation.deletes.insert(name.clone());
            let (client, path) = (cx.client.clone(), object_path(pod_res, Some(&ns), &name));
            tasks.spawn(async move { client.delete(&path, &json!({})).await.map(|()| name) });
        }
        expectations.insert(key.to_string(), expectation);
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(name)) => cx.events.emit(
                    &rs,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                    component(&rs),
                ),
                Ok(Err(e)) => return Err(e),
                Err(_) => {}
            }
        }
    }
    update_status(cx, rss, &rs, &owned).await
}

async fn update_status(
    cx: &Context,
    rss: &Informer,
    rs: &Value,
    owned: &[Arc<Value>],
) -> Result<(), crate::client::ClientError> {
    let now = now_secs();
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let live: Vec<&Arc<Value>> = owned.iter().filter(|p| active(p)).collect();
    let template_labels = rs["spec"]["template"]["metadata"]["labels"].as_object();
    let fully_labeled = live
        .iter()
        .filter(|p| {
            template_labels.is_none_or(|want| {
                want.iter()
                    .all(|(k, v)| p["metadata"]["labels"][k.as_str()] == *v)
            })
        })
        .count();
    let mut status = json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": live.iter().filter(|p| ready(p)).count(),
        "availableReplicas": live.iter().filter(|p| available(p, min_ready, now)).count(),
        "observedGeneration": rs["metadata"]["generation"],
    });
    for k in ["readyReplicas", "availableReplicas", "fullyLabeledReplicas"] {
        if status[k] == 0 {
            status.as_object_mut().map(|m| m.remove(k));
        }
    }
    if let Some(c) = rs["status"].get("conditions") {
        status["conditions"] = c.clone();
    }
    if rs["status"] == status {
        return Ok(());
    }
    let path = format!(
        "{}/status",
        object_path(
            rss.res,
            rs["metadata"]["namespace"].as_str(),
            rs["metadata"]["name"].as_str().unwrap_or("")
        )
    );
    let mut next = rs.clone();
    next["status"] = status;
    cx.client.update(&path, &next).await.map(|_| ())
}
