//! The scheduler's filters and scores, each a small function with upstream's failure
//! reason; pure, so the DaemonSet controller asks the same questions of a node
//! (upstream's component-helpers/scheduling).

use crate::api::quantity;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A node and the pods placed on it, with their sums kept as pods come and go.
#[derive(Clone)]
pub struct NodeInfo {
    node: Arc<Value>,
    /// false while the node object is gone (or not seen yet) but pods still name it
    present: bool,
    pods: HashMap<String, Arc<Value>>,
    requested: Resources,
    /// requests with upstream's defaults for pods that ask for nothing (scoring)
    nonzero: Resources,
    allocatable: Resources,
    /// pods here with required anti-affinity terms
    anti: usize,
}

/// CPU (millicores), memory (bytes) and pod count; integers, so that adding and
/// removing a pod leaves no rounding behind.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    fn plus(self, o: Resources, sign: i64) -> Resources {
        Resources {
            cpu: self.cpu + sign * o.cpu,
            memory: self.memory + sign * o.memory,
            pods: self.pods + sign * o.pods,
        }
    }

    /// Upstream's defaults for scoring pods without requests: 100m and 200Mi.
    fn nonzero(self) -> Resources {
        Resources {
            cpu: if self.cpu > 0 { self.cpu } else { 100 },
            memory: if self.memory > 0 {
                self.memory
            } else {
                200 * 1024 * 1024
            },
            pods: self.pods,
        }
    }
}

fn milli(v: &Value) -> i64 {
    quantity::of(v).map_or(0, |c| (c * 1000.0).round() as i64)
}

fn bytes(v: &Value) -> i64 {
    quantity::of(v).map_or(0, |b| b.round() as i64)
}

/// What a pod asks for: the larger of its containers' sum and any init container.
pub fn requests(pod: &Value) -> Resources {
    let mut r = Resources {
        pods: 1,
        ..Resources::default()
    };
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        r.cpu += milli(&c["resources"]["requests"]["cpu"]);
        r.memory += bytes(&c["resources"]["requests"]["memory"]);
    }
    for c in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        r.cpu = r.cpu.max(milli(&c["resources"]["requests"]["cpu"]));
        r.memory = r.memory.max(bytes(&c["resources"]["requests"]["memory"]));
    }
    r
}

fn has_required_anti(pod: &Value) -> bool {
    pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .is_some_and(|t| !t.is_empty())
}

impl NodeInfo {
    pub fn new(node: Arc<Value>, pods: Vec<Arc<Value>>) -> NodeInfo {
        let mut info = NodeInfo::absent("");
        info.set_node(node);
        for (i, p) in pods.into_iter().enumerate() {
            info.insert(i.to_string(), p);
        }
        info
    }

    /// A node known only from the pods that name it.
    pub fn absent(name: &str) -> NodeInfo {
        NodeInfo {
            node: Arc::new(serde_json::json!({"metadata": {"name": name}})),
            present: false,
            pods: HashMap::new(),
            requested: Resources::default(),
            nonzero: Resources::default(),
            allocatable: Resources::default(),
            anti: 0,
        }
    }

    pub fn set_node(&mut self, node: Arc<Value>) {
        let a = &node["status"]["allocatable"];
        self.allocatable = Resources {
            cpu: milli(&a["cpu"]),
            memory: bytes(&a["memory"]),
            pods: quantity::of(&a["pods"]).map_or(110, |p| p as i64),
        };
        self.node = node;
        self.present = true;
    }

    /// The node object went; its pods stay counted until they go too.
    pub fn clear_node(&mut self) {
        let name = self.name().to_string();
        let pods = std::mem::take(&mut self.pods);
        *self = NodeInfo::absent(&name);
        for (k, p) in pods {
            self.insert(k, p);
        }
    }

    pub fn is_present(&self) -> bool {
        self.present
    }

