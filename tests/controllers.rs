//! Control loops against the real binary: simulated nodes (`skua sim`), the
//! scheduler, and the ReplicaSet, Deployment and garbage-collector controllers, driven
//! with kubectl 1.27 and 1.33 as people drive them.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{SimNodes, SkuaServer, admin_request, eventually, kubectl_run as k};
use serde_json::Value;

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1
        resources: {requests: {cpu: 100m, memory: 64Mi}}
";

fn pods(server: &SkuaServer, selector: &str) -> Vec<Value> {
    let (code, body) = admin_request(
        server,
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
        None,
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `kubectl apply -f` of `yaml` (written to `name` in the server's directory); it
/// must succeed.
fn apply(server: &SkuaServer, version: &str, name: &str, yaml: &str) {
    let file = server.dir.path().join(name);
    std::fs::write(&file, yaml).unwrap();
    let (ok, out) = k(server, version, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "kubectl {version} apply {name}: {out}");
}

/// `kubectl rollout status`; on failure the message carries what the objects say.
fn rollout(server: &SkuaServer, version: &str) {
    let (ok, out) = k(
        server,
        version,
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    if !ok {
        let (_, state) = k(server, version, &["get", "deploy,rs,pods", "-o", "yaml"]);
        panic!("kubectl {version}: rollout did not finish: {out}\n{state}");
    }
}

fn replica_sets(server: &SkuaServer) -> Vec<Value> {
    let (_, body) = admin_request(
        server,
        "GET",
        "/apis/apps/v1/namespaces/default/replicasets",
        None,
    );
    serde_json::from_str::<Value>(&body).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn deployments_roll_out_update_within_their_budget_undo_and_scale() {
    for version in ["1.27", "1.33"] {
        let server = SkuaServer::start();
        let _nodes = SimNodes::start(&server, 3, &[]);
        let file = server.dir.path().join("web.yaml");
        std::fs::write(&file, WEB).unwrap();
        let f = file.to_str().unwrap();
        let (ok, out) = k(&server, version, &["apply", "-f", f]);
        assert!(ok, "{out}");
        let (ok, out) = k(
            &server,
            version,
            &["rollout", "status", "deployment/web", "--timeout=30s"],
        );
        assert!(
            ok && out.contains("successfully rolled out"),
            "kubectl {version}: {out}"
        );
        let running = pods(&server, "app=web");
        assert_eq!(running.iter().filter(|p| ready(p)).count(), 4);
        assert!(
            running
                .iter()
                .all(|p| p["spec"]["nodeName"].as_str().unwrap().starts_with("sim-"))
        );
        // a new image rolls out; at every moment at least 3 pods serve and at most 5 exist
        let (ok, out) = k(
            &server,
            version,
            &["set", "image", "deployment/web", "web=nginx:2"],
        );
        assert!(ok, "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let now = pods(&server, "app=web");
            let live: Vec<&Value> = now
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let serving = live.iter().filter(|p| ready(p)).count();
            assert!(
                serving >= 3,
                "kubectl {version}: maxUnavailable broken: {serving} ready of {}",
                live.len()
            );
            assert!(
                live.len() <= 5,
                "kubectl {version}: maxSurge broken: {} pods",
                live.len()
            );
            let updated = live
                .iter()
                .filter(|p| p["spec"]["containers"][0]["image"] == "nginx:2" && ready(p))
                .count();
            if updated == 4 && live.len() == 4 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rollout did not finish: {now:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        rollout(&server, version);
        let (_, out) = k(&server, version, &["describe", "deployment", "web"]);
        assert!(
            out.contains("ScalingReplicaSet") && out.contains("Scaled up replica set web-"),
            "kubectl {version} describe shows the controller's events: {out}"
        );
        let (ok, out) = k(&server, version, &["rollout", "history", "deployment/web"]);
        assert!(ok && out.contains("1 ") && out.contains("2 "), "{out}");
        // undo returns to the first template, on the first replica set
        let (ok, out) = k(&server, version, &["rollout", "undo", "deployment/web"]);
        assert!(ok && out.contains("rolled back"), "{out}");
        rollout(&server, version);
        let sets = replica_sets(&server);
        assert_eq!(sets.len(), 2, "undo reuses the old replica set: {sets:?}");
        let back = sets
            .iter()
            .find(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1")
            .unwrap();
        assert_eq!(back["spec"]["replicas"], 4);
        assert_eq!(
            back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );
        let (_, out) = k(&server, version, &["get", "deployment", "web"]);
        assert!(out.lines().nth(1).unwrap().contains("4/4"), "{out}");
        // scale down and up
        for n in [2, 5] {
            let (ok, out) = k(
                &server,
                version,
                &["scale", "deployment/web", &format!("--replicas={n}")],
            );
            assert!(ok, "{out}");
            let mut last = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let p = pods(&server, "app=web");
                if p.iter().filter(|p| ready(p)).count() == n && p.len() == n {
                    break;
                }
                last = p;
                assert!(
                    std::time::Instant::now() < deadline,
                    "kubectl {version}: not scaled to {n}: {:?}\n{}",
                    last.iter()
                        .map(|p| (
                            p["metadata"]["name"].clone(),
                            p["status"]["phase"].clone(),
                            p["metadata"]["deletionTimestamp"].clone(),
                            p["spec"]["nodeName"].clone()
                        ))
                        .collect::<Vec<_>>(),
                    k(&server, version, &["get", "rs,deploy"]).1
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = last;
        }
        // deleting the deployment takes its replica sets and pods along
        let (ok, out) = k(&server, version, &["delete", "deployment", "web"]);
        assert!(ok, "{out}");
        eventually(30, "garbage collection", || {
            (replica_sets(&server).is_empty() && pods(&server, "app=web").is_empty()).then_some(())
        });
    }
}

#[test]
fn the_scheduler_explains_unschedulable_pods_and_honours_taints() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 3, &["--cpu", "2"]);
    // too big for every node
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "run",
            "huge",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"containers":[{"name":"huge","image":"busybox","resources":{"requests":{"cpu":"3"}}}]}}"#,
        ],
    );
    assert!(ok, "{out}");
    let message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    eventually(20, "FailedScheduling", || {
        let (_, out) = k(&server, "1.33", &["describe", "pod", "huge"]);
        (out.contains("FailedScheduling") && out.contains(message)).then_some(())
    });
    let (_, body) = admin_request(&server, "GET", "/api/v1/namespaces/default/pods/huge", None);
    let pod: Value = serde_json::from_str(&body).unwrap();
    let cond = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    // taints steer pods: two nodes tainted, every replica lands on the third
    for node in ["sim-0", "sim-1"] {
        let (ok, out) = k(
            &server,
            "1.27",
            &["taint", "node", node, "dedicated=db:NoSchedule"],
        );
        assert!(ok, "{out}");
    }
    let (ok, out) = k(
        &server,
        "1.27",
        &[
            "create",
            "deployment",
            "spread",
            "--image=nginx",
            "--replicas=3",
        ],
    );
    assert!(ok, "{out}");
    let placed = eventually(30, "pods scheduled", || {
        let p = pods(&server, "app=spread");
        (p.len() == 3 && p.iter().all(ready)).then_some(p)
    });
    assert!(
        placed.iter().all(|p| p["spec"]["nodeName"] == "sim-2"),
        "{placed:?}"
    );
    // a cordoned node takes nothing new; the pod that fits nowhere is explained again
    let (ok, out) = k(&server, "1.27", &["cordon", "sim-2"]);
    assert!(ok, "{out}");
    let (ok, out) = k(&server, "1.27", &["run", "late", "--image=busybox"]);
    assert!(ok, "{out}");
    eventually(20, "the cordon explained", || {
        let (_, out) = k(
            &server,
            "1.27",
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=late",
            ],
        );
        (out.contains("1 node(s) were unschedulable")
            && out.contains("2 node(s) had untolerated taint {dedicated: db}"))
        .then_some(())
    });
}

#[test]
fn a_rollout_interrupted_by_kill_9_completes_after_restart() {
    let mut server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 3, &[]);
    apply(
        &server,
        "1.33",
        "web.yaml",
        &WEB.replace("replicas: 4", "replicas: 10"),
    );
    let (ok, out) = k(
        &server,
        "1.33",
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &["set", "image", "deployment/web", "web=nginx:2"],
    );
    assert!(ok, "{out}");
    // in the middle of the rollout
    eventually(20, "the rollout to start", || {
        pods(&server, "app=web")
            .iter()
            .any(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
            .then_some(())
    });
    server.crash_restart();
    let (ok, out) = k(
        &server,
        "1.33",
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    if !ok {
        let (_, state) = k(&server, "1.33", &["get", "deploy,rs,pods", "-o", "wide"]);
        panic!("after the restart: {out}\n{state}");
    }
    let done = eventually(30, "exactly 10 new pods", || {
        let p = pods(&server, "app=web");
        (p.len() == 10).then_some(p)
    });
    assert!(
        done.iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2" && ready(p))
    );
    let names: std::collections::HashSet<&str> = done
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10, "no duplicates");
}

const JOBS: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: idx}
spec:
  completions: 5
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    metadata: {annotations: {sim.skua.io/exit-code: \"1\"}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
";

#[test]
fn jobs_complete_in_parallel_or_fail_after_their_backoff_limit() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 2, &["--job-seconds", "1"]);
    apply(&server, "1.27", "jobs.yaml", JOBS);
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "job",
            "one",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(ok, "{out}");
    // at most `parallelism` pods of the indexed job at once, until all five indexes succeeded
    let mut peak = 0;
    let done = eventually(60, "the indexed job to complete", || {
        let (_, body) = admin_request(
            &server,
            "GET",
            "/apis/batch/v1/namespaces/default/jobs/idx",
            None,
        );
        let job: Value = serde_json::from_str(&body).unwrap();
        peak = peak.max(job["status"]["active"].as_i64().unwrap_or(0));
        job["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            })
            .then_some(job)
    });
    assert!(peak <= 2, "parallelism 2 was exceeded: {peak}");
    assert_eq!(done["status"]["completedIndexes"], "0-4");
    assert_eq!(done["status"]["succeeded"], 5);
    // the job controller's events, as `kubectl describe` shows them
    eventually(10, "the job's events", || {
        let (_, out) = k(&server, "1.33", &["describe", "job", "idx"]);
        let created = out
            .lines()
            .filter(|l| l.contains("SuccessfulCreate") && l.contains("Created pod: idx-"))
            .count();
        (created >= 1 && out.contains("Completed") && out.contains("Job completed")).then_some(())
    });
    let (_, out) = k(
        &server,
        "1.27",
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Job",
            "-o",
            "jsonpath={.items[*].source.component}",
        ],
    );
    assert!(
        out.split_whitespace().all(|c| c == "job-controller") && !out.is_empty(),
        "{out}"
    );
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "wait",
            "--for=condition=complete",
            "job/one",
            "--timeout=30s",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &["wait", "--for=condition=failed", "job/bad", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    let (_, out) = k(&server, "1.33", &["get", "jobs"]);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("idx")[1..3],
        ["Complete".to_string(), "5/5".to_string()],
        "{out}"
    );
    assert_eq!(
        row("bad")[1..3],
        ["Failed".to_string(), "0/1".to_string()],
        "{out}"
    );
    let (_, body) = admin_request(
        &server,
        "GET",
        "/apis/batch/v1/namespaces/default/jobs/bad",
        None,
    );
    let bad: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        bad["status"]["failed"], 2,
        "backoffLimit 1 allows one retry"
    );
    let failed = bad["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    // indexed pods carry their index
    let pods = pods(&server, "job-name=idx");
    let mut indexes: Vec<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2", "3", "4"]);
}

#[test]
fn namespaces_get_a_default_service_account_and_nodes_their_own_pod_range() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 3, &[]);
    let (ok, out) = k(&server, "1.27", &["create", "namespace", "team"]);
    assert!(ok, "{out}");
    eventually(20, "the default service account", || {
        let (ok, _) = k(
            &server,
            "1.27",
            &["-n", "team", "get", "serviceaccount", "default"],
        );
        ok.then_some(())
    });
    // deleted, it comes back
    let (ok, out) = k(
        &server,
        "1.27",
        &["-n", "team", "delete", "serviceaccount", "default"],
    );
    assert!(ok, "{out}");
    eventually(20, "the default service account to return", || {
        let (ok, _) = k(
            &server,
            "1.27",
            &["-n", "team", "get", "serviceaccount", "default"],
        );
        ok.then_some(())
    });
    let cidrs = eventually(20, "pod ranges", || {
        let (_, out) = k(
            &server,
            "1.33",
            &["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"],
        );
        let c: Vec<String> = out.split_whitespace().map(String::from).collect();
        (c.len() == 3).then_some(c)
    });
    let unique: std::collections::HashSet<&String> = cidrs.iter().collect();
    assert_eq!(unique.len(), 3, "{cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.42.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );
}

