//! A pod's status from what the runtime reports and what the pod's sync decided, as
//! upstream's kubelet writes it: phase (its getPhase), conditions, container statuses
//! with state, last state and restart count, IPs, start time and QoS class. Pure.

use super::spec::{containers, init_containers};
use crate::api::civil::rfc3339;
use k8s_cri::v1::{ContainerState, ContainerStatus};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

/// What one sync saw of a pod in the runtime.
#[derive(Default, Debug, Clone)]
pub struct Observed {
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    /// Every instance of every container of the pod the runtime still holds.
    pub containers: Vec<ContainerStatus>,
    /// Why a container is not running, by name (`CrashLoopBackOff`, `ErrImagePull`,
    /// `CreateContainerConfigError`…) with a message.
    pub waiting: BTreeMap<String, (String, String)>,
    /// Ids of running containers whose readiness holds.
    pub ready: HashSet<String>,
    /// Ids of running containers whose startup probe passed (or that have none).
    pub started: HashSet<String>,
}

impl Observed {
    /// The newest instance of container `name`, and the one before it.
    pub fn instances(&self, name: &str) -> (Option<&ContainerStatus>, Option<&ContainerStatus>) {
        let mut all: Vec<&ContainerStatus> = self
            .containers
            .iter()
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .collect();
        all.sort_by_key(|c| (c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at));
        let latest = all.pop();
        (latest, all.pop())
    }
}

fn time(nanos: i64) -> Value {
    if nanos <= 0 {
        Value::Null
    } else {
        json!(rfc3339(nanos / 1_000_000_000))
    }
}

fn terminated(c: &ContainerStatus) -> Value {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    let mut t = json!({
        "exitCode": c.exit_code, "reason": reason,
        "startedAt": time(c.started_at), "finishedAt": time(c.finished_at),
        "containerID": format!("containerd://{}", c.id),
    });
    if !c.message.is_empty() {
        t["message"] = json!(c.message);
    }
    t
}

fn exited(c: &ContainerStatus) -> bool {
    c.state == ContainerState::ContainerExited as i32
}

fn running(c: &ContainerStatus) -> bool {
    c.state == ContainerState::ContainerRunning as i32
}

/// One entry of `containerStatuses` (or `initContainerStatuses`).
fn container_status(spec: &Value, seen: &Observed, default_wait: &str) -> Value {
    let name = spec["name"].as_str().unwrap_or("");
    let (latest, previous) = seen.instances(name);
    let mut st = json!({
        "name": name, "image": spec["image"], "imageID": "", "ready": false, "started": false,
        "restartCount": latest.and_then(|c| c.metadata.as_ref()).map_or(0, |m| m.attempt),
        "lastState": {},
    });
    if let Some(c) = latest {
        st["containerID"] = json!(format!("containerd://{}", c.id));
        st["imageID"] = json!(c.image_ref);
    }
    let waiting = seen.waiting.get(name);
    match (latest, waiting) {
        (_, Some((reason, message))) => {
            st["state"] = json!({"waiting": {"reason": reason, "message": message}});
            if let Some(c) = latest.filter(|c| exited(c)) {
                st["lastState"] = json!({ "terminated": terminated(c) });
            }
        }
        (Some(c), None) if running(c) => {
            st["state"] = json!({"running": {"startedAt": time(c.started_at)}});
            st["started"] = json!(seen.started.contains(&c.id));
            st["ready"] = json!(seen.ready.contains(&c.id));
        }
        (Some(c), None) if exited(c) => st["state"] = json!({ "terminated": terminated(c) }),
        _ => st["state"] = json!({"waiting": {"reason": default_wait}}),
    }
    if let Some(p) = previous.filter(|p| exited(p)) {
        if st["lastState"].as_object().is_some_and(|o| o.is_empty())
            && st["state"].get("terminated").is_none()
        {
            st["lastState"] = json!({ "terminated": terminated(p) });
        }
    }
    st
}

