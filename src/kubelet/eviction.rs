//! Node pressure and eviction, as upstream's eviction manager with hard thresholds
//! (`--eviction-hard`, upstream's defaults `memory.available<100Mi,
//! nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%`): every 10 s the
//! node's signals are observed; a signal below its threshold puts the node under
//! MemoryPressure or DiskPressure (its conditions say so), and one pod is evicted per
//! round in upstream's order — pods using more than they requested first, then lower
//! priority, then the larger use above the request. Critical pods (priority at or
//! above system-cluster-critical) are never evicted.

use super::Kubelet;
use crate::api::quantity;
use crate::host::Resources;
use k8s_cri::v1::ListContainerStatsRequest;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What upstream calls an eviction signal.
pub use crate::config::eviction::{Amount, Signal, Thresholds};

/// One observation of a signal: available and capacity.
pub type Observed = HashMap<Signal, (f64, f64)>;

/// The signals under their thresholds: (signal, threshold as written, available).
pub fn pressures(thresholds: &Thresholds, seen: &Observed) -> Vec<(Signal, String, f64)> {
    let mut out = Vec::new();
    for (signal, amount) in &thresholds.0 {
        let Some((available, capacity)) = seen.get(signal) else {
            continue;
        };
        let (limit, shown) = match amount {
            Amount::Quantity(q, text) => (*q, text.clone()),
            Amount::Percent(p) => (capacity * p / 100.0, format!("{p}%")),
        };
        if *available < limit {
            out.push((*signal, shown, *available));
        }
    }
    out
}

/// A pod as eviction ranks it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub key: String,
    pub priority: i64,
    /// Use of the resource under pressure, and what the pod requested of it.
    pub usage: f64,
    pub request: f64,
}

/// Upstream's order: exceeding requests first, then lower priority, then the larger
/// use above the request.
pub fn rank(mut pods: Vec<Candidate>) -> Vec<Candidate> {
    pods.sort_by(|a, b| {
        let over = |c: &Candidate| c.usage > c.request;
        over(b)
            .cmp(&over(a))
            .then(a.priority.cmp(&b.priority))
            .then((b.usage - b.request).total_cmp(&(a.usage - a.request)))
    });
    pods
}

/// The priority of system-cluster-critical: pods at or above it are never evicted.
const CRITICAL: i64 = 2_000_000_000;

fn kib(v: f64) -> String {
    format!("{}Ki", (v / 1024.0).round() as i64)
}

/// The node's signals now.
pub fn observe(host: &dyn Resources, nodefs: &Path, imagefs: &Path) -> Observed {
    let mut seen = Observed::new();
    if let Some(memory) = host.memory() {
        seen.insert(Signal::MemoryAvailable, memory);
    }
    if let Some(v) = host.filesystem(nodefs, false) {
        seen.insert(Signal::NodefsAvailable, v);
    }
    if let Some(v) = host.filesystem(nodefs, true) {
        seen.insert(Signal::NodefsInodesFree, v);
    }
    if let Some(v) = host.filesystem(imagefs, false) {
        seen.insert(Signal::ImagefsAvailable, v);
    }
    seen
}

/// Which node conditions hold: (memory, disk).
pub fn conditions(under: &[(Signal, String, f64)]) -> (bool, bool) {
    (
        under.iter().any(|(s, ..)| *s == Signal::MemoryAvailable),
        under.iter().any(|(s, ..)| *s != Signal::MemoryAvailable),
    )
}

/// Per pod uid: memory working set and writable-layer bytes, from CRI stats.
async fn usage(kubelet: &Kubelet) -> HashMap<String, (f64, f64)> {
    let mut out: HashMap<String, (f64, f64)> = HashMap::new();
    let Ok(stats) = kubelet
        .cri()
        .runtime
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
    else {
        return out;
    };
    for s in stats.into_inner().stats {
        let Some(attrs) = &s.attributes else { continue };
        let Some(uid) = attrs.labels.get(super::spec::POD_UID) else {
            continue;
        };
        let memory = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0.0, |v| v.value as f64);
        let disk = s
            .writable_layer
            .as_ref()
            .and_then(|w| w.used_bytes.as_ref())
            .map_or(0.0, |v| v.value as f64);
        let e = out.entry(uid.clone()).or_default();
        e.0 += memory;
        e.1 += disk;
    }
    out
}

fn requested(pod: &Value, resource: &str) -> f64 {
    super::spec::containers(pod)
        .filter_map(|c| quantity::of(&c["resources"]["requests"][resource]))
        .sum()
}