#[test]
fn a_node_that_stops_renewing_is_tainted_and_its_pods_move() {
    let server = SkuaServer::start_with_config("node-monitor-grace-period: 3s\n");
    let mut doomed = SimNodes::start(&server, 1, &["--name-prefix", "doomed-"]);
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
    );
    assert!(ok, "{out}");
    // both replicas land on the only node; they tolerate its loss for 2 s
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/template/spec/tolerations","value":[{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":2}]}]"#,
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    let _healthy = SimNodes::start(&server, 3, &["--name-prefix", "healthy-"]);
    doomed.stop();
    let node = eventually(30, "doomed-0 to be unreachable", || {
        let (_, body) = admin_request(&server, "GET", "/api/v1/nodes/doomed-0", None);
        let node: Value = serde_json::from_str(&body).unwrap();
        let taints = node["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (taints
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"))
        .then_some(node)
    });
    let ready_condition = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            ready_condition["status"].as_str(),
            ready_condition["reason"].as_str()
        ),
        (Some("Unknown"), Some("NodeStatusUnknown"))
    );
    let (_, out) = k(&server, "1.27", &["get", "node", "doomed-0"]);
    assert!(out.contains("NotReady"), "{out}");
    // after their toleration the pods are evicted and replaced on healthy nodes
    eventually(60, "replacements on healthy nodes", || {
        let live: Vec<Value> = pods(&server, "app=web")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (live.len() == 2
            && live.iter().all(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("healthy-"))
                    && ready(p)
            }))
        .then_some(())
    });
    let (_, out) = k(
        &server,
        "1.27",
        &[
            "get",
            "events",
            "--field-selector",
            "reason=TaintManagerEviction",
        ],
    );
    assert!(
        out.contains("Marking for deletion Pod default/web-"),
        "{out}"
    );
    // the evicted pods wait for a kubelet that is gone; removing the node lets them go
    assert!(
        pods(&server, "app=web")
            .iter()
            .any(|p| p["spec"]["nodeName"] == "doomed-0"),
        "the evicted pods are still terminating on the lost node"
    );
    let (ok, out) = k(&server, "1.33", &["delete", "node", "doomed-0"]);
    assert!(ok, "{out}");
    eventually(30, "the orphaned pods to be collected", || {
        (!pods(&server, "app=web")
            .iter()
            .any(|p| p["spec"]["nodeName"] == "doomed-0"))
        .then_some(())
    });
}

