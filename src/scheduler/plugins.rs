//! Filters and scores, each a small function with upstream's failure reason.

use crate::api::quantity;
use serde_json::Value;
use std::sync::Arc;

/// A node and the pods placed on it.
pub struct NodeInfo {
    node: Arc<Value>,
    pods: Vec<Arc<Value>>,
    requested: Resources,
}

/// CPU (cores), memory (bytes) and pod count.
#[derive(Clone, Copy, Default, Debug)]
pub struct Resources {
    pub cpu: f64,
    pub memory: f64,
    pub pods: f64,
}

/// What a pod asks for: the larger of its containers' sum and any init container.
pub fn requests(pod: &Value) -> Resources {
    let sum = |list: &Value| {
        let mut r = Resources::default();
        for c in list.as_array().into_iter().flatten() {
            r.cpu += quantity::of(&c["resources"]["requests"]["cpu"]).unwrap_or(0.0);
            r.memory += quantity::of(&c["resources"]["requests"]["memory"]).unwrap_or(0.0);
        }
        r
    };
    let mut r = sum(&pod["spec"]["containers"]);
    for c in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        r.cpu = r
            .cpu
            .max(quantity::of(&c["resources"]["requests"]["cpu"]).unwrap_or(0.0));
        r.memory = r
            .memory
            .max(quantity::of(&c["resources"]["requests"]["memory"]).unwrap_or(0.0));
    }
    r.pods = 1.0;
    r
}

impl NodeInfo {
    pub fn new(node: Arc<Value>, pods: Vec<Arc<Value>>) -> NodeInfo {
        let mut requested = Resources::default();
        for p in &pods {
            let r = requests(p);
            requested.cpu += r.cpu;
            requested.memory += r.memory;
            requested.pods += 1.0;
        }
        NodeInfo {
            node,
            pods,
            requested,
        }
    }

    /// Counts `pod` as placed here (the scheduler's own decisions within a batch).
    pub fn add(&mut self, pod: Arc<Value>) {
        let r = requests(&pod);
        self.requested.cpu += r.cpu;
        self.requested.memory += r.memory;
        self.requested.pods += 1.0;
        self.pods.push(pod);
    }

    pub fn name(&self) -> &str {
        self.node["metadata"]["name"].as_str().unwrap_or("")
    }

    fn allocatable(&self) -> Resources {
        let a = &self.node["status"]["allocatable"];
        Resources {
            cpu: quantity::of(&a["cpu"]).unwrap_or(0.0),
            memory: quantity::of(&a["memory"]).unwrap_or(0.0),
            pods: quantity::of(&a["pods"]).unwrap_or(110.0),
        }
    }
}

/// A filter's verdict.
pub enum Verdict {
    Fits,
    /// Upstream's reasons, e.g. `Insufficient cpu`.
    No(Vec<String>),
}

fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let key_ok = match t["key"].as_str().unwrap_or("") {
            "" => t["operator"] == "Exists",
            k => k == taint["key"].as_str().unwrap_or(""),
        };
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || e == taint["effect"].as_str().unwrap_or(""));
        key_ok && value_ok && effect_ok
    })
}

