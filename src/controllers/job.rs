//! The Job controller: runs pods until `completions` of them succeeded (or, without
//! `completions`, until one did), at most `parallelism` at a time, one pod per index in
//! `Indexed` mode; fails the job after more than `backoffLimit` failed pods or after
//! `activeDeadlineSeconds`, deleting what still runs; writes the status and the
//! `Complete` / `Failed` conditions that `kubectl get jobs` and `kubectl wait` read; and
//! deletes finished jobs `ttlSecondsAfterFinished` later.

use super::replicaset::{active, feed};
use super::{Context, controller_ref};
use crate::api::meta::{now_rfc3339, now_secs, parse_rfc3339};
use crate::client::ClientError;
use crate::client::watch::object_path;
use crate::runtime::informer::Informer;
use crate::runtime::queue::{Unseen, WorkQueue};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = "batch.kubernetes.io/job-completion-index";

const COMPONENT: &str = "job-controller";

pub async fn run(cx: Arc<Context>) {
    let jobs = cx.informer(&crate::api::registry::JOBS);
    let pods = cx.informer(&crate::api::registry::PODS);
    let queue = WorkQueue::default();
    feed(&cx, &jobs, &pods, &queue);
    jobs.synced().await;
    pods.synced().await;
    super::resync(&cx, &jobs, &queue, Duration::from_secs(30));
    // pods created but not yet seen by the informer, per job (as the ReplicaSet
    // controller's expectations): no new pods until they show up
    let mut pending = Unseen::default();
    loop {
        let key = queue.next().await;
        let outcome = sync(&cx, &jobs, &pods, &key, &mut pending).await;
        crate::runtime::controller::settle("job", &queue, key, outcome);
    }
}

fn condition(job: &Value, kind: &str) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// `0-2,4`: upstream's compact form of a set of indexes.
pub fn compress(indexes: &BTreeSet<i64>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn index_of(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][INDEX]
        .as_str()
        .and_then(|i| i.parse().ok())
}