#[test]
fn kubectl_drain_evicts_within_the_disruption_budget() {
    let server = SkuaServer::start();
    let _first = SimNodes::start(&server, 1, &["--name-prefix", "old-"]);
    for args in [
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ][..],
        &[
            "create",
            "pdb",
            "web",
            "--selector=app=web",
            "--min-available=1",
        ],
    ] {
        let (ok, out) = k(&server, "1.33", args);
        assert!(ok, "{out}");
    }
    let (ok, out) = k(
        &server,
        "1.33",
        &["rollout", "status", "deployment/web", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    eventually(20, "the budget to allow one disruption", || {
        let (_, out) = k(&server, "1.27", &["get", "pdb", "web", "--no-headers"]);
        (out.split_whitespace().nth(3) == Some("1")).then_some(())
    });
    let _second = SimNodes::start(&server, 2, &["--name-prefix", "new-"]);
    // the second eviction waits (429) until the first pod's replacement is ready
    let (ok, out) = k(&server, "1.33", &["drain", "old-0", "--timeout=60s"]);
    assert!(ok && out.contains("node/old-0 drained"), "{out}");
    assert!(
        out.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "the budget held the second eviction back: {out}"
    );
    let live = eventually(30, "both replicas on the new nodes", || {
        let p: Vec<Value> = pods(&server, "app=web")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (p.len() == 2
            && p.iter().all(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("new-"))
                    && ready(p)
            }))
        .then_some(p)
    });
    assert_eq!(live.len(), 2);
    let (_, out) = k(&server, "1.27", &["get", "node", "old-0"]);
    assert!(out.contains("SchedulingDisabled"), "{out}");
}