    /// Counts `pod` (under `key`) as placed here, replacing what `key` was.
    pub fn insert(&mut self, key: String, pod: Arc<Value>) {
        self.remove(&key);
        let r = requests(&pod);
        self.requested = self.requested.plus(r, 1);
        self.nonzero = self.nonzero.plus(r.nonzero(), 1);
        self.anti += usize::from(has_required_anti(&pod));
        self.pods.insert(key, pod);
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            let r = requests(&old);
            self.requested = self.requested.plus(r, -1);
            self.nonzero = self.nonzero.plus(r.nonzero(), -1);
            self.anti -= usize::from(has_required_anti(&old));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn name(&self) -> &str {
        self.node["metadata"]["name"].as_str().unwrap_or("")
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<Value>> {
        self.pods.values()
    }

    /// The pods here with the keys they are counted under.
    pub fn pod_entries(&self) -> impl Iterator<Item = (&String, &Arc<Value>)> {
        self.pods.iter()
    }

    pub fn node(&self) -> &Value {
        &self.node
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node["metadata"]["labels"][key].as_str()
    }

    /// The running pods with required anti-affinity terms.
    pub fn anti_affine(&self) -> impl Iterator<Item = &Arc<Value>> {
        self.pods
            .values()
            .filter(move |p| self.anti > 0 && has_required_anti(p))
    }
}

/// A filter's verdict.
pub enum Verdict {
    Fits,
    /// Upstream's reasons, e.g. `Insufficient cpu`.
    No(Vec<String>),
}

/// Whether one toleration matches `taint` (key, operator, value and effect as
/// upstream's `ToleratesTaint`); shared with the taint manager.
pub fn toleration_matches(t: &Value, taint: &Value) -> bool {
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
}

fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| toleration_matches(t, taint))
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

pub(crate) fn selector_matches(pod: &Value, node: &Value) -> bool {
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
    filter_with(pod, &Facts::of(pod), info)
}

/// What the filters and scores need of the pod itself, worked out once per pod rather
/// than once per node.
pub struct Facts {
    requests: Resources,
    host_ports: Vec<(i64, String)>,
}

impl Facts {
    pub fn of(pod: &Value) -> Facts {
        Facts {
            requests: requests(pod),
            host_ports: host_ports(pod),
        }
    }
}

pub fn filter_with(pod: &Value, facts: &Facts, info: &NodeInfo) -> Verdict {
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
    let wanted = &facts.host_ports;
    if !wanted.is_empty()
        && info
            .pods()
            .any(|p| host_ports(p).iter().any(|hp| wanted.contains(hp)))
    {
        why.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    let (req, alloc) = (facts.requests, info.allocatable);
    if info.requested.pods + 1 > alloc.pods {
        why.push("Too many pods".to_string());
    }
    if req.cpu > 0 && info.requested.cpu + req.cpu > alloc.cpu {
        why.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && info.requested.memory + req.memory > alloc.memory {
        why.push("Insufficient memory".to_string());
    }
    if why.is_empty() {
        Verdict::Fits
    } else {
        Verdict::No(why)
    }
}

/// The scores that need only the node, raw: least allocated plus balanced allocation
/// (0–200; pods without requests count as upstream's defaults, 100m and 200Mi), the
/// weights of the matching preferred node-affinity terms, and the number of
/// `PreferNoSchedule` taints the pod does not tolerate. `place` normalises the last two
/// across the feasible nodes as upstream's plugins do.
pub fn node_scores(pod: &Value, facts: &Facts, info: &NodeInfo) -> (i64, i64, i64) {
    let alloc = info.allocatable;
    let me = facts.requests.nonzero();
    let frac = |u: i64, a: i64| {
        if a <= 0 {
            1.0
        } else {
            (u as f64 / a as f64).min(1.0)
        }
    };
    let (fc, fm) = (
        frac(info.nonzero.cpu + me.cpu, alloc.cpu),
        frac(info.nonzero.memory + me.memory, alloc.memory),
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
    let untolerated = info.node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "PreferNoSchedule" && !tolerates(&pod["spec"]["tolerations"], t))
        .count() as i64;
    ((least + balanced) as i64, preferred, untolerated)
}
