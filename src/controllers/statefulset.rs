//! The StatefulSet controller: pods with stable names `<set>-<ordinal>` (and hostname,
//! subdomain, and one PersistentVolumeClaim per `volumeClaimTemplates` entry that
//! outlives the pod), created in order — with `OrderedReady`, pod N+1 only once pods
//! 0..N are running and ready — and removed highest ordinal first; `Parallel` does
//! both at once. `RollingUpdate` replaces pods from the highest ordinal down to
//! `partition`, one at a time, each once the rest are ready.

use super::deployment::template_hash;
use super::replicaset::{active, feed, ready};
use super::{Context, controller_ref, revisions};
use crate::client::ClientError;
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use crate::runtime::queue::{Unseen, WorkQueue};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const REVISION: &str = "controller-revision-hash";

const COMPONENT: &str = "statefulset-controller";

fn deleted(cx: &Context, set: &Value, pod: &Value) {
    let pod = pod["metadata"]["name"].as_str().unwrap_or("");
    let name = set["metadata"]["name"].as_str().unwrap_or("");
    cx.events.emit(
        set,
        false,
        "SuccessfulDelete",
        format!("delete Pod {pod} in StatefulSet {name} successful"),
        COMPONENT,
    );
}

pub async fn run(cx: Arc<Context>) {
    let sets = cx.informer(&crate::api::registry::STATEFULSETS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let claims = cx.informer(&crate::api::registry::PERSISTENTVOLUMECLAIMS);
    let history = cx.informer(&crate::api::registry::CONTROLLERREVISIONS);
    let queue = WorkQueue::default();
    feed(&cx, &sets, &pods, &queue);
    sets.synced().await;
    pods.synced().await;
    claims.synced().await;
    history.synced().await;
    super::resync(&cx, &sets, &queue, Duration::from_secs(30));
    let mut pending = Unseen::default();
    loop {
        let key = queue.next().await;
        let outcome = sync(&cx, &sets, &pods, &claims, &key, &mut pending)
            .await
            .map(|()| None);
        crate::runtime::controller::settle("statefulset", &queue, key, outcome);
    }
}

fn ordinal(pod: &Value, set: &str) -> Option<i64> {
    pod["metadata"]["name"]
        .as_str()?
        .strip_prefix(&format!("{set}-"))?
        .parse()
        .ok()
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && ready(pod)
        && pod["metadata"]["deletionTimestamp"].is_null()
}

async fn sync(
    cx: &Context,
    sets: &Informer,
    pods: &Informer,
    claims: &Informer,
    key: &str,
    pending: &mut Unseen,
) -> Result<(), ClientError> {
    let Some(set) = sets.get(key) else {
        return Ok(());
    };
    if !set["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let ns = set["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = set["metadata"]["name"].as_str().unwrap_or("").to_string();
    let uid = &set["metadata"]["uid"];
    let hash = template_hash(&set["spec"]["template"], 0);
    let revision = format!("{name}-{hash}");
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let parallel = set["spec"]["podManagementPolicy"] == "Parallel";
    let mut by_ordinal: BTreeMap<i64, Arc<Value>> = BTreeMap::new();
    for p in pods.controlled_by(uid.as_str().unwrap_or("")) {
        if let Some(i) = ordinal(&p, &name) {
            by_ordinal.insert(i, p);
        }
    }
    let in_use: HashSet<String> = by_ordinal
        .values()
        .filter_map(|p| p["metadata"]["labels"][REVISION].as_str().map(String::from))
        .collect();
    revisions::record(
        cx,
        &cx.informer(&crate::api::registry::CONTROLLERREVISIONS),
        &set,
        &revision,
        ("controller.kubernetes.io/hash", &hash),
        &in_use,
    )
    .await?;
    // wait until the informer shows what was just created or deleted
    let visible = |n: &str| {
        by_ordinal
            .values()
            .any(|p| p["metadata"]["name"] == n && active(p))
    };
    if pending.waiting(key, visible) {
        return Ok(());
    }
    let pod_path = |pod_name: &str| object_path(pods.res, Some(&ns), pod_name);
    // finished or failed pods are replaced
    for (_, p) in by_ordinal
        .iter()
        .filter(|(_, p)| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
    {
        cx.client
            .delete(
                &pod_path(p["metadata"]["name"].as_str().unwrap_or("")),
                &json!({}),
            )
            .await?;
        deleted(cx, &set, p);
    }
    let mut acted = false;
    // create what is missing, in order
    for i in 0..replicas {
        if by_ordinal.get(&i).is_some_and(|p| active(p)) {
            if !parallel && !running_and_ready(&by_ordinal[&i]) {
                break; // OrderedReady: nothing after a pod that is not ready yet
            }
            continue;
        }
        if by_ordinal.contains_key(&i) {
            break; // still terminating
        }
        let pod_name = format!("{name}-{i}");
        ensure_claims(cx, &set, claims, &ns, &name, i).await?;
        let pod = pod_for(&set, &ns, &name, i, &revision);
        match cx
            .client
            .create(&format!("/api/v1/namespaces/{ns}/pods"), &pod)
            .await
        {
            Ok(_) => cx.events.emit(
                &set,
                false,
                "SuccessfulCreate",
                format!("create Pod {pod_name} in StatefulSet {name} successful"),
                COMPONENT,
            ),
            Err(e) if e.is_already_exists() => {}
            Err(e) => {
                cx.events.emit(
                    &set,
                    true,
                    "FailedCreate",
                    format!("create Pod {pod_name} in StatefulSet {name} failed error: {e}"),
                    COMPONENT,
                );
                return Err(e);
            }
        }
        pending.created(key, &pod_name);
        acted = true;
        if !parallel {
            break;
        }
    }
    // remove what is too many, highest ordinal first
    if !acted {
        let extra: Vec<(&i64, &Arc<Value>)> = by_ordinal
            .iter()
            .rev()
            .filter(|(i, p)| **i >= replicas && active(p))
            .collect();
        let others_ready = by_ordinal
            .iter()
            .filter(|(i, _)| **i < replicas)
            .all(|(_, p)| running_and_ready(p));
        for (_, p) in extra.iter().take(if parallel { usize::MAX } else { 1 }) {
            if parallel || others_ready {
                cx.client
                    .delete(
                        &pod_path(p["metadata"]["name"].as_str().unwrap_or("")),
                        &json!({}),
                    )
                    .await?;
                deleted(cx, &set, p);
                acted = true;
            }
        }
    }
    // rolling update, from the top down to the partition
    let rolling = set["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = set["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    let all_ready = (0..replicas).all(|i| by_ordinal.get(&i).is_some_and(|p| running_and_ready(p)));
    if rolling && !acted && all_ready {
        if let Some((_, p)) = by_ordinal.iter().rev().find(|(i, p)| {
            **i < replicas
                && **i >= partition
                && p["metadata"]["labels"][REVISION] != *revision.as_str()
        }) {
            cx.client
                .delete(
                    &pod_path(p["metadata"]["name"].as_str().unwrap_or("")),
                    &json!({}),
                )
                .await?;
            deleted(cx, &set, p);
        }
    }
    // status
    let live: Vec<&Arc<Value>> = by_ordinal.values().filter(|p| active(p)).collect();
    let updated = live
        .iter()
        .filter(|p| p["metadata"]["labels"][REVISION] == *revision.as_str())
        .count() as i64;
    let current_revision = if updated == replicas && live.len() as i64 == replicas {
        revision.clone()
    } else {
        set["status"]["currentRevision"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| revision.clone())
    };
    let current = live
        .iter()
        .filter(|p| p["metadata"]["labels"][REVISION] == *current_revision.as_str())
        .count();
    let ready_count = live.iter().filter(|p| ready(p)).count();
    let mut status = json!({
        "observedGeneration": set["metadata"]["generation"],
        "replicas": live.len(),
        "readyReplicas": ready_count,
        "availableReplicas": ready_count,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    for k in ["readyReplicas", "currentReplicas", "updatedReplicas"] {
        if status[k] == 0 {
            status.as_object_mut().map(|m| m.remove(k));
        }
    }
    if set["status"] != status {
        let mut next = (*set).clone();
        next["status"] = status;
        cx.client
            .update(
                &format!("{}/status", object_path(sets.res, Some(&ns), &name)),
                &next,
            )
            .await?;
    }
    Ok(())
}

/// The claims of pod `ordinal`, created if missing; they belong to no pod, so they
/// outlive it (upstream's default retention policy, Retain).
async fn ensure_claims(
    cx: &Context,
    set: &Value,
    claims: &Informer,
    ns: &str,
    name: &str,
    ordinal: i64,
) -> Result<(), ClientError> {
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim = format!(
            "{}-{name}-{ordinal}",
            t["metadata"]["name"].as_str().unwrap_or("")
        );
        if claims.get(&format!("{ns}/{claim}")).is_some() {
            continue;
        }
        let mut labels = set["spec"]["selector"]["matchLabels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        let pvc = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": ns, "labels": labels},
            "spec": t["spec"],
        });
        match cx
            .client
            .create(
                &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
                &pvc,
            )
            .await
        {
            Ok(_) => {
                let pod = format!("{name}-{ordinal}");
                cx.events.emit(
                    set,
                    false,
                    "SuccessfulCreate",
                    format!("create Claim {claim} Pod {pod} in StatefulSet {name} success"),
                    COMPONENT,
                );
            }
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn pod_for(set: &Value, ns: &str, name: &str, ordinal: i64, revision: &str) -> Value {
    let template = &set["spec"]["template"];
    let pod_name = format!("{name}-{ordinal}");
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[REVISION] = json!(revision);
    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    labels["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    let mut spec = template["spec"].clone();
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(svc);
    }
    let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let vol = t["metadata"]["name"].as_str().unwrap_or("");
        if !volumes.iter().any(|v| v["name"] == vol) {
            volumes.push(json!({"name": vol, "persistentVolumeClaim": {"claimName": format!("{vol}-{name}-{ordinal}")}}));
        }
    }
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "ownerReferences": [controller_ref(set)]},
        "spec": spec,
    });
    if template["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    }
    pod
}
