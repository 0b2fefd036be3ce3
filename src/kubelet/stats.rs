//! Resource usage for the kubelet API: `/stats/summary` (upstream's stats/v1alpha1
//! Summary) and `/metrics/resource` (the Prometheus text metrics-server scrapes), from
//! the runtime's container stats over CRI and the node's /proc.

use super::Kubelet;
use super::spec::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
use k8s_cri::v1::ListContainerStatsRequest;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One container's usage.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub pod: (String, String, String),
    pub container: String,
    pub cpu_ns: u64,
    pub working_set: u64,
    pub usage: u64,
    pub writable: u64,
    pub at_ns: i64,
}

/// Every running container's usage, from CRI.
pub async fn containers(kubelet: &Kubelet) -> Vec<Usage> {
    let Ok(stats) = kubelet
        .cri()
        .runtime
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
    else {
        return Vec::new();
    };
    let label = |l: &std::collections::HashMap<String, String>, k: &str| {
        l.get(k).cloned().unwrap_or_default()
    };
    stats
        .into_inner()
        .stats
        .into_iter()
        .filter_map(|s| {
            let a = s.attributes.as_ref()?;
            let cpu = s.cpu.as_ref();
            let mem = s.memory.as_ref();
            Some(Usage {
                pod: (
                    label(&a.labels, POD_NAMESPACE),
                    label(&a.labels, POD_NAME),
                    label(&a.labels, POD_UID),
                ),
                container: label(&a.labels, CONTAINER_NAME),
                cpu_ns: cpu
                    .and_then(|c| c.usage_core_nano_seconds.as_ref())
                    .map_or(0, |v| v.value),
                working_set: mem
                    .and_then(|m| m.working_set_bytes.as_ref())
                    .map_or(0, |v| v.value),
                usage: mem
                    .and_then(|m| m.usage_bytes.as_ref())
                    .map_or(0, |v| v.value),
                writable: s
                    .writable_layer
                    .as_ref()
                    .and_then(|w| w.used_bytes.as_ref())
                    .map_or(0, |v| v.value),
                at_ns: cpu.map_or(0, |c| c.timestamp),
            })
        })
        .collect()
}

/// The node's CPU time (all cores, ns) and memory (total, available, bytes).
fn node(host: &dyn crate::host::Resources) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4) // not idle, not iowait
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux
    let cpu_ns = ticks * 10_000_000;
    let (available, total) = host.memory().unwrap_or_default();
    (cpu_ns, total as u64, available as u64)
}

fn rfc3339_ns(ns: i64) -> String {
    crate::api::civil::rfc3339(ns / 1_000_000_000)
}

/// `/stats/summary`.
pub async fn summary(kubelet: &Kubelet) -> Value {
    let now = crate::api::meta::now_rfc3339();
    let list = containers(kubelet).await;
    let (cpu_ns, total, available) = node(&*kubelet.host.resources);
    let mut pods: BTreeMap<(String, String, String), Vec<&Usage>> = BTreeMap::new();
    for u in &list {
        pods.entry(u.pod.clone()).or_default().push(u);
    }
    let pods: Vec<Value> = pods
        .iter()
        .map(|((ns, name, uid), cs)| {
            let containers: Vec<Value> = cs
                .iter()
                .map(|u| {
                    json!({"name": u.container,
                        "cpu": {"time": rfc3339_ns(u.at_ns), "usageCoreNanoSeconds": u.cpu_ns},
                        "memory": {"time": rfc3339_ns(u.at_ns), "workingSetBytes": u.working_set, "usageBytes": u.usage},
                        "rootfs": {"time": rfc3339_ns(u.at_ns), "usedBytes": u.writable}})
                })
                .collect();
            let sum = |f: fn(&Usage) -> u64| cs.iter().map(|u| f(u)).sum::<u64>();
            json!({"podRef": {"name": name, "namespace": ns, "uid": uid},
                "containers": containers,
                "cpu": {"time": now, "usageCoreNanoSeconds": sum(|u| u.cpu_ns)},
                "memory": {"time": now, "workingSetBytes": sum(|u| u.working_set), "usageBytes": sum(|u| u.usage)}})
        })
        .collect();
    json!({
        "node": {"nodeName": kubelet.settings.node_name,
            "cpu": {"time": now, "usageCoreNanoSeconds": cpu_ns},
            "memory": {"time": now, "availableBytes": available, "usageBytes": total - available.min(total), "workingSetBytes": total - available.min(total)}},
        "pods": pods,
    })
}

/// `/metrics/resource`, in the names and labels upstream's kubelet uses.
pub async fn resource_metrics(kubelet: &Kubelet) -> String {
    let list = containers(kubelet).await;
    let (cpu_ns, total, available) = node(&*kubelet.host.resources);
    let ms = |ns: i64| ns / 1_000_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, lines: Vec<String>| {
        out.push_str(&format!(
            "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}\n"
        ));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    };
    let labels = |u: &Usage| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            u.container, u.pod.0, u.pod.1
        )
    };
    family(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        list.iter()
            .map(|u| {
                format!(
                    "container_cpu_usage_seconds_total{{{}}} {} {}",
                    labels(u),
                    u.cpu_ns as f64 / 1e9,
                    ms(u.at_ns)
                )
            })
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
        list.iter()
            .map(|u| {
                format!(
                    "container_memory_working_set_bytes{{{}}} {} {}",
                    labels(u),
                    u.working_set,
                    ms(u.at_ns)
                )
            })
            .collect(),
    );
    family(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        vec![format!(
            "node_cpu_usage_seconds_total {} {now_ms}",
            cpu_ns as f64 / 1e9
        )],
    );
    family(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
        vec![format!(
            "node_memory_working_set_bytes {} {now_ms}",
            total - available.min(total)
        )],
    );
    family(
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        vec!["scrape_error 0".into()],
    );
    out
}
