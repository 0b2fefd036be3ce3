//! Control loops against the in-process harness (`server::harness`): the real API
//! server over the memory store, the real loops, the test as the kubelet, paused time.
#![cfg(test)]

use crate::api::registry;
use crate::server::harness::Harness;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const NS: &str = "/api/v1/namespaces/default";

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn live(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect()
}

/// Plays the kubelet: every pod without a phase becomes `phase` (Running and Ready, or
/// Succeeded), until `stop`.
fn kubelet(h: &Harness, phase: &'static str, stop: Arc<AtomicBool>) {
    let client = h.client.clone();
    h.cx.spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let pods = client.get(&format!("{NS}/pods")).await.expect("pods");
            for p in pods["items"].as_array().into_iter().flatten() {
                if p["status"]["phase"].is_null() || p["status"]["phase"] == "Pending" {
                    crate::server::harness::set_pod_phase(&client, p, phase).await;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_replaces_every_pod_without_going_below_the_replicas() {
    let h = Harness::new().await;
    h.run(|cx| Box::pin(super::replicaset::run(cx, &registry::REPLICASETS)));
    h.run(|cx| Box::pin(super::deployment::run(cx)));
    kubelet(&h, "Running", Arc::new(AtomicBool::new(false)));
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "web:1"}]}}}});
    let path = "/apis/apps/v1/namespaces/default/deployments";
    h.client.create(path, &deployment).await.unwrap();
    let available = |image: &'static str| {
        let h = &h;
        move || async move {
            let d = h.client.get(&format!("{path}/web")).await.ok()?;
            let pods = h.list(&format!("{NS}/pods")).await;
            let all_new = live(&pods).len() == 3
                && live(&pods)
                    .iter()
                    .all(|p| p["spec"]["containers"][0]["image"] == image && ready(p));
            (d["status"]["updatedReplicas"] == 3
                && d["status"]["availableReplicas"] == 3
                && d["status"]["observedGeneration"] == d["metadata"]["generation"]
                && all_new)
                .then_some(())
        }
    };
    h.until("three available pods of web:1", available("web:1"))
        .await;

    h.client
        .patch(
            &format!("{path}/web"),
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}),
        )
        .await
        .unwrap();
    // never fewer than three ready pods, never more than four pods (maxSurge 1)
    let watched = h
        .until("the rollout to web:2, within its budget", || async {
            let pods = h.list(&format!("{NS}/pods")).await;
            let up = live(&pods).iter().filter(|p| ready(p)).count();
            assert!(up >= 3, "only {up} ready pods during the rollout");
            assert!(
                live(&pods).len() <= 4,
                "{} pods: more than maxSurge allows",
                live(&pods).len()
            );
            available("web:2")().await
        })
        .await;
    let () = watched;
    let sets = h.list("/apis/apps/v1/namespaces/default/replicasets").await;
    let mut replicas: Vec<(String, i64)> = sets
        .iter()
        .map(|s| {
            let image = s["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("");
            (
                image.to_string(),
                s["spec"]["replicas"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    replicas.sort();
    assert_eq!(
        replicas,
        [("web:1".to_string(), 0), ("web:2".to_string(), 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_its_pods_one_at_a_time_until_it_completes() {
    let h = Harness::new().await;
    h.run(|cx| Box::pin(super::job::run(cx)));
    kubelet(&h, "Succeeded", Arc::new(AtomicBool::new(false)));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "twice"},
        "spec": {"completions": 2, "parallelism": 1,
                 "template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}});
    let path = "/apis/batch/v1/namespaces/default/jobs";
    h.client.create(path, &job).await.unwrap();
    let status = h
        .until("the job completes", || async {
            let pods = h.list(&format!("{NS}/pods")).await;
            let running = pods
                .iter()
                .filter(|p| p["status"]["phase"] != "Succeeded")
                .count();
            assert!(running <= 1, "{running} pods at once with parallelism 1");
            let j = h.client.get(&format!("{path}/twice")).await.ok()?;
            let complete = j["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Complete" && c["status"] == "True");
            complete.then(|| j["status"].clone())
        })
        .await;
    assert_eq!(status["succeeded"], 2);
    assert!(status["completionTime"].is_string());
    let pods = h.list(&format!("{NS}/pods")).await;
    assert_eq!(pods.len(), 2, "no pod beyond the completions");
}

/// The kinds the collector follows (not yet every kind: see gc.rs).
#[tokio::test(start_paused = true)]
async fn dependents_go_with_their_owner_unless_orphaned() {
    let h = Harness::new().await;
    h.run(|cx| Box::pin(super::gc::run(cx)));
    let sets = "/apis/apps/v1/namespaces/default/replicasets";
    let pods = format!("{NS}/pods");
    let set = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"set": name}},
                     "template": {"metadata": {"labels": {"set": name}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    };
    let pod = |name: &str, owner: &Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]},
            "spec": {"containers": [{"name": "c", "image": "x"}]}})
    };
    let owner = h.client.create(sets, &set("owner")).await.unwrap();
    for d in ["a", "b"] {
        h.client.create(&pods, &pod(d, &owner)).await.unwrap();
    }
    let keeper = h.client.create(sets, &set("keeper")).await.unwrap();
    h.client
        .create(&pods, &pod("orphan", &keeper))
        .await
        .unwrap();

    h.client
        .delete(
            &format!("{sets}/owner"),
            &json!({"propagationPolicy": "Background"}),
        )
        .await
        .unwrap();
    h.client
        .delete(
            &format!("{sets}/keeper"),
            &json!({"propagationPolicy": "Orphan"}),
        )
        .await
        .unwrap();
    h.until(
        "the owner's dependents collected, the orphan released, both owners gone",
        || async {
            let left = h.list(&pods).await;
            let names: Vec<&str> = left
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str())
                .collect();
            let released = left.iter().any(|p| {
                p["metadata"]["name"] == "orphan" && p["metadata"]["ownerReferences"].is_null()
            });
            let owners = h.list(sets).await;
            (names == ["orphan"] && released && owners.is_empty()).then_some(())
        },
    )
    .await;
}