fn expression_matches(expr: &Value, labels: &Value) -> bool {
    let key = expr["key"].as_str().unwrap_or("");
    let have = labels[key].as_str();
    let values: Vec<&str> = expr["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let num = |s: Option<&str>| s.and_then(|v| v.parse::<i64>().ok());
    match expr["operator"].as_str().unwrap_or("") {
        "In" => have.is_some_and(|h| values.contains(&h)),
        "NotIn" => have.is_none_or(|h| !values.contains(&h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => matches!((num(have), num(values.first().copied())), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((num(have), num(values.first().copied())), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

fn term_matches(term: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let name_fields = serde_json::json!({"metadata.name": node["metadata"]["name"]});
    let exprs_ok = term["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| expression_matches(e, labels));
    let fields_ok = term["matchFields"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| expression_matches(e, &name_fields));
    let empty = term["matchExpressions"]
        .as_array()
        .is_none_or(Vec::is_empty)
        && term["matchFields"].as_array().is_none_or(Vec::is_empty);
    !empty && exprs_ok && fields_ok
}

fn selector_matches(pod: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k.as_str()] == *v);
    let required = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let affinity_ok = required
        .as_array()
        .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

fn host_ports(pod: &Value) -> Vec<(i64, String)> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let hp = p["hostPort"].as_i64().filter(|h| *h > 0)?;
            Some((hp, p["protocol"].as_str().unwrap_or("TCP").to_string()))
        })
        .collect()
}

/// Every filter at once, so the message can count each reason.
pub fn filter(pod: &Value, info: &NodeInfo) -> Verdict {
    let node = &info.node;
    let tolerations = &pod["spec"]["tolerations"];
    let mut why = Vec::new();
    if node["spec"]["unschedulable"] == true
        && !tolerates(
            tolerations,
            &serde_json::json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        why.push("node(s) were unschedulable".to_string());
    }
    for taint in node["spec"]["taints"].as_array().into_iter().flatten() {
        let effect = taint["effect"].as_str().unwrap_or("");
        if (effect == "NoSchedule" || effect == "NoExecute") && !tolerates(tolerations, taint) {
            why.push(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint["key"].as_str().unwrap_or(""),
                taint["value"].as_str().unwrap_or("")
            ));
            break;
        }
    }
    if !selector_matches(pod, node) {
        why.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    let wanted = host_ports(pod);
    if !wanted.is_empty()
        && info
            .pods
            .iter()
            .any(|p| host_ports(p).iter().any(|hp| wanted.contains(hp)))
    {
        why.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    let (req, alloc) = (requests(pod), info.allocatable());
    if info.requested.pods + 1.0 > alloc.pods {
        why.push("Too many pods".to_string());
    }
    if req.cpu > 0.0 && info.requested.cpu + req.cpu > alloc.cpu + 1e-9 {
        why.push("Insufficient cpu".to_string());
    }
    if req.memory > 0.0 && info.requested.memory + req.memory > alloc.memory {
        why.push("Insufficient memory".to_string());
    }
    if why.is_empty() {
        Verdict::Fits
    } else {
        Verdict::No(why)
    }
}

/// Least allocated plus balanced allocation (pods without requests count as upstream's
/// defaults, 100m and 200Mi), plus preferred node affinity weights.
pub fn score(pod: &Value, info: &NodeInfo) -> i64 {
    let alloc = info.allocatable();
    let nonzero = |r: Resources| Resources {
        cpu: if r.cpu > 0.0 { r.cpu } else { 0.1 },
        memory: if r.memory > 0.0 {
            r.memory
        } else {
            200.0 * 1024.0 * 1024.0
        },
        pods: r.pods,
    };
    let mut used = Resources::default();
    for p in &info.pods {
        let r = nonzero(requests(p));
        used.cpu += r.cpu;
        used.memory += r.memory;
    }
    let me = nonzero(requests(pod));
    let frac = |u: f64, a: f64| if a <= 0.0 { 1.0 } else { ((u) / a).min(1.0) };
    let (fc, fm) = (
        frac(used.cpu + me.cpu, alloc.cpu),
        frac(used.memory + me.memory, alloc.memory),
    );
    let least = ((1.0 - fc) + (1.0 - fm)) * 50.0;
    let balanced = (1.0 - (fc - fm).abs()) * 100.0;
    let preferred: i64 =
        pod["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| term_matches(&p["preference"], &info.node))
            .map(|p| p["weight"].as_i64().unwrap_or(0))
            .sum();
    (least + balanced) as i64 + preferred
}

/// What a node runs, for the filters that look across nodes.
impl NodeInfo {
    pub fn pods(&self) -> &[Arc<Value>] {
        &self.pods
    }

    pub fn node(&self) -> &Value {
        &self.node
    }
}

fn term_selects(term: &Value, owner_ns: &str, pod: &Value) -> bool {
    let namespaces: Vec<&str> = term["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let ns_ok = if namespaces.is_empty() && term["namespaceSelector"].is_null() {
        ns == owner_ns
    } else {
        namespaces.contains(&ns)
            || term["namespaceSelector"]
                .as_object()
                .is_some_and(|m| m.is_empty())
    };
    ns_ok
        && crate::api::selector::LabelSelector::from_object(&term["labelSelector"])
            .is_ok_and(|s| s.matches(pod["metadata"]["labels"].as_object()))
}

/// Whether some pod `term` selects runs in the same topology domain as `node`.
fn domain_has(term: &Value, owner_ns: &str, node: &Value, all: &[NodeInfo]) -> bool {
    let key = term["topologyKey"].as_str().unwrap_or("");
    let Some(value) = node["metadata"]["labels"][key].as_str() else {
        return false;
    };
    all.iter()
        .filter(|n| n.node["metadata"]["labels"][key].as_str() == Some(value))
        .any(|n| n.pods.iter().any(|p| term_selects(term, owner_ns, p)))
}

/// The filters that look beyond one node: required pod affinity and anti-affinity
/// (the incoming pod's and, for anti-affinity, the running pods'), and topology
/// spread constraints with `whenUnsatisfiable: DoNotSchedule`.
/// The running pods with required anti-affinity terms, and their nodes: computed once
/// per scheduling decision (most pods have none).
pub fn anti_affine(all: &[NodeInfo]) -> Vec<(&NodeInfo, &Arc<Value>)> {
    all.iter()
        .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
        .filter(|(_, p)| {
            p["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .is_some_and(|t| !t.is_empty())
        })
        .collect()
}

pub fn filter_cluster(
    pod: &Value,
    info: &NodeInfo,
    all: &[NodeInfo],
    anti: &[(&NodeInfo, &Arc<Value>)],
) -> Vec<String> {
    let mut why = Vec::new();
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let node = &info.node;
    let affinity = &pod["spec"]["affinity"];
    let required = |kind: &str| -> Vec<Value> {
        affinity[kind]["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let anywhere = |term: &Value| {
        all.iter()
            .any(|n| n.pods.iter().any(|p| term_selects(term, ns, p)))
    };
    for term in required("podAffinity") {
        // the first pod of a group may start where its own term would place it
        let first_of_group = !anywhere(&term) && term_selects(&term, ns, pod);
        let has_key =
            node["metadata"]["labels"][term["topologyKey"].as_str().unwrap_or("")].is_string();
        if !(domain_has(&term, ns, node, all) || (first_of_group && has_key)) {
            why.push("node(s) didn't match pod affinity rules".to_string());
            break;
        }
    }
    if required("podAntiAffinity")
        .iter()
        .any(|t| domain_has(t, ns, node, all))
    {
        why.push("node(s) didn't match pod anti-affinity rules".to_string());
    }
    // running pods that want nothing like this pod near them
    let existing_conflict = anti.iter().any(|(n, p)| {
        p["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                let key = t["topologyKey"].as_str().unwrap_or("");
                let same = node["metadata"]["labels"][key].is_string()
                    && node["metadata"]["labels"][key] == n.node["metadata"]["labels"][key];
                same && term_selects(t, p["metadata"]["namespace"].as_str().unwrap_or(""), pod)
            })
    });
    if existing_conflict {
        why.push("node(s) didn't satisfy existing pods anti-affinity rules".to_string());
    }
    for c in pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if c["whenUnsatisfiable"] != "DoNotSchedule" {
            continue;
        }
        let key = c["topologyKey"].as_str().unwrap_or("");
        let Some(mine) = node["metadata"]["labels"][key].as_str() else {
            why.push(
                "node(s) didn't match pod topology spread constraints (missing required label)"
                    .to_string(),
            );
            continue;
        };
        let term = json_term(c, ns);
        let mut counts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for n in all {
            if let Some(v) = n.node["metadata"]["labels"][key].as_str() {
                *counts.entry(v).or_default() +=
                    n.pods.iter().filter(|p| term_selects(&term, ns, p)).count() as i64;
            }
        }
        let min = counts.values().copied().min().unwrap_or(0);
        let skew = counts.get(mine).copied().unwrap_or(0) + 1 - min;
        if skew > c["maxSkew"].as_i64().unwrap_or(1) {
            why.push("node(s) didn't match pod topology spread constraints".to_string());
        }
    }
    why
}

fn json_term(constraint: &Value, _ns: &str) -> Value {
    serde_json::json!({"labelSelector": constraint["labelSelector"], "topologyKey": constraint["topologyKey"]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, taints: Value) -> NodeInfo {
        NodeInfo::new(
            Arc::new(
                json!({"metadata": {"name": name, "labels": {"zone": "a"}}, "spec": {"taints": taints},
                             "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"}}}),
            ),
            vec![],
        )
    }

    #[test]
    fn reasons_are_counted_in_upstreams_words() {
        let pod = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}});
        let nodes = vec![
            node("a", "1", json!([])),
            node(
                "b",
                "4",
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
            ),
            node(
                "c",
                "4",
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
            ),
        ];
        assert_eq!(
            super::super::place(&pod, &nodes, 0).unwrap_err(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: db}. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        let tolerant = json!({"spec": {"containers": [{"name": "c"}], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
                                        "nodeSelector": {"zone": "a"}}});
        assert!(super::super::place(&tolerant, &nodes, 0).is_ok());
        let elsewhere =
            json!({"spec": {"containers": [{"name": "c"}], "nodeSelector": {"zone": "b"}}});
        assert!(
            super::super::place(&elsewhere, &nodes, 0)
                .unwrap_err()
                .contains("3 node(s) didn't match Pod's node affinity/selector")
        );
    }

    fn zoned(name: &str, zone: &str, pods: Vec<Value>) -> NodeInfo {
        NodeInfo::new(
            Arc::new(
                json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}},
                             "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}}),
            ),
            pods.into_iter().map(Arc::new).collect(),
        )
    }

    #[test]
    fn pod_anti_affinity_and_topology_spread_steer_pods() {
        let web = |ns: &str| json!({"metadata": {"namespace": ns, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}});
        let nodes = vec![
            zoned("a", "z1", vec![web("default"), web("default")]),
            zoned("b", "z2", vec![]),
        ];
        let apart = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
        assert_eq!(super::super::place(&apart, &nodes, 0).unwrap(), "b");
        let spread = json!({"metadata": {"namespace": "default", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                           "labelSelector": {"matchLabels": {"app": "web"}}}]}});
        assert_eq!(super::super::place(&spread, &nodes, 0).unwrap(), "b");
        let only_a = vec![zoned("a", "z1", vec![web("default")])];
        assert!(
            super::super::place(&apart, &only_a, 0)
                .unwrap_err()
                .contains("1 node(s) didn't match pod anti-affinity rules")
        );
        // affinity: with the web pods, or anywhere for the first of a group
        let near = json!({"metadata": {"namespace": "default", "labels": {"app": "cache"}}, "spec": {"containers": [{"name": "c"}],
            "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}});
        assert_eq!(super::super::place(&near, &nodes, 0).unwrap(), "a");
        let other_ns = vec![
            zoned("a", "z1", vec![web("other")]),
            zoned("b", "z2", vec![]),
        ];
        assert!(
            super::super::place(&near, &other_ns, 0)
                .unwrap_err()
                .contains("didn't match pod affinity rules")
        );
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let pod = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}});
        let busy = NodeInfo::new(
            Arc::new(
                json!({"metadata": {"name": "busy"}, "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}}}),
            ),
            vec![Arc::new(pod.clone()), Arc::new(pod.clone())],
        );
        let idle = node("idle", "4", json!([]));
        assert!(score(&pod, &idle) > score(&pod, &busy));
    }
}