async fn sync(
    cx: &Context,
    jobs: &Informer,
    pods: &Informer,
    key: &str,
    pending: &mut Unseen,
) -> Result<Option<Duration>, ClientError> {
    let Some(job) = jobs.get(key) else {
        return Ok(None);
    };
    if !job["metadata"]["deletionTimestamp"].is_null() {
        return Ok(None);
    }
    let ns = job["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    let job_path = object_path(jobs.res, Some(&ns), &name);
    let now = now_secs();
    let finished = condition(&job, "Complete") || condition(&job, "Failed");
    if finished {
        // time to live after finishing
        if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() {
            let done = job["status"]["completionTime"]
                .as_str()
                .or_else(|| {
                    job["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.last())
                        .and_then(|c| c["lastTransitionTime"].as_str())
                })
                .and_then(parse_rfc3339)
                .unwrap_or(now);
            if done + ttl <= now {
                cx.client
                    .delete(&job_path, &json!({"propagationPolicy": "Background"}))
                    .await?;
                return Ok(None);
            }
            return Ok(Some(Duration::from_secs((done + ttl - now).max(1) as u64)));
        }
        return Ok(None);
    }
    let uid = &job["metadata"]["uid"];
    let owned: Vec<Arc<Value>> = pods.controlled_by(uid.as_str().unwrap_or(""));
    let running: Vec<&Arc<Value>> = owned.iter().filter(|p| active(p)).collect();
    let indexed = job["spec"]["completionMode"] == "Indexed";
    let completions = job["spec"]["completions"].as_i64();
    let parallelism = job["spec"]["parallelism"].as_i64().unwrap_or(1).max(0);
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let suspended = job["spec"]["suspend"] == true;
    let phase = |p: &Value, ph: &str| p["status"]["phase"] == ph;
    let succeeded_pods: Vec<&Arc<Value>> = owned.iter().filter(|p| phase(p, "Succeeded")).collect();
    let failed = owned.iter().filter(|p| phase(p, "Failed")).count() as i64;
    let succeeded_indexes: BTreeSet<i64> =
        succeeded_pods.iter().filter_map(|p| index_of(p)).collect();
    let succeeded = if indexed {
        succeeded_indexes.len() as i64
    } else {
        (succeeded_pods.len() as i64).max(job["status"]["succeeded"].as_i64().unwrap_or(0))
    };
    let failed = failed.max(job["status"]["failed"].as_i64().unwrap_or(0));
    let start_time = job["status"]["startTime"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(now_rfc3339);
    // finished?
    let complete = match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && running.is_empty(),
    };
    let mut fail_reason = None;
    if !complete {
        if failed > backoff_limit {
            fail_reason = Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if let Some(deadline) = job["spec"]["activeDeadlineSeconds"].as_i64() {
            if parse_rfc3339(&start_time).is_some_and(|s| s + deadline <= now) {
                fail_reason = Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ));
            }
        }
    }
    let mut again = None;
    if complete || fail_reason.is_some() || suspended {
        for p in &running {
            let path = object_path(
                pods.res,
                Some(&ns),
                p["metadata"]["name"].as_str().unwrap_or(""),
            );
            cx.client.delete(&path, &json!({})).await?;
            let pod_name = p["metadata"]["name"].as_str().unwrap_or("");
            cx.events.emit(
                &job,
                false,
                "SuccessfulDelete",
                format!("Deleted pod: {pod_name}"),
                COMPONENT,
            );
        }
    } else {
        // how many should run now
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let seen: HashSet<&str> = owned
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        let waiting = pending.waiting(key, |n| seen.contains(n));
        let missing = if waiting {
            again = Some(Duration::from_millis(200));
            0
        } else {
            want - running.len() as i64
        };
        if missing > 0 {
            let taken: BTreeSet<i64> = running
                .iter()
                .filter_map(|p| index_of(p))
                .chain(succeeded_indexes.iter().copied())
                .collect();
            let free_indexes: Vec<i64> = (0..completions.unwrap_or(0))
                .filter(|i| !taken.contains(i))
                .collect();
            for n in 0..missing {
                let index = if indexed {
                    match free_indexes.get(n as usize) {
                        Some(i) => Some(*i),
                        None => break,
                    }
                } else {
                    None
                };
                let pod = pod_for(&job, &ns, &name, index);
                let made = cx
                    .client
                    .create(&format!("/api/v1/namespaces/{ns}/pods"), &pod)
                    .await?;
                if let Some(n) = made["metadata"]["name"].as_str() {
                    pending.created(key, n);
                    cx.events.emit(
                        &job,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {n}"),
                        COMPONENT,
                    );
                }
            }
        }
        if let Some(deadline) = job["spec"]["activeDeadlineSeconds"].as_i64() {
            let left = parse_rfc3339(&start_time)
                .map(|s| s + deadline - now)
                .unwrap_or(deadline);
            again = again.or(Some(Duration::from_secs(left.max(1) as u64)));
        }
    }
    // status
    let ready = running
        .iter()
        .filter(|p| super::replicaset::ready(p))
        .count();
    let now_text = now_rfc3339();
    let mut conditions: Vec<Value> = job["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut add = |t: &str, reason: Option<&str>, message: Option<&str>| {
        conditions.push(json!({
            "type": t, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now_text, "lastTransitionTime": now_text,
        }));
    };
    let mut status = json!({
        "startTime": start_time,
        "active": running.len(),
        "ready": ready,
        "succeeded": succeeded,
        "failed": failed,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if complete && running.is_empty() {
        add(
            "SuccessCriteriaMet",
            Some("CompletionsReached"),
            Some("Reached expected number of succeeded pods"),
        );
        add(
            "Complete",
            Some("CompletionsReached"),
            Some("Reached expected number of succeeded pods"),
        );
        status["completionTime"] = json!(now_text);
        cx.events
            .emit(&job, false, "Completed", "Job completed".into(), COMPONENT);
    } else if let Some((reason, message)) = fail_reason {
        if running.is_empty() {
            add("FailureTarget", Some(reason), Some(message));
            add("Failed", Some(reason), Some(message));
            cx.events
                .emit(&job, true, reason, message.into(), COMPONENT);
        }
    } else if suspended && !condition(&job, "Suspended") {
        add("Suspended", Some("JobSuspended"), Some("Job suspended"));
    }
    status["conditions"] = json!(conditions);
    if indexed {
        status["completedIndexes"] = json!(compress(&succeeded_indexes));
    }
    for k in ["active", "succeeded", "failed", "terminating"] {
        if status[k] == 0 {
            status.as_object_mut().map(|m| m.remove(k));
        }
    }
    if status["conditions"].as_array().is_some_and(Vec::is_empty) {
        status.as_object_mut().map(|m| m.remove("conditions"));
    }
    let mut current = job["status"].clone();
    let mut wanted = status.clone();
    for v in [&mut current, &mut wanted] {
        v.as_object_mut().map(|m| m.remove("ready"));
    }
    if current != wanted || job["status"]["ready"] != status["ready"] {
        let mut next = (*job).clone();
        next["status"] = status;
        cx.client
            .update(&format!("{job_path}/status"), &next)
            .await?;
    }
    Ok(again)
}

/// A pod for `job` (for completion `index` in Indexed mode).
fn pod_for(job: &Value, ns: &str, name: &str, index: Option<i64>) -> Value {
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    let mut annotations = template["metadata"]["annotations"].clone();
    let mut spec = template["spec"].clone();
    let generate = match index {
        Some(i) => {
            labels[INDEX] = json!(i.to_string());
            annotations[INDEX] = json!(i.to_string());
            for c in spec["containers"].as_array_mut().into_iter().flatten() {
                let mut env = c["env"].as_array().cloned().unwrap_or_default();
                env.push(json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{INDEX}']")}}}));
                c["env"] = json!(env);
            }
            spec["hostname"] = json!(format!("{name}-{i}"));
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": generate, "namespace": ns, "ownerReferences": [controller_ref(job)]},
        "spec": spec,
    });
    if labels.is_object() {
        pod["metadata"]["labels"] = labels;
    }
    if annotations.is_object() {
        pod["metadata"]["annotations"] = annotations;
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_compressed_as_upstream() {
        let set: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress(&set), "0-2,4,6-7");
        assert_eq!(compress(&BTreeSet::new()), "");
    }
}
