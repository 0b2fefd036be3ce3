//! The Deployment controller, after upstream's: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`, numbered by the `deployment.kubernetes.io/
//! revision` annotation), rolled from old to new within `maxSurge` / `maxUnavailable`
//! (or all at once for `Recreate`), old ones kept up to `revisionHistoryLimit`, and the
//! status and `Available` / `Progressing` conditions that `kubectl rollout status`
//! reads. A rollback (`kubectl rollout undo`) is a template change back to an old
//! ReplicaSet's, which then becomes the newest revision again.

use super::replicaset::selects;
use super::{Context, controller_of, controller_ref};
use crate::api::meta::{now_rfc3339, now_secs, parse_rfc3339};
use crate::client::ClientError;
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use crate::runtime::queue::WorkQueue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH: &str = "pod-template-hash";

pub async fn run(cx: Arc<Context>) {
    let deps = cx.informer(&crate::api::registry::DEPLOYMENTS);
    let rss = cx.informer(&crate::api::registry::REPLICASETS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let queue = WorkQueue::default();
    super::replicaset::feed(&cx, &deps, &rss, &queue);
    deps.synced().await;
    rss.synced().await;
    pods.synced().await;
    super::resync(&cx, &deps, &queue, Duration::from_secs(30));
    loop {
        let key = queue.next().await;
        let outcome = sync(&cx, &deps, &rss, &pods, &key).await;
        crate::runtime::controller::settle("deployment", &queue, key, outcome);
    }
}

/// Upstream's pod-template-hash shape: a 32-bit FNV-1a of the template (and the
/// collision count), its decimal digits mapped onto a vowel-free alphabet.
pub fn template_hash(template: &Value, collisions: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let text = format!(
        "{template}{}",
        if collisions > 0 {
            collisions.to_string()
        } else {
            String::new()
        }
    );
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// `v` without null fields: typed decoding upstream makes `null` and absent the same
/// (kubectl sends `creationTimestamp: null` in templates).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// A ReplicaSet's template without the label this controller added.
fn template_of(rs: &Value) -> Value {
    let mut t = without_nulls(&rs["spec"]["template"]);
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH);
    }
    if t["metadata"]["labels"]
        .as_object()
        .is_some_and(|l| l.is_empty())
    {
        t["metadata"].as_object_mut().map(|m| m.remove("labels"));
    }
    t
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn status_n(rs: &Value, field: &str) -> i64 {
    rs["status"][field].as_i64().unwrap_or(0)
}

/// An int-or-percent of `total` (percentages round up for surge, down otherwise).
fn resolve(v: &Value, total: i64, round_up: bool, default: &str) -> i64 {
    let v = if v.is_null() {
        json!(default)
    } else {
        v.clone()
    };
    match &v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            if round_up {
                (pct * total + 99) / 100
            } else {
                pct * total / 100
            }
        }
        _ => 0,
    }
}

async fn scale(
    cx: &Context,
    rs: &Value,
    to: i64,
    d: &Value,
    max_surge: i64,
) -> Result<(), ClientError> {
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let annotations = json!({
        "deployment.kubernetes.io/desired-replicas": desired.to_string(),
        "deployment.kubernetes.io/max-replicas": (desired + max_surge).to_string(),
    });
    if replicas(rs) == to
        && rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"]
            == annotations["deployment.kubernetes.io/desired-replicas"]
    {
        return Ok(());
    }
    let path = object_path(
        &crate::api::registry::REPLICASETS,
        rs["metadata"]["namespace"].as_str(),
        rs["metadata"]["name"].as_str().unwrap_or(""),
    );
    cx.client
        .patch(
            &path,
            &json!({"metadata": {"annotations": annotations}, "spec": {"replicas": to}}),
        )
        .await?;
    let from = replicas(rs);
    if from != to {
        let mut me = d.clone();
        me["kind"] = json!("Deployment");
        me["apiVersion"] = json!("apps/v1");
        let verb = if to > from { "up" } else { "down" };
        let message = format!(
            "Scaled {verb} replica set {} from {from} to {to}",
            rs["metadata"]["name"].as_str().unwrap_or("")
        );
        cx.events
            .record(
                &me,
                false,
                "ScalingReplicaSet",
                &message,
                "deployment-controller",
            )
            .await;
    }
    Ok(())
}

