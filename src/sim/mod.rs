//! Simulated ("hollow") nodes, like kwok: `skua sim` registers N nodes with a server,
//! renews their Leases every 10 s, and drives the pods bound to them as a kubelet
//! would — Pending → Running with Ready conditions and a pod IP from the node's range;
//! pods of Jobs succeed after a while; pods being deleted are finished off. No
//! container runs, so control loops and scale can be tested on any machine. When the
//! process stops, its nodes stop renewing (and the node lifecycle controller takes
//! over).

use crate::api::meta::now_rfc3339;
use crate::client::node::{register, renew_lease};
use crate::client::watch::key_of;
use crate::client::{ApiClient, Remote};
use crate::runtime::informer::Informer;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `skua sim` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Kubeconfig of the server to join.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// How many nodes to run.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Node names are this prefix and a number.
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,
    /// Pods each node takes.
    #[arg(long, default_value_t = 110)]
    pub pods_per_node: u32,
    /// CPU cores of each node.
    #[arg(long, default_value = "4")]
    pub cpu: String,
    /// Memory of each node.
    #[arg(long, default_value = "16Gi")]
    pub memory: String,
    /// Seconds after which a Job's pod succeeds (the annotation
    /// `sim.skua.io/run-seconds` on a pod overrides it).
    #[arg(long, default_value_t = 5)]
    pub job_seconds: u64,
    /// Labels for every node, `key=value,…`.
    #[arg(long, default_value = "")]
    pub labels: String,
}

fn node_object(args: &SimArgs, name: &str, index: usize) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "type": "sim",
    });
    for pair in args.labels.split(',').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = pair.split_once('=') {
            labels[k] = json!(v);
        }
    }
    let resources = json!({"cpu": args.cpu, "memory": args.memory, "pods": args.pods_per_node.to_string(), "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": node_status(&resources, index, name),
    })
}

fn node_status(resources: &Value, index: usize, name: &str) -> Value {
    let now = now_rfc3339();
    // TEST-NET-2 addresses: documentation only, never contacted
    let ip = format!("198.51.{}.{}", 100 + index / 250, index % 250 + 1);
    json!({
        "capacity": resources, "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "conditions": crate::client::node::conditions(
            &now,
            ("True", "KubeletReady", "kubelet is posting ready status"),
            false,
            false,
        ),
        "nodeInfo": {
            "kubeletVersion": crate::apiserver::KUBE_GIT_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64", "osImage": "skua simulated node",
            "kernelVersion": "sim", "containerRuntimeVersion": "sim://1",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    })
}

