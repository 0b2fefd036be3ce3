//! The node as its kubelet reports it: registration with capacity, allocatable,
//! addresses, labels, nodeInfo and conditions read from this machine and its runtime;
//! the Lease renewed every 10 s; the status heartbeat every minute.
//!
//! The node is `Ready` when the runtime says both it and its network are (CRI
//! `Status`): until the CNI config exists, pods could not get addresses.

use crate::client::ApiClient;
use crate::client::node::{register, renew_lease};
use crate::cri::RuntimeVersion;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// What the node's status says about this machine.
#[derive(Clone, Debug)]
pub struct Facts {
    pub cpus: usize,
    /// `MemTotal` in KiB.
    pub memory_kib: u64,
    /// Size of the filesystem holding the data directory, in KiB.
    pub storage_kib: Option<u64>,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` of a `/proc/meminfo` text, in KiB.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `PRETTY_NAME` of an `/etc/os-release` text.
fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

impl Facts {
    pub fn read(data_dir: &Path) -> Facts {
        let storage_kib = std::process::Command::new("df")
            .args(["-k", "--output=size"])
            .arg(data_dir)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse().ok())
            });
        Facts {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib: mem_total_kib(&read("/proc/meminfo")).unwrap_or(0),
            storage_kib,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// This machine's architecture as Kubernetes names it (`amd64`, `arm64`, …).
pub fn arch() -> String {
    std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64")
}

/// The role label the server puts on its own (embedded agent's) node.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// The Node this agent registers and keeps current.
pub fn node_object(
    name: &str,
    ips: &[IpAddr],
    facts: &Facts,
    runtime: &RuntimeVersion,
    kubelet_port: u16,
) -> Value {
    let now = crate::api::meta::now_rfc3339();
    let mut resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "pods": "110",
    });
    if let Some(kib) = facts.storage_kib {
        resources["ephemeral-storage"] = json!(format!("{kib}Ki"));
    }
    let arch = arch();
    let mut addresses: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    addresses.push(json!({"type": "Hostname", "address": name}));
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
        }},
        "spec": {},
        "status": {
            "capacity": resources, "allocatable": resources,
            "addresses": addresses,
            "conditions": crate::client::node::conditions(&now, (
                "False",
                "KubeletNotReady",
                "the kubelet is starting",
            ), false, false),
            "nodeInfo": {
                "kubeletVersion": crate::apiserver::KUBE_GIT_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
                "osImage": facts.os_image, "kernelVersion": facts.kernel,
                "containerRuntimeVersion": format!("{}://{}", runtime.name, runtime.version),
                "machineID": facts.machine_id, "systemUUID": "", "bootID": facts.boot_id,
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        },
    });
    node
}

/// What the node's conditions say: whether it can run pods (and why not), and whether
/// it is under memory or disk pressure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    pub message: String,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
}

impl Health {
    pub fn starting() -> Health {
        Health {
            ready: false,
            message: "the kubelet is starting".into(),
            memory_pressure: false,
            disk_pressure: false,
        }
    }
}

fn with_readiness(node: &Value, health: &Health) -> Value {
    let mut fresh = node.clone();
    let now = crate::api::meta::now_rfc3339();
    let (status, reason, message) = if health.ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        ("False", "KubeletNotReady", health.message.as_str())
    };
    fresh["status"]["conditions"] = crate::client::node::conditions(
        &now,
        (status, reason, message),
        health.memory_pressure,
        health.disk_pressure,
    );
    fresh
}

/// Registers `node`, then renews its Lease every 10 s and its status every minute (and
/// whenever `ready` changes), until the task is dropped. Failures are retried: the
/// server may be restarting.
pub async fn keep(client: ApiClient, node: Value, mut ready: tokio::sync::watch::Receiver<Health>) {
    let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
    let mut backoff = Duration::from_secs(1);
    loop {
        let first = with_readiness(&node, &ready.borrow().clone());
        let Err(e) = register(&client, &first).await else {
            break;
        };
        tracing::warn!(node = %name, error = %e, retry_in = ?backoff, "cannot register the node yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    tracing::info!(node = %name, "node registered");
    let mut lease: Option<Value> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut beats = 0u32;
    loop {
        let changed = tokio::select! {
            _ = tick.tick() => false,
            r = ready.changed() => r.is_ok(),
        };
        if !changed {
            match renew_lease(&client, &name, lease.take()).await {
                Ok(l) => lease = Some(l),
                Err(e) => tracing::warn!(node = %name, error = %e, "lease renewal failed"),
            }
            beats += 1;
        }
        if changed || beats % 6 == 0 {
            let fresh = with_readiness(&node, &ready.borrow_and_update().clone());
            if let Err(e) = register(&client, &fresh).await {
                tracing::warn!(node = %name, error = %e, "node status update failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_parse() {
        assert_eq!(
            mem_total_kib("MemTotal:       24684112 kB\nMemFree: 1 kB\n"),
            Some(24_684_112)
        );
        assert_eq!(
            pretty_name(
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            )
            .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        let facts = Facts::read(Path::new("/"));
        assert!(facts.cpus >= 1 && facts.memory_kib > 0 && !facts.kernel.is_empty());
        let runtime = RuntimeVersion {
            name: "containerd".into(),
            version: "1.6.20".into(),
            api_version: "v1".into(),
        };
        let n = node_object(
            "n1",
            &["10.0.0.5".parse().unwrap()],
            &facts,
            &runtime,
            10250,
        );
        assert_eq!(
            n["status"]["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(
            n["status"]["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.5"})
        );
        assert_eq!(n["status"]["capacity"]["cpu"], facts.cpus.to_string());
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        // the role label is the server's to set (NodeRestriction refuses it)
        assert!(n["metadata"]["labels"].get(CONTROL_PLANE_LABEL).is_none());
    }
}