const AGENT: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: a, image: busybox:1}]
";

#[test]
fn a_daemon_set_covers_every_node_follows_new_ones_and_rolls() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 2, &[]);
    let (ok, out) = k(&server, "1.27", &["cordon", "sim-1"]);
    assert!(ok, "{out}");
    apply(&server, "1.33", "agent.yaml", AGENT);
    let on_nodes = |n: usize, image: &str| {
        eventually(30, "one daemon pod per node", || {
            let p: Vec<Value> = pods(&server, "app=agent")
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let nodes: std::collections::HashSet<&str> = p
                .iter()
                .filter_map(|p| p["spec"]["nodeName"].as_str())
                .collect();
            (p.len() == n
                && nodes.len() == n
                && p.iter()
                    .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == image))
            .then_some(())
        })
    };
    // a cordoned node still runs its daemon pod (daemon pods tolerate it)
    on_nodes(2, "busybox:1");
    let _more = SimNodes::start(&server, 1, &["--name-prefix", "late-"]);
    on_nodes(3, "busybox:1");
    let (ok, out) = k(
        &server,
        "1.33",
        &["set", "image", "daemonset/agent", "a=busybox:2"],
    );
    assert!(ok, "{out}");
    on_nodes(3, "busybox:2");
    let (ok, out) = k(
        &server,
        "1.33",
        &["rollout", "status", "daemonset/agent", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    let (_, out) = k(
        &server,
        "1.27",
        &["get", "daemonset", "agent", "--no-headers"],
    );
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        cols[1..6],
        ["3", "3", "3", "3", "3"],
        "DESIRED CURRENT READY UP-TO-DATE AVAILABLE: {out}"
    );
    // the template history, as ControllerRevisions: history lists both, undo goes back
    // to busybox:1 and makes that revision the newest (3)
    history_and_undo(&server, "daemonset/agent", "a", "busybox:1");
    on_nodes(3, "busybox:1");
}

/// `kubectl rollout history` shows revisions 1 and 2 of `what`; `--revision=1` shows
/// `first` as the image of container `c`; `rollout undo` brings `first` back as
/// revision 3 (on kubectl 1.27 and 1.33).
fn history_and_undo(server: &SkuaServer, what: &str, c: &str, first: &str) {
    let (ok, out) = k(server, "1.27", &["rollout", "history", what]);
    assert!(ok, "{out}");
    let revisions: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{out}");
    let (ok, out) = k(
        server,
        "1.33",
        &["rollout", "history", what, "--revision=1"],
    );
    assert!(ok && out.contains(first), "{out}");
    let (ok, out) = k(server, "1.33", &["rollout", "undo", what]);
    assert!(ok && out.contains("rolled back"), "{out}");
    let (ok, out) = k(server, "1.27", &["get", what, "-o", "json"]);
    assert!(ok, "{out}");
    let obj: Value = serde_json::from_str(&out).unwrap();
    let image = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == c)
        .map(|x| x["image"].clone());
    assert_eq!(image, Some(Value::from(first)), "{out}");
    eventually(30, "revision 3 is the restored template", || {
        let (_, out) = k(server, "1.33", &["rollout", "history", what]);
        let revisions: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        (revisions == ["2", "3"]).then_some(())
    });
    // nothing to undo to when the target is the current template
    let (ok, out) = k(
        server,
        "1.33",
        &["rollout", "undo", what, "--to-revision=3"],
    );
    assert!(ok && out.contains("skipped rollback"), "{out}");
}