/// Upstream's getPhase, from the container statuses.
fn phase(pod: &Value, init: &[Value], app: &[Value]) -> &'static str {
    let policy = pod["spec"]["restartPolicy"].as_str().unwrap_or("Always");
    let mut pending_init = false;
    for st in init {
        let t = &st["state"]["terminated"];
        if t.is_object() && t["exitCode"] == 0 {
            continue;
        }
        if t.is_object() && policy == "Never" {
            return "Failed";
        }
        if st["state"]["waiting"].is_object()
            && st["lastState"]["terminated"].is_object()
            && policy == "Never"
        {
            return "Failed";
        }
        pending_init = true;
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for st in app {
        let state = &st["state"];
        if state["running"].is_object() {
            running += 1;
        } else if state["terminated"].is_object() {
            stopped += 1;
            if state["terminated"]["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if st["lastState"]["terminated"].is_object() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if pending_init || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// The pod's whole status; `start_time` is when the kubelet first took the pod on.
pub fn pod_status(
    pod: &Value,
    seen: &Observed,
    host_ip: &str,
    start_time: &str,
    now: &str,
) -> Value {
    let init_specs: Vec<&Value> = init_containers(pod).collect();
    let app_specs: Vec<&Value> = containers(pod).collect();
    let init: Vec<Value> = init_specs
        .iter()
        .map(|c| container_status(c, seen, "PodInitializing"))
        .collect();
    let initialized = init
        .iter()
        .all(|s| s["state"]["terminated"]["exitCode"] == 0);
    let app_wait = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app: Vec<Value> = app_specs
        .iter()
        .map(|c| container_status(c, seen, app_wait))
        .collect();
    let phase = phase(pod, &init, &app);
    let names = |list: &[Value], pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        list.iter()
            .filter(|s| pred(s))
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let not_init = names(&init, &|s| s["state"]["terminated"]["exitCode"] != 0);
    let not_ready = names(&app, &|s| s["ready"] != true);
    let finished = matches!(phase, "Succeeded" | "Failed");
    let old: BTreeMap<String, Value> = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c["type"].as_str().unwrap_or("").to_string(), c.clone()))
        .collect();
    let condition = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .get(t)
            .filter(|c| c["status"] == status)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_else(|| json!(now));
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if !ok {
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = message {
                c["message"] = json!(m);
            }
        }
        c
    };
    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let (ready_reason, ready_message) = if finished {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: {}",
                list(&not_ready)
            )),
        )
    };
    let ready = not_ready.is_empty() && !finished;
    let mut conditions = vec![
        condition("PodReadyToStartContainers", seen.sandbox_ready, None, None),
        condition(
            "Initialized",
            not_init.is_empty(),
            Some(if finished {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            }),
            (!finished).then(|| format!("containers with incomplete status: {}", list(&not_init))),
        ),
        condition("Ready", ready, Some(ready_reason), ready_message.clone()),
        condition("ContainersReady", ready, Some(ready_reason), ready_message),
    ];
    conditions.push(
        old.get("PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition("PodScheduled", true, None, None)),
    );
    let host_network = pod["spec"]["hostNetwork"] == true;
    let pod_ip = if host_network {
        Some(host_ip.to_string())
    } else {
        seen.pod_ip.clone().filter(|ip| !ip.is_empty())
    };
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": app,
        "qosClass": crate::api::defaults::qos_class(pod),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::ContainerMetadata;

    fn instance(name: &str, attempt: u32, state: ContainerState, exit: i32) -> ContainerStatus {
        ContainerStatus {
            id: format!("{name}-{attempt}"),
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            state: state as i32,
            exit_code: exit,
            started_at: 1_700_000_000_000_000_000,
            finished_at: if state == ContainerState::ContainerExited {
                1_700_000_010_000_000_000
            } else {
                0
            },
            image_ref: "docker.io/library/busybox@sha256:ab".into(),
            ..Default::default()
        }
    }

    fn pod(policy: &str) -> Value {
        json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"restartPolicy": policy,
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}})
    }

    fn cond<'a>(st: &'a Value, t: &str) -> &'a Value {
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
    }

    #[test]
    fn a_pod_initialising_is_pending() {
        let mut seen = Observed {
            sandbox_ready: true,
            pod_ip: Some("10.42.0.9".into()),
            ..Default::default()
        };
        seen.containers
            .push(instance("i", 0, ContainerState::ContainerRunning, 0));
        let st = pod_status(&pod("Always"), &seen, "192.0.2.1", "t0", "t1");
        assert_eq!(st["phase"], "Pending");
        assert_eq!(cond(&st, "Initialized")["status"], "False");
        assert_eq!(
            cond(&st, "Initialized")["message"],
            "containers with incomplete status: [i]"
        );
        assert_eq!(
            st["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        assert_eq!(st["podIP"], "10.42.0.9");
        assert_eq!(st["qosClass"], "BestEffort");
    }

    #[test]
    fn running_ready_and_crash_looping_containers() {
        let mut seen = Observed {
            sandbox_ready: true,
            ..Default::default()
        };
        seen.containers.extend([
            instance("i", 0, ContainerState::ContainerExited, 0),
            instance("a", 0, ContainerState::ContainerRunning, 0),
            instance("b", 0, ContainerState::ContainerExited, 1),
            instance("b", 1, ContainerState::ContainerExited, 2),
        ]);
        seen.ready.insert("a-0".into());
        seen.started.insert("a-0".into());
        seen.waiting.insert(
            "b".into(),
            (
                "CrashLoopBackOff".into(),
                "back-off 10s restarting failed container=b pod=p_(u)".into(),
            ),
        );
        let st = pod_status(&pod("Always"), &seen, "192.0.2.1", "t0", "t1");
        assert_eq!(st["phase"], "Running");
        let a = &st["containerStatuses"][0];
        assert_eq!(
            (a["ready"].clone(), a["started"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(a["containerID"], "containerd://a-0");
        let b = &st["containerStatuses"][1];
        assert_eq!(b["restartCount"], 1);
        assert_eq!(b["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(b["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(b["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(cond(&st, "Ready")["status"], "False");
        assert_eq!(
            cond(&st, "Ready")["message"],
            "containers with unready status: [b]"
        );
        assert_eq!(cond(&st, "Initialized")["status"], "True");
    }

    #[test]
    fn finished_pods_succeed_or_fail_by_policy() {
        let mut seen = Observed::default();
        seen.containers.extend([
            instance("i", 0, ContainerState::ContainerExited, 0),
            instance("a", 0, ContainerState::ContainerExited, 0),
            instance("b", 0, ContainerState::ContainerExited, 0),
        ]);
        let st = pod_status(&pod("Never"), &seen, "h", "t0", "t1");
        assert_eq!(st["phase"], "Succeeded");
        assert_eq!(cond(&st, "Ready")["reason"], "PodCompleted");
        assert_eq!(
            st["containerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        seen.containers[2].exit_code = 137;
        seen.containers[2].reason = "OOMKilled".into();
        let st = pod_status(&pod("Never"), &seen, "h", "t0", "t1");
        assert_eq!(st["phase"], "Failed");
        assert_eq!(
            st["containerStatuses"][1]["state"]["terminated"]["reason"],
            "OOMKilled"
        );
        let st = pod_status(&pod("OnFailure"), &seen, "h", "t0", "t1");
        assert_eq!(st["phase"], "Running", "OnFailure restarts the failed one");
        // an init container failing under Never fails the pod
        let mut seen = Observed::default();
        seen.containers
            .push(instance("i", 0, ContainerState::ContainerExited, 1));
        assert_eq!(
            pod_status(&pod("Never"), &seen, "h", "t0", "t1")["phase"],
            "Failed"
        );
    }

    #[test]
    fn transition_times_hold_while_a_condition_holds() {
        let mut p = pod("Always");
        p["status"]["conditions"] = json!([{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "old"}]);
        let seen = Observed {
            sandbox_ready: true,
            ..Default::default()
        };
        let st = pod_status(&p, &seen, "h", "t0", "new");
        assert_eq!(
            cond(&st, "PodReadyToStartContainers")["lastTransitionTime"],
            "old"
        );
        assert_eq!(cond(&st, "Ready")["lastTransitionTime"], "new");
    }
}