/// One pass over deployment `key`; `Some(d)` asks to look again after `d`.
async fn sync(
    cx: &Context,
    deps: &Informer,
    rss: &Informer,
    pods: &Informer,
    key: &str,
) -> Result<Option<Duration>, ClientError> {
    let Some(d) = deps.get(key) else {
        return Ok(None);
    };
    if !d["metadata"]["deletionTimestamp"].is_null() {
        return Ok(None);
    }
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let uid = d["metadata"]["uid"].clone();
    let rs_res = rss.res;
    // the replica sets this deployment controls (adopting matching orphans)
    let mut owned: Vec<Value> = Vec::new();
    for rs in rss.list(Some(&ns)) {
        match controller_of(&rs) {
            Some(r) if r["uid"] == uid => owned.push((*rs).clone()),
            None if selects(&d, &rs) && rs["metadata"]["deletionTimestamp"].is_null() => {
                let path = object_path(
                    rs_res,
                    Some(&ns),
                    rs["metadata"]["name"].as_str().unwrap_or(""),
                );
                let adopted = cx
                    .client
                    .patch(
                        &path,
                        &json!({"metadata": {"ownerReferences": [controller_ref(&d)]}}),
                    )
                    .await?;
                owned.push(adopted);
            }
            _ => {}
        }
    }
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = without_nulls(&d["spec"]["template"]);
    let max_revision = owned.iter().map(revision).max().unwrap_or(0);
    let mut new_rs = owned.iter().find(|rs| template_of(rs) == template).cloned();
    let olds: Vec<Value> = {
        let mut o: Vec<Value> = owned
            .iter()
            .filter(|rs| {
                Some(rs["metadata"]["uid"].clone())
                    != new_rs.as_ref().map(|n| n["metadata"]["uid"].clone())
            })
            .cloned()
            .collect();
        o.sort_by_key(|rs| {
            (
                revision(rs),
                rs["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        });
        o
    };
    let strategy = d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    let rolling = &d["spec"]["strategy"]["rollingUpdate"];
    let (mut surge, mut unavailable) = if strategy == "Recreate" {
        (0, 0)
    } else {
        (
            resolve(&rolling["maxSurge"], desired, true, "25%"),
            resolve(&rolling["maxUnavailable"], desired, false, "25%"),
        )
    };
    if surge == 0 && unavailable == 0 && strategy != "Recreate" {
        unavailable = 1;
    }
    surge = surge.max(0);
    let paused = d["spec"]["paused"] == true;
    let mut created_new = None;
    let change_cause = d["metadata"]["annotations"]["kubernetes.io/change-cause"].clone();
    if new_rs.is_none() && !paused {
        let collisions = d["status"]["collisionCount"].as_i64().unwrap_or(0);
        let hash = template_hash(&template, collisions);
        let name = format!("{}-{hash}", d["metadata"]["name"].as_str().unwrap_or(""));
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"][HASH] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][HASH] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        labels[HASH] = json!(hash);
        let mut annotations = json!({
            REVISION: (max_revision + 1).to_string(),
            "deployment.kubernetes.io/desired-replicas": desired.to_string(),
            "deployment.kubernetes.io/max-replicas": (desired + surge).to_string(),
        });
        if !change_cause.is_null() {
            annotations["kubernetes.io/change-cause"] = change_cause.clone();
        }
        let old_total: i64 = olds.iter().map(replicas).sum();
        let initial = if strategy == "Recreate" {
            0
        } else {
            (desired + surge - old_total).clamp(0, desired)
        };
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations,
                         "ownerReferences": [controller_ref(&d)]},
            "spec": {"replicas": initial, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                     "selector": selector, "template": rs_template},
        });
        match cx
            .client
            .create(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"), &rs)
            .await
        {
            Ok(created) => {
                created_new = Some(name);
                new_rs = Some(created);
            }
            Err(e) if e.is_already_exists() => {
                // a hash collision with a different template: count it and retry
                let mut next = (*d).clone();
                next["status"]["collisionCount"] = json!(collisions + 1);
                let path = format!(
                    "{}/status",
                    object_path(
                        deps.res,
                        Some(&ns),
                        d["metadata"]["name"].as_str().unwrap_or("")
                    )
                );
                cx.client.update(&path, &next).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    // a template that returns to an old replica set makes it the newest revision
    if let Some(rs) = &new_rs {
        if revision(rs) < max_revision || (revision(rs) == 0 && created_new.is_none()) {
            let path = object_path(
                rs_res,
                Some(&ns),
                rs["metadata"]["name"].as_str().unwrap_or(""),
            );
            let mut ann = json!({REVISION: (max_revision + 1).to_string()});
            if !change_cause.is_null() {
                ann["kubernetes.io/change-cause"] = change_cause.clone();
            }
            new_rs = Some(
                cx.client
                    .patch(&path, &json!({"metadata": {"annotations": ann}}))
                    .await?,
            );
        }
    }
    let mut again = None;
    if !paused {
        if let Some(new) = &new_rs {
            if strategy == "Recreate" {
                for old in &olds {
                    scale(cx, old, 0, &d, surge).await?;
                }
                let old_pods_left = olds.iter().any(|o| {
                    pods.controlled_by(o["metadata"]["uid"].as_str().unwrap_or(""))
                        .iter()
                        .any(|p| {
                            !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                        })
                });
                if !old_pods_left {
                    scale(cx, new, desired, &d, surge).await?;
                }
            } else {
                // one step per pass, and only on replica sets whose status has caught
                // up with their spec (their counts are what the budget is made of)
                let settled = owned.iter().all(|rs| {
                    rs["status"]["observedGeneration"].as_i64().unwrap_or(0)
                        >= rs["metadata"]["generation"].as_i64().unwrap_or(0)
                });
                let all_pods: i64 = owned.iter().map(replicas).sum::<i64>()
                    + if created_new.is_some() {
                        replicas(new)
                    } else {
                        0
                    };
                let current_new = replicas(new);
                let mut stepped = created_new.is_some();
                if !settled {
                    again = Some(Duration::from_millis(100));
                } else if current_new > desired {
                    scale(cx, new, desired, &d, surge).await?;
                    stepped = true;
                } else if current_new < desired {
                    // scale up the new one within maxSurge
                    let room = desired + surge - all_pods;
                    if room > 0 {
                        let to = current_new + room.min(desired - current_new);
                        scale(cx, new, to, &d, surge).await?;
                        stepped = true;
                    }
                }
                if settled && !stepped {
                    // scale down old ones while availability stays at desired - maxUnavailable
                    let min_available = desired - unavailable;
                    let new_unavailable =
                        (replicas(new) - status_n(new, "availableReplicas")).max(0);
                    let max_scaled_down = all_pods - min_available - new_unavailable;
                    if max_scaled_down > 0 {
                        let mut budget = max_scaled_down;
                        let mut olds_now = olds.clone();
                        // first the unhealthy replicas of old sets
                        for old in olds_now.iter_mut() {
                            if budget <= 0 {
                                break;
                            }
                            let unhealthy = replicas(old) - status_n(old, "availableReplicas");
                            if unhealthy <= 0 {
                                continue;
                            }
                            let down = unhealthy.min(budget);
                            scale(cx, old, replicas(old) - down, &d, surge).await?;
                            old["spec"]["replicas"] = json!(replicas(old) - down);
                            budget -= down;
                        }
                        let available: i64 = olds_now
                            .iter()
                            .chain(std::iter::once(new))
                            .map(|rs| status_n(rs, "availableReplicas").min(replicas(rs)))
                            .sum();
                        let mut budget = available - min_available;
                        for old in olds_now.iter() {
                            if budget <= 0 {
                                break;
                            }
                            let down = replicas(old).min(budget);
                            if down > 0 {
                                scale(cx, old, replicas(old) - down, &d, surge).await?;
                                budget -= down;
                            }
                        }
                    }
                }
            }
        }
    } else if let Some(new) = &new_rs {
        // paused: only follow replica changes, on the newest set
        if olds.iter().all(|o| replicas(o) == 0) && replicas(new) != desired {
            scale(cx, new, desired, &d, surge).await?;
        }
    }
    // old sets beyond revisionHistoryLimit go
    let limit = d["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let idle: Vec<&Value> = olds
        .iter()
        .filter(|rs| {
            replicas(rs) == 0
                && status_n(rs, "replicas") == 0
                && rs["metadata"]["deletionTimestamp"].is_null()
        })
        .collect();
    if idle.len() > limit {
        for rs in idle.iter().take(idle.len() - limit) {
            let path = object_path(
                rs_res,
                Some(&ns),
                rs["metadata"]["name"].as_str().unwrap_or(""),
            );
            cx.client.delete(&path, &json!({})).await?;
        }
    }
    // status
    let sum = |f: &str| owned.iter().map(|rs| status_n(rs, f)).sum::<i64>();
    let new_ref = new_rs.as_ref();
    let updated = new_ref.map(|n| status_n(n, "replicas")).unwrap_or(0);
    let available = sum("availableReplicas");
    let total_replicas = sum("replicas");
    let complete = new_ref.is_some_and(|n| status_n(n, "availableReplicas") == desired)
        && updated == desired
        && total_replicas == desired
        && available == desired;
    let new_name = new_ref
        .and_then(|n| n["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();
    let now = now_rfc3339();
    let old_conditions = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let condition = |t: &str, status: &str, reason: &str, message: String, touched: bool| {
        let prev = old_conditions.iter().find(|c| c["type"] == t);
        let same = prev.is_some_and(|p| p["status"] == status);
        let same_reason = prev.is_some_and(|p| {
            p["status"] == status && p["reason"] == reason && p["message"] == message
        });
        json!({
            "type": t, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": if same_reason && !touched { prev.map(|p| p["lastUpdateTime"].clone()).unwrap_or(json!(now)) } else { json!(now) },
            "lastTransitionTime": if same { prev.map(|p| p["lastTransitionTime"].clone()).unwrap_or(json!(now)) } else { json!(now) },
        })
    };
    let min_available = desired - unavailable;
    let available_cond = if available >= min_available {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            false,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            false,
        )
    };
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    let prev_progress = old_conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    let progressing = if paused {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            false,
        )
    } else if let Some(n) = &created_new {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{n}\""),
            true,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            false,
        )
    } else {
        let moved = d["status"]["updatedReplicas"].as_i64().unwrap_or(0) != updated
            || d["status"]["availableReplicas"].as_i64().unwrap_or(0) != available
            || d["status"]["replicas"].as_i64().unwrap_or(0) != total_replicas;
        let last = prev_progress
            .as_ref()
            .and_then(|p| p["lastUpdateTime"].as_str())
            .and_then(parse_rfc3339)
            .unwrap_or_else(now_secs);
        if !moved && now_secs() - last > deadline {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                false,
            )
        } else {
            if !complete {
                again = Some(Duration::from_secs(deadline.clamp(1, 600) as u64 + 1));
            }
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                moved,
            )
        }
    };
    let mut status = json!({
        "observedGeneration": d["metadata"]["generation"],
        "replicas": total_replicas,
        "updatedReplicas": updated,
        "readyReplicas": sum("readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": [available_cond, progressing],
    });
    if let Some(c) = d["status"].get("collisionCount") {
        status["collisionCount"] = c.clone();
    }
    for k in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ] {
        if status[k] == 0 {
            status.as_object_mut().map(|m| m.remove(k));
        }
    }
    let dpath = object_path(
        deps.res,
        Some(&ns),
        d["metadata"]["name"].as_str().unwrap_or(""),
    );
    // the deployment carries the revision of its newest replica set
    if let Some(n) = new_ref {
        let rev = revision(n).to_string();
        if d["metadata"]["annotations"][REVISION] != json!(rev) {
            // an update, not a patch: upstream's deployment-controller role grants
            // update on deployments, and a stale copy is a conflict to retry
            let mut next = (*d).clone();
            next["metadata"]["annotations"][REVISION] = json!(rev);
            cx.client.update(&dpath, &next).await?;
            return Ok(Some(Duration::from_millis(10)));
        }
    }
    let mut compare = d["status"].clone();
    let strip_times = |v: &mut Value| {
        for c in v["conditions"].as_array_mut().into_iter().flatten() {
            c.as_object_mut().map(|m| m.remove("lastUpdateTime"));
        }
    };
    let mut wanted = status.clone();
    strip_times(&mut compare);
    strip_times(&mut wanted);
    if compare != wanted {
        let mut next = (*d).clone();
        next["status"] = status;
        cx.client.update(&format!("{dpath}/status"), &next).await?;
    }
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_look_like_upstreams_and_change_with_the_template() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let h = template_hash(&t, 0);
        assert!(
            h.len() >= 8 && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        assert_eq!(h, template_hash(&t, 0));
        assert_ne!(h, template_hash(&t, 1));
        assert_ne!(h, template_hash(&json!({"spec": {}}), 0));
        assert_eq!(resolve(&json!("25%"), 10, true, "25%"), 3);
        assert_eq!(resolve(&json!("25%"), 10, false, "25%"), 2);
        assert_eq!(resolve(&Value::Null, 4, false, "25%"), 1);
        assert_eq!(resolve(&json!(2), 4, false, "25%"), 2);
    }
}