#[test]
fn services_get_addresses_and_ports_once_and_endpoints_follow_pods() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 2, &[]);
    // the kubernetes service: the first address, pointing at this API server
    let (_, body) = admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/default/services/kubernetes",
        None,
    );
    let svc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    let (_, body) = admin_request(
        &server,
        "GET",
        "/api/v1/namespaces/default/endpoints/kubernetes",
        None,
    );
    let ep: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], server.port);
    // explicit addresses and node ports are honoured once, then refused in upstream's words
    for (args, ok_wanted, text) in [
        (
            vec![
                "create",
                "service",
                "clusterip",
                "a",
                "--tcp=80",
                "--clusterip=10.43.0.50",
            ],
            true,
            "",
        ),
        (
            vec![
                "create",
                "service",
                "clusterip",
                "b",
                "--tcp=80",
                "--clusterip=10.43.0.50",
            ],
            false,
            "spec.clusterIPs: Invalid value: []string{\"10.43.0.50\"}: failed to allocate IP 10.43.0.50: provided IP is already allocated",
        ),
        (
            vec![
                "create",
                "service",
                "nodeport",
                "c",
                "--tcp=80",
                "--node-port=30080",
            ],
            true,
            "",
        ),
        (
            vec![
                "create",
                "service",
                "nodeport",
                "d",
                "--tcp=80",
                "--node-port=30080",
            ],
            false,
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
        ),
        (
            vec![
                "create",
                "service",
                "nodeport",
                "e",
                "--tcp=80",
                "--node-port=20000",
            ],
            false,
            "provided port is not in the valid range. The range of valid ports is 30000-32767",
        ),
    ] {
        let (ok, out) = k(
            &server,
            "1.33",
            &args.iter().map(|s| &**s).collect::<Vec<_>>(),
        );
        assert_eq!(ok, ok_wanted, "{args:?}: {out}");
        assert!(out.contains(text), "{args:?}: {out}");
    }
    // released on delete
    let (ok, out) = k(&server, "1.33", &["delete", "service", "a", "c"]);
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "service",
            "nodeport",
            "again",
            "--tcp=80",
            "--node-port=30080",
        ],
    );
    assert!(ok, "{out}");
    // dynamic ones never collide
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let (ok, out) = k(
            &server,
            "1.27",
            &[
                "create",
                "service",
                "nodeport",
                &format!("s{i}"),
                "--tcp=80",
            ],
        );
        assert!(ok, "{out}");
        let (_, body) = admin_request(
            &server,
            "GET",
            &format!("/api/v1/namespaces/default/services/s{i}"),
            None,
        );
        let s: Value = serde_json::from_str(&body).unwrap();
        assert!(seen.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
        let port = s["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        assert!((30000..=32767).contains(&port) && seen.insert(port.to_string()));
    }
    // endpoints follow ready pods
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=3",
            "--port=80",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "expose",
            "deployment",
            "web",
            "--port=8080",
            "--target-port=80",
        ],
    );
    assert!(ok, "{out}");
    let count = |server: &SkuaServer| {
        let (_, body) = admin_request(
            server,
            "GET",
            "/api/v1/namespaces/default/endpoints/web",
            None,
        );
        let ep: Value = serde_json::from_str(&body).unwrap_or_default();
        ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len)
    };
    eventually(30, "three endpoints", || {
        (count(&server) == 3).then_some(())
    });
    let (_, body) = admin_request(
        &server,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name=web",
        None,
    );
    let slices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        slices["items"][0]["endpoints"]
            .as_array()
            .map_or(0, Vec::len),
        3
    );
    assert_eq!(slices["items"][0]["ports"][0]["port"], 80);
    let (ok, out) = k(
        &server,
        "1.33",
        &["scale", "deployment", "web", "--replicas=1"],
    );
    assert!(ok, "{out}");
    eventually(30, "one endpoint", || (count(&server) == 1).then_some(()));
    let (_, out) = k(&server, "1.27", &["get", "endpoints", "web"]);
    assert!(out.contains(":80"), "{out}");
}

const DB: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 4
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:1}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
";

#[test]
fn a_stateful_set_starts_its_pods_strictly_in_order_and_keeps_their_claims() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 2, &[]);
    apply(&server, "1.33", "db.yaml", DB);
    // at every observation the pods are db-0..db-k, all but the newest ready
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = pods(&server, "app=db");
        let mut ordinals: Vec<i64> = now
            .iter()
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("db-")
                    .parse()
                    .unwrap()
            })
            .collect();
        ordinals.sort();
        assert_eq!(
            ordinals,
            (0..ordinals.len() as i64).collect::<Vec<_>>(),
            "names are db-0..db-N"
        );
        for p in &now {
            let i: i64 = p["metadata"]["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("db-")
                .parse()
                .unwrap();
            if i + 1 < ordinals.len() as i64 {
                assert!(ready(p), "db-{} exists while db-{i} is not ready", i + 1);
            }
            assert_eq!(p["spec"]["hostname"], p["metadata"]["name"]);
            assert_eq!(p["spec"]["subdomain"], "db");
        }
        if now.len() == 4 && now.iter().all(ready) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the set did not come up: {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, out) = k(
        &server,
        "1.27",
        &["rollout", "status", "statefulset/db", "--timeout=30s"],
    );
    assert!(ok, "{out}");
    // scale down: highest ordinals go, the claims stay
    let (ok, out) = k(
        &server,
        "1.27",
        &["scale", "statefulset/db", "--replicas=2"],
    );
    assert!(ok, "{out}");
    eventually(30, "db-0 and db-1 only", || {
        let mut names: Vec<String> = pods(&server, "app=db")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        (names == ["db-0", "db-1"]).then_some(())
    });
    let (_, out) = k(&server, "1.27", &["get", "pvc", "-o", "name"]);
    for i in 0..4 {
        assert!(
            out.contains(&format!("persistentvolumeclaim/data-db-{i}")),
            "{out}"
        );
    }
    // a new template rolls from the top down
    let (ok, out) = k(
        &server,
        "1.33",
        &["set", "image", "statefulset/db", "db=postgres:2"],
    );
    assert!(ok, "{out}");
    eventually(30, "both pods updated", || {
        let p = pods(&server, "app=db");
        (p.len() == 2
            && p.iter()
                .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == "postgres:2"))
        .then_some(())
    });
    let (_, out) = k(
        &server,
        "1.27",
        &[
            "get",
            "statefulset",
            "db",
            "-o",
            "jsonpath={.status.currentRevision} {.status.updateRevision}",
        ],
    );
    let revs: Vec<&str> = out.split_whitespace().collect();
    assert!(revs.len() == 2 && revs[0] == revs[1], "{out}");
    history_and_undo(&server, "statefulset/db", "db", "postgres:1");
    eventually(30, "both pods back on the first template", || {
        let p = pods(&server, "app=db");
        (p.len() == 2
            && p.iter()
                .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == "postgres:1"))
        .then_some(())
    });
}