/// Observes, reports pressure, and evicts one pod per round while under pressure;
/// `pressure` receives (memory, disk).
pub async fn run(
    kubelet: Arc<Kubelet>,
    thresholds: Thresholds,
    pressure: impl Fn(bool, bool) + Send,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        round(&kubelet, &thresholds, &pressure).await;
    }
}

/// One round: the signals now, the node's conditions, and at most one eviction; the
/// pod evicted, if any.
pub async fn round(
    kubelet: &Arc<Kubelet>,
    thresholds: &Thresholds,
    pressure: &(impl Fn(bool, bool) + Send),
) -> Option<String> {
    let seen = {
        let k = kubelet.clone();
        tokio::task::spawn_blocking(move || {
            observe(
                &*k.host.resources,
                &k.settings.root_dir,
                &k.settings.image_dir,
            )
        })
        .await
        .unwrap_or_default()
    };
    let under = pressures(thresholds, &seen);
    let (memory, disk) = conditions(&under);
    pressure(memory, disk);
    let (signal, threshold, available) = under.first().cloned()?;
    let used = usage(kubelet).await;
    let resource = signal.resource();
    let candidates: Vec<Candidate> = kubelet
        .pods
        .list(None)
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|p| p["spec"]["priority"].as_i64().unwrap_or(0) < CRITICAL)
        .map(|p| {
            let uid = p["metadata"]["uid"].as_str().unwrap_or("");
            let (mem, disk) = used.get(uid).copied().unwrap_or_default();
            Candidate {
                key: super::pod_key(p),
                priority: p["spec"]["priority"].as_i64().unwrap_or(0),
                usage: if resource == "memory" { mem } else { disk },
                request: requested(p, resource),
            }
        })
        .collect();
    let victim = rank(candidates).into_iter().next()?;
    let pod = kubelet.pods.get(&victim.key)?;
    let message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {threshold}, available: {}. ",
        kib(available)
    );
    tracing::warn!(pod = %victim.key, signal = signal.name(), "evicting: {message}");
    kubelet.evict(&pod, &message).await;
    Some(victim.key)
}

impl Kubelet {
    /// Fails `pod` as evicted (its worker then stops its containers) and says why.
    pub async fn evict(&self, pod: &Value, message: &str) {
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        super::lock(&self.evicted).insert(uid);
        let now = crate::api::meta::now_rfc3339();
        let mut conditions: Vec<Value> = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "DisruptionTarget")
            .collect();
        conditions.push(
            json!({"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
            "message": message, "lastProbeTime": null, "lastTransitionTime": now}),
        );
        let patch = json!({"status": {"phase": "Failed", "reason": "Evicted", "message": message, "conditions": conditions}});
        let path = format!("{}/status", super::pod_path(pod));
        if let Err(e) = self.client.patch(&path, &patch).await {
            tracing::warn!(pod = %super::pod_key(pod), error = %e, "cannot mark the pod evicted");
        }
        self.event(pod, true, "Evicted", message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_judge_observations() {
        let t = Thresholds::parse(Thresholds::DEFAULT).unwrap();
        assert_eq!(t.0.len(), 4);
        assert!(Thresholds::parse("memory.available>1Gi").is_err());
        assert!(
            Thresholds::parse("cpu.available<1")
                .unwrap_err()
                .to_string()
                .contains("unknown signal")
        );
        assert!(Thresholds::parse("nodefs.available<110%").is_err());
        let mut seen = Observed::new();
        seen.insert(Signal::MemoryAvailable, (50.0 * 1024.0 * 1024.0, 8e9));
        seen.insert(Signal::NodefsAvailable, (50e9, 100e9));
        seen.insert(Signal::ImagefsAvailable, (10e9, 100e9));
        let under = pressures(&t, &seen);
        let names: Vec<&str> = under.iter().map(|(s, ..)| s.name()).collect();
        assert_eq!(names, ["memory.available", "imagefs.available"]);
        assert_eq!(conditions(&under), (true, true));
        assert_eq!(under[0].1, "100Mi");
    }

    #[test]
    fn pods_over_their_requests_and_of_lower_priority_go_first() {
        let c = |key: &str, priority, usage, request| Candidate {
            key: key.into(),
            priority,
            usage,
            request,
        };
        let order: Vec<String> = rank(vec![
            c("within-low", 0, 10.0, 100.0),
            c("over-high", 1000, 200.0, 100.0),
            c("over-low-small", 0, 110.0, 100.0),
            c("over-low-big", 0, 900.0, 100.0),
        ])
        .into_iter()
        .map(|c| c.key)
        .collect();
        assert_eq!(
            order,
            ["over-low-big", "over-low-small", "over-high", "within-low"]
        );
    }
}