/// Runs the simulated nodes until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let remote = Remote::from_kubeconfig(&args.kubeconfig)?;
    let client = ApiClient::remote(Arc::new(remote), "skua-sim");
    let names: Vec<String> = (0..args.nodes)
        .map(|i| format!("{}{i}", args.name_prefix))
        .collect();
    // leases, renewed every 10 s for every node registered so far, many at a time
    // (1,000 nodes one by one would take longer than the grace period). The loop
    // starts before registration: registering a thousand nodes takes longer than the
    // grace period, so the first nodes' leases must be renewed meanwhile.
    let registered: Arc<std::sync::Mutex<Vec<(usize, String)>>> = Arc::default();
    {
        let (client, registered, args) = (client.clone(), registered.clone(), args.clone());
        let node_objects = Informer::start(client.clone(), &crate::api::registry::NODES, None);
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let leases: Arc<std::sync::Mutex<HashMap<String, Value>>> = Arc::default();
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await; // the first tick is now: each lease was just created
            loop {
                tick.tick().await;
                let names = lock(&registered).clone();
                let mut tasks = tokio::task::JoinSet::new();
                for (i, n) in names {
                    // a node marked unreachable while this process ran says it is ready
                    let ready = node_objects.get(&n).is_some_and(|node| {
                        node["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    let again = (!ready).then(|| node_object(&args, &n, i));
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (client, leases) = (client.clone(), leases.clone());
                    tasks.spawn(async move {
                        let _permit = permit;
                        let last = lock(&leases).remove(&n);
                        match renew_lease(&client, &n, last).await {
                            Ok(stored) => {
                                lock(&leases).insert(n.clone(), stored);
                            }
                            Err(e) => {
                                tracing::debug!(node = %n, error = %e, "lease renewal failed")
                            }
                        }
                        if let Some(node) = again {
                            let _ = register(&client, &node).await;
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            }
        });
    }
    // sixteen registrations at a time
    for chunk in names.iter().enumerate().collect::<Vec<_>>().chunks(16) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, name) in chunk {
            let (client, node, name, i) = (
                client.clone(),
                node_object(&args, name, *i),
                (*name).clone(),
                *i,
            );
            let registered = registered.clone();
            tasks.spawn(async move {
                let mut tries = 0;
                while let Err(e) = register(&client, &node).await {
                    tries += 1;
                    anyhow::ensure!(tries < 30, "registering node {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // its lease at once, as a kubelet does
                if let Err(e) = renew_lease(&client, &name, None).await {
                    tracing::debug!(node = %name, error = %e, "first lease failed");
                }
                lock(&registered).push((i, name));
                Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    tracing::info!(nodes = names.len(), "simulated nodes registered");
    let pods = Informer::start(
        client.clone(),
        &crate::api::registry::PODS,
        Some("spec.nodeName!=".into()),
    );
    let mut changes = pods.subscribe();
    pods.synced().await;
    let driver = PodDriver {
        client: client.clone(),
        job_seconds: args.job_seconds,
        ranges: Arc::default(),
        node_index: Arc::new(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
        ),
        mine: Arc::new(names.iter().cloned().collect()),
        in_flight: Arc::default(),
        slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
    };
    for p in pods.list(None) {
        driver.start(p);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut resync = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = resync.tick() => {
                // level-triggered, like a kubelet: anything not yet where it should be
                for p in pods.list(None) {
                    let pending = p["status"]["phase"].as_str().is_none_or(|ph| ph == "Pending");
                    if pending || !p["metadata"]["deletionTimestamp"].is_null() {
                        driver.start(p);
                    }
                }
            }
            c = changes.recv() => {
                let Some(c) = c else { break };
                if let Some(p) = c.new {
                    driver.start(p);
                }
            }
        }
    }
    tracing::info!("simulated nodes stopping; their leases will expire");
    Ok(())
}

/// Requests a simulated node set has in flight at once (lease renewals; pod updates).
const IN_FLIGHT: usize = 32;

/// Drives pods as their kubelets would: each node's pods independently, so one pod's
/// update does not wait for another's.
#[derive(Clone)]
struct PodDriver {
    client: ApiClient,
    job_seconds: u64,
    node_index: Arc<HashMap<String, usize>>,
    mine: Arc<HashSet<String>>,
    /// The first three octets of each node's pod range (`spec.podCIDR`), once known.
    ranges: Arc<std::sync::Mutex<HashMap<String, String>>>,
    /// pods being driven now; a change seen meanwhile is picked up by the resync
    in_flight: Arc<std::sync::Mutex<HashSet<String>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl PodDriver {
    fn start(&self, pod: Arc<Value>) {
        if !self
            .mine
            .contains(pod["spec"]["nodeName"].as_str().unwrap_or(""))
        {
            return;
        }
        let key = key_of(&pod);
        if !lock(&self.in_flight).insert(key.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Ok(_permit) = me.slots.acquire().await {
                me.drive(&pod).await;
            }
            lock(&me.in_flight).remove(&key);
        });
    }

    /// An address in the node's /24 derived from the pod's uid, so driving a pod twice
    /// gives it the same address.
    async fn pod_ip(&self, node: &str, uid: &str) -> String {
        let host = uid
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        if !lock(&self.ranges).contains_key(node) {
            if let Ok(n) = self.client.get(&format!("/api/v1/nodes/{node}")).await {
                if let Some((net, _)) = n["spec"]["podCIDR"]
                    .as_str()
                    .and_then(|c| c.split_once('/'))
                    .and_then(|(ip, _)| ip.rsplit_once('.'))
                {
                    lock(&self.ranges).insert(node.to_string(), net.to_string());
                }
            }
        }
        let known = lock(&self.ranges).get(node).cloned();
        match known {
            Some(net) => format!("{net}.{}", host % 253 + 2),
            None => {
                let index = self.node_index.get(node).copied().unwrap_or(0);
                format!("10.{}.{}.{}", 42 + index / 256, index % 256, host % 253 + 2)
            }
        }
    }

    async fn drive(&self, pod: &Arc<Value>) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            // the containers are "stopped": finish the graceful deletion
            let opts =
                json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}});
            if let Err(e) = self.client.delete(&path, &opts).await {
                tracing::debug!(pod = %key_of(pod), error = %e, "final delete failed");
            }
            return;
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        // a Job's pods finish, and so does any pod that says how long it runs
        let is_job = pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["kind"] == "Job")
            || pod["metadata"]["annotations"]["sim.skua.io/run-seconds"].is_string();
        if phase == "Pending" {
            let now = now_rfc3339();
            let ip = self
                .pod_ip(node, pod["metadata"]["uid"].as_str().unwrap_or(""))
                .await;
            let statuses: Vec<Value> = pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                "name": c["name"], "image": c["image"], "imageID": format!("sim://{}", c["image"].as_str().unwrap_or("")),
                "containerID": format!("sim://{}", crate::api::meta::new_uid()), "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })).collect();
            let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
            let status = json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "198.51.100.1", "startTime": now,
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
                "containerStatuses": statuses,
            }});
            if let Err(e) = self
                .client
                .call(
                    http::Method::PATCH,
                    &format!("{path}/status"),
                    "application/merge-patch+json",
                    Some(&status),
                )
                .await
            {
                tracing::debug!(pod = %key_of(pod), error = %e, "status update failed");
            }
            if is_job {
                let seconds = pod["metadata"]["annotations"]["sim.skua.io/run-seconds"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(self.job_seconds);
                let (client, pod) = (self.client.clone(), pod.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                    complete(&client, &pod, &path).await;
                });
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Job's pod finishes: successfully, or with the exit code its
/// `sim.skua.io/exit-code` annotation names.
async fn complete(client: &ApiClient, pod: &Value, path: &str) {
    let now = now_rfc3339();
    let code: i64 = pod["metadata"]["annotations"]["sim.skua.io/exit-code"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let statuses: Vec<Value> = pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
        "name": c["name"], "image": c["image"], "imageID": "", "containerID": "", "ready": false, "started": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": now, "finishedAt": now}},
    })).collect();
    let cond = |t: &str, s: &str| json!({"type": t, "status": s, "reason": if s == "False" { json!("PodCompleted") } else { Value::Null }, "lastProbeTime": null, "lastTransitionTime": now});
    let status = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [cond("Initialized", "True"), cond("Ready", "False"), cond("ContainersReady", "False"), cond("PodScheduled", "True")],
        "containerStatuses": statuses,
    }});
    let _ = client
        .call(
            http::Method::PATCH,
            &format!("{path}/status"),
            "application/merge-patch+json",
            Some(&status),
        )
        .await;
}