#[test]
fn a_cron_job_creates_its_job_on_schedule() {
    // the controller's clock runs ahead so that the next minute comes 4 s after start
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let skew = (60 - now % 60 + 56) % 60;
    let server = SkuaServer::start_with_config(&format!("debug-cronjob-clock-skew: {skew}\n"));
    let _nodes = SimNodes::start(&server, 1, &["--job-seconds", "1"]);
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/1 * * * *",
            "--",
            "date",
        ],
    );
    assert!(ok, "{out}");
    let job = eventually(30, "the scheduled job", || {
        let (_, body) = admin_request(
            &server,
            "GET",
            "/apis/batch/v1/namespaces/default/jobs",
            None,
        );
        let list: Value = serde_json::from_str(&body).unwrap();
        list["items"].as_array().and_then(|l| l.first().cloned())
    });
    let name = job["metadata"]["name"].as_str().unwrap();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    assert!(
        minutes > 29_000_000,
        "named after its scheduled minute: {name}"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "wait",
            "--for=condition=complete",
            &format!("job/{name}"),
            "--timeout=30s",
        ],
    );
    assert!(ok, "{out}");
    let cj = eventually(20, "the cron job's status", || {
        let (_, body) = admin_request(
            &server,
            "GET",
            "/apis/batch/v1/namespaces/default/cronjobs/tick",
            None,
        );
        let cj: Value = serde_json::from_str(&body).unwrap();
        (cj["status"]["lastScheduleTime"].is_string()
            && cj["status"]["lastSuccessfulTime"].is_string())
        .then_some(cj)
    });
    assert_eq!(
        parse_minute(cj["status"]["lastScheduleTime"].as_str().unwrap()),
        minutes,
        "lastScheduleTime is the job's minute"
    );
    // deleting the cron job takes its jobs along
    let (ok, out) = k(&server, "1.33", &["delete", "cronjob", "tick"]);
    assert!(ok, "{out}");
    eventually(30, "its jobs to go", || {
        let (_, body) = admin_request(
            &server,
            "GET",
            "/apis/batch/v1/namespaces/default/jobs",
            None,
        );
        let list: Value = serde_json::from_str(&body).unwrap();
        list["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
}

/// Minutes since the epoch of an RFC 3339 UTC time.
fn parse_minute(t: &str) -> i64 {
    let days_from_civil = |y: i64, m: i64, d: i64| {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
    };
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    (days_from_civil(n(0..4), n(5..7), n(8..10)) * 86_400 + n(11..13) * 3600 + n(14..16) * 60) / 60
}

#[test]
fn a_replication_controller_keeps_its_replicas() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 1, &[]);
    let rc = "apiVersion: v1
kind: ReplicationController
metadata: {name: old}
spec:
  replicas: 3
  selector: {app: old}
  template:
    metadata: {labels: {app: old}}
    spec:
      containers: [{name: c, image: nginx}]
";
    apply(&server, "1.27", "rc.yaml", rc);
    eventually(30, "three ready replicas", || {
        let p = pods(&server, "app=old");
        (p.len() == 3 && p.iter().all(ready)).then_some(())
    });
    // a deleted pod is replaced
    let victim = pods(&server, "app=old")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = k(&server, "1.27", &["delete", "pod", &victim]);
    assert!(ok, "{out}");
    eventually(30, "a replacement", || {
        let p: Vec<Value> = pods(&server, "app=old")
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        (p.len() == 3
            && p.iter()
                .all(|p| p["metadata"]["name"] != victim.as_str() && ready(p)))
        .then_some(())
    });
    let (_, out) = k(&server, "1.27", &["get", "rc", "old", "--no-headers"]);
    assert_eq!(out.split_whitespace().nth(3), Some("3"), "READY: {out}");

    // without a selector: it and the RC's labels default to the template's labels
    // (it used to select nothing and create pods without owners for ever)
    let bare = rc
        .replace("name: old", "name: bare")
        .replace("  selector: {app: old}\n", "")
        .replace("app: old", "app: bare")
        .replace("replicas: 3", "replicas: 2");
    apply(&server, "1.33", "bare.yaml", &bare);
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "get",
            "rc",
            "bare",
            "-o",
            "jsonpath={.spec.selector} {.metadata.labels}",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), r#"{"app":"bare"} {"app":"bare"}"#);
    eventually(30, "two ready, owned replicas", || {
        let p = pods(&server, "app=bare");
        (p.len() == 2
            && p.iter()
                .all(|p| ready(p) && p["metadata"]["ownerReferences"][0]["name"] == "bare"))
        .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let made = pods(&server, "app=bare");
    assert_eq!(made.len(), 2, "no more than asked for");
    // upstream omits unset fields; the controller's pods used to carry
    // `initContainers: null` and the like
    fn nulls(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(at.to_string()),
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| nulls(v, &format!("{at}.{k}"), out)),
            Value::Array(a) => a.iter().for_each(|v| nulls(v, &format!("{at}[]"), out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    made.iter().for_each(|p| nulls(p, "", &mut found));
    assert!(found.is_empty(), "null fields: {found:?}");
    // a selector that does not select the template is refused as upstream refuses it
    let wrong = r#"{"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "wrong"},
        "spec": {"selector": {"app": "x"}, "template": {"metadata": {"labels": {"app": "y"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}"#;
    let (code, body) = admin_request(
        &server,
        "POST",
        "/api/v1/namespaces/default/replicationcontrollers",
        Some(wrong),
    );
    assert_eq!(code, 422, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("`selector` does not match template `labels`"),
        "{body}"
    );
}

#[test]
fn terminated_pods_beyond_the_threshold_are_collected_oldest_first() {
    let server = SkuaServer::start_with_config("terminated-pod-gc-threshold: 2\n");
    let _nodes = SimNodes::start(&server, 1, &[]);
    // a pod that keeps running, and four that finish a second after they start,
    // created a second apart so that their ages differ
    let pod = |name: &str, finishes: bool| {
        let annotations = if finishes {
            r#"{"sim.skua.io/run-seconds": "1"}"#
        } else {
            "{}"
        };
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod",
                "metadata": {{"name": "{name}", "labels": {{"app": "gc"}}, "annotations": {annotations}}},
                "spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
        )
    };
    let create = |body: String| {
        let (code, out) = admin_request(
            &server,
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&body),
        );
        assert_eq!(code, 201, "{out}");
    };
    create(pod("keep", false));
    for i in 0..4 {
        create(pod(&format!("done-{i}"), true));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let left = eventually(
        60,
        "two terminated pods and the running one to be left",
        || {
            let p = pods(&server, "app=gc");
            let mut names: Vec<String> = p
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            (names.len() == 3).then_some((names, p))
        },
    );
    assert_eq!(
        left.0,
        ["done-2", "done-3", "keep"],
        "the oldest went first"
    );
    for p in &left.1 {
        let phase = p["status"]["phase"].as_str().unwrap();
        let want = if p["metadata"]["name"] == "keep" {
            "Running"
        } else {
            "Succeeded"
        };
        assert_eq!(phase, want, "{p}");
    }
}

const QUOTA: &str = "apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: team}
spec:
  limits:
  - type: Container
    default: {cpu: 200m, memory: 128Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: \"1\"}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: q, namespace: team}
spec:
  hard: {pods: \"3\", requests.cpu: 300m, limits.memory: 1Gi}
";

#[test]
fn limit_ranges_default_pods_and_quotas_refuse_what_exceeds_them() {
    let server = SkuaServer::start();
    for (v, ns) in [("1.27", "team"), ("1.33", "other")] {
        let (ok, out) = k(&server, v, &["create", "namespace", ns]);
        assert!(ok, "{out}");
    }
    apply(&server, "1.33", "quota.yaml", QUOTA);
    // the quota controller fills in the status before anything is charged to it
    eventually(30, "the quota's status", || {
        let (_, out) = k(
            &server,
            "1.33",
            &["get", "quota", "q", "-n", "team", "--no-headers"],
        );
        out.contains("pods: 0/3").then_some(())
    });
    for (v, name) in [("1.27", "a"), ("1.33", "b"), ("1.33", "c")] {
        let (ok, out) = k(&server, v, &["run", name, "-n", "team", "--image=busybox"]);
        assert!(ok, "kubectl {v}: {out}");
    }
    // LimitRange defaults: the request where none was given, the limits too
    let (_, body) = admin_request(&server, "GET", "/api/v1/namespaces/team/pods/a", None);
    let a: Value = serde_json::from_str(&body).unwrap();
    let resources = &a["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources}");
    assert_eq!(
        resources["limits"],
        serde_json::json!({"cpu": "200m", "memory": "128Mi"})
    );
    assert!(
        a["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .is_some_and(|s| s.starts_with("LimitRanger plugin set: ")),
        "{a}"
    );
    // the quota is charged at admission: the fourth pod is refused, in upstream's words
    for v in ["1.27", "1.33"] {
        let (ok, out) = k(&server, v, &["run", "d", "-n", "team", "--image=busybox"]);
        assert!(!ok, "kubectl {v}: {out}");
        assert!(
            out.contains(r#"pods "d" is forbidden: exceeded quota: q, requested: pods=1,requests.cpu=100m, used: pods=3,requests.cpu=300m, limited: pods=3,requests.cpu=300m"#),
            "kubectl {v}: {out}"
        );
    }
    let (_, out) = k(&server, "1.33", &["get", "quota", "-n", "team"]);
    assert!(out.contains("REQUEST") && out.contains("LIMIT"), "{out}");
    assert!(
        out.contains("pods: 3/3, requests.cpu: 300m/300m")
            && out.contains("limits.memory: 384Mi/1Gi"),
        "{out}"
    );
    // over the LimitRange's max: refused whatever the quota says
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "run",
            "big",
            "-n",
            "team",
            "--image=busybox",
            "--overrides",
            r#"{"spec": {"containers": [{"name": "big", "image": "busybox", "resources": {"limits": {"cpu": "2"}}}]}}"#,
        ],
    );
    assert!(!ok);
    assert!(
        out.contains(
            r#"pods "big" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        ),
        "{out}"
    );
    // a namespace without them is not touched
    let (ok, out) = k(
        &server,
        "1.33",
        &["run", "free", "-n", "other", "--image=busybox"],
    );
    assert!(ok, "{out}");
    // a deleted pod gives its share back (the controller recounts)
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "delete",
            "pod",
            "a",
            "-n",
            "team",
            "--grace-period=0",
            "--force",
        ],
    );
    assert!(ok, "{out}");
    eventually(30, "the fourth pod to fit once a pod is gone", || {
        let (ok, _) = k(
            &server,
            "1.33",
            &["run", "d", "-n", "team", "--image=busybox"],
        );
        ok.then_some(())
    });
}

const FILLER: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: filler}
spec:
  replicas: 2
  selector: {matchLabels: {app: filler}}
  template:
    metadata: {labels: {app: filler}}
    spec:
      containers: [{name: c, image: busybox, resources: {requests: {cpu: \"1\"}}}]
";

const VIP: &str = "apiVersion: v1
kind: Pod
metadata: {name: vip}
spec:
  priorityClassName: high
  containers: [{name: c, image: busybox, resources: {requests: {cpu: \"1\"}}}]
";

#[test]
fn a_higher_priority_pod_preempts_a_lower_one() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 1, &["--cpu", "2"]);
    // the system classes exist from the start; a class of our own
    let (ok, out) = k(
        &server,
        "1.27",
        &["create", "priorityclass", "high", "--value=1000"],
    );
    assert!(ok, "{out}");
    let (_, out) = k(&server, "1.33", &["get", "priorityclass"]);
    for want in [
        "VALUE",
        "GLOBAL-DEFAULT",
        "system-cluster-critical",
        "2000000000",
        "system-node-critical",
        "high",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // two filler pods take the node's two cores
    apply(&server, "1.33", "filler.yaml", FILLER);
    eventually(30, "two ready fillers", || {
        let p = pods(&server, "app=filler");
        (p.len() == 2 && p.iter().all(ready)).then_some(())
    });
    let fillers: Vec<String> = pods(&server, "app=filler")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // a class that does not exist is refused at admission
    let (ok, out) = k(
        &server,
        "1.33",
        &[
            "run",
            "nope",
            "--image=busybox",
            "--overrides",
            r#"{"spec": {"priorityClassName": "missing"}}"#,
        ],
    );
    assert!(!ok);
    assert!(
        out.contains(r#"pods "nope" is forbidden: no PriorityClass with name missing was found"#),
        "{out}"
    );
    // the important pod takes one filler's place
    apply(&server, "1.27", "vip.yaml", VIP);
    let vip = eventually(60, "the vip pod to run", || {
        let p = pods(&server, "");
        let vip = p.into_iter().find(|p| p["metadata"]["name"] == "vip")?;
        ready(&vip).then_some(vip)
    });
    assert_eq!(vip["spec"]["priority"], 1000);
    assert_eq!(vip["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    // exactly one filler went, told why; its replacement waits for room
    let (_, events) = k(
        &server,
        "1.33",
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Preempted",
            "-o",
            "json",
        ],
    );
    let events: Value = serde_json::from_str(&events).unwrap();
    let victims: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["involvedObject"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(victims.len(), 1, "{events}");
    assert!(
        fillers.iter().any(|f| f == victims[0]),
        "{victims:?} {fillers:?}"
    );
    let message = events["items"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Preempted by pod ") && message.ends_with(" on node sim-0"),
        "{message}"
    );
    eventually(
        30,
        "the replacement filler to wait, in upstream's words",
        || {
            let p = pods(&server, "app=filler");
            let waiting = p.iter().find(|p| p["spec"]["nodeName"].is_null())?;
            let cond = waiting["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled")?
                .clone();
            (cond["message"] == "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.").then_some(())
        },
    );
}

const SPREAD: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: apart}
spec:
  replicas: 4
  selector: {matchLabels: {app: apart}}
  template:
    metadata: {labels: {app: apart}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: apart}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: nginx}]
";

#[test]
fn required_pod_anti_affinity_puts_replicas_on_different_nodes() {
    let server = SkuaServer::start();
    let _nodes = SimNodes::start(&server, 3, &[]);
    apply(&server, "1.33", "apart.yaml", SPREAD);
    let placed = eventually(30, "three placed replicas", || {
        let p = pods(&server, "app=apart");
        let bound: Vec<String> = p
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
            .collect();
        (p.len() == 4 && bound.len() == 3).then_some(bound)
    });
    let distinct: std::collections::HashSet<&String> = placed.iter().collect();
    assert_eq!(distinct.len(), 3, "one per node: {placed:?}");
    eventually(20, "the fourth explained", || {
        let (_, out) = k(
            &server,
            "1.33",
            &[
                "get",
                "events",
                "--field-selector",
                "reason=FailedScheduling",
            ],
        );
        out.contains("3 node(s) didn't match pod anti-affinity rules")
            .then_some(())
    });
}

/// Open watches by resource (the labels of `apiserver_longrunning_requests`), as the
/// server counts them.
fn open_watches_by_resource(server: &SkuaServer) -> std::collections::BTreeMap<String, i64> {
    let (code, text) = common::admin_request(server, "GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels.to_string(), n.parse::<i64>().ok()?))
        })
        .filter(|(_, n)| *n != 0)
        .collect()
}

fn open_watches(server: &SkuaServer) -> i64 {
    open_watches_by_resource(server).values().sum()
}

/// Losing the controller lease stops every loop and informer of the term, and a new
/// term starts one set again: after each of two flaps no resource is watched more often
/// than in the first term (before, each flap left a whole set of informers listing and
/// watching behind).
#[test]
fn leadership_flaps_leave_no_informer_or_task_behind() {
    let server = SkuaServer::start();
    let patch_lease = |patch: &serde_json::Value| {
        let (ok, out) = k(
            &server,
            "1.33",
            &[
                "-n",
                "kube-system",
                "patch",
                "lease",
                "kube-controller-manager",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
        );
        assert!(ok, "{out}");
    };
    // the leader's watches, once they have settled
    let mut last = -1;
    let leading = eventually(60, "the control loops' watches to settle", || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = open_watches(&server);
        let settled = now > 5 && now == last;
        last = now;
        settled.then_some(now)
    });
    let first_term = open_watches_by_resource(&server);
    for flap in 1..=2 {
        // another holder takes the lease and renews it until the leader lets go
        let idle = eventually(60, "the leader to stop its control loops", || {
            let patch = serde_json::json!({"spec": {"holderIdentity": "intruder",
                "renewTime": skua::api::meta::now_micro(), "leaseDurationSeconds": 15}});
            patch_lease(&patch);
            let now = open_watches(&server);
            (now < leading / 2).then_some(now)
        });
        // the lease let go: the server leads again, with one set of watches
        let patch = serde_json::json!({"spec": {"holderIdentity": null, "renewTime": null}});
        patch_lease(&patch);
        eventually(60, "the leader's watches to come back", || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            (open_watches(&server) >= leading).then_some(())
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
        let again = open_watches_by_resource(&server);
        for (resource, n) in &again {
            let before = first_term.get(resource).copied().unwrap_or(1);
            assert!(
                *n <= before,
                "flap {flap}: {resource} watched {n} times (first term {before}; {idle} watches between terms)"
            );
        }
    }
}
