//! ResourceQuota and LimitRange semantics without I/O, as upstream's quota evaluators
//! and LimitRanger admission plugin: what an object uses of a quota, how usage is
//! written, and the defaults and bounds a LimitRange puts on a pod.

use super::quantity;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Resource name → amount in base units (cores, bytes, objects).
pub type Usage = BTreeMap<String, f64>;

/// A pod that has finished (Succeeded or Failed) uses no compute quota.
pub fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn list_of(c: &Value, which: &str) -> BTreeMap<String, f64> {
    c["resources"][which]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), quantity::of(v)?)))
        .collect()
}

/// A pod's requests or limits: the sum over its containers, but at least what its
/// largest init container asks (init containers run one at a time).
fn pod_list(pod: &Value, which: &str) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for (k, v) in list_of(c, which) {
            *sum.entry(k).or_default() += v;
        }
    }
    for c in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (k, v) in list_of(c, which) {
            let e = sum.entry(k).or_default();
            *e = e.max(v);
        }
    }
    sum
}

/// What `obj`, an object of `plural` in `group`, uses of a quota.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    // object counts track everything stored, finished pods included
    u.insert(count, 1.0);
    match (group, plural) {
        ("", "pods") => {
            if terminal(obj) {
                return u;
            }
            u.insert("pods".into(), 1.0);
            for (k, v) in pod_list(obj, "requests") {
                if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    u.insert(k.clone(), v);
                }
                u.insert(format!("requests.{k}"), v);
            }
            for (k, v) in pod_list(obj, "limits") {
                u.insert(format!("limits.{k}"), v);
            }
        }
        ("", "services") => {
            u.insert("services".into(), 1.0);
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as f64;
            let kind = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let (node_ports, balancers) = match kind {
                "NodePort" => (ports, 0.0),
                "LoadBalancer" => (ports, 1.0),
                _ => (0.0, 0.0),
            };
            u.insert("services.nodeports".into(), node_ports);
            u.insert("services.loadbalancers".into(), balancers);
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), 1.0);
            if let Some(s) = quantity::of(&obj["spec"]["resources"]["requests"]["storage"]) {
                u.insert("requests.storage".into(), s);
            }
        }
        ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
            u.insert(plural.to_string(), 1.0);
        }
        _ => {}
    }
    u
}

/// Whether usage of `key` comes from objects of `plural` in `group` (so a quota with
/// this key needs those objects counted).
pub fn tracks(key: &str, group: &str, plural: &str) -> bool {
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    key == count
        || match (group, plural) {
            ("", "pods") => {
                matches!(key, "pods" | "cpu" | "memory" | "ephemeral-storage")
                    || (key.starts_with("requests.") || key.starts_with("limits."))
                        && key != "requests.storage"
            }
            ("", "services") => {
                matches!(
                    key,
                    "services" | "services.nodeports" | "services.loadbalancers"
                )
            }
            ("", "persistentvolumeclaims") => {
                matches!(key, "persistentvolumeclaims" | "requests.storage")
            }
            ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
                key == plural
            }
            _ => false,
        }
}

/// An amount as a quantity string: millicores when fractional, binary or decimal
/// suffixes for bytes (`256Mi`, `1G`), plain integers otherwise.
pub fn format(key: &str, value: f64) -> String {
    let bytes = key.contains("memory") || key.contains("storage");
    if (value - value.round()).abs() > 1e-9 {
        return format!("{}m", (value * 1000.0).round() as i64);
    }
    let v = value.round() as i64;
    if bytes && v != 0 {
        for (suffix, unit) in [
            ("Ei", 1i64 << 60),
            ("Pi", 1 << 50),
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
        for (suffix, unit) in [
            ("E", 1_000_000_000_000_000_000i64),
            ("P", 1_000_000_000_000_000),
            ("T", 1_000_000_000_000),
            ("G", 1_000_000_000),
            ("M", 1_000_000),
            ("k", 1_000),
        ] {
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    v.to_string()
}

/// `k=v,k=v` in name order, as upstream prints resource lists in quota errors.
pub fn pretty(list: &BTreeMap<String, String>) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The compute resources a quota makes every container state (upstream's backward
/// compatible "validation set").
const MUST_STATE: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The quota keys among `hard` that some container of `pod` does not state: the
/// "must specify" of upstream's pod evaluator.
pub fn missing(pod: &Value, hard: &Map<String, Value>) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let (req, lim) = (list_of(&c, "requests"), list_of(&c, "limits"));
        for key in MUST_STATE.iter().filter(|k| hard.contains_key(**k)) {
            let stated = match key.split_once('.') {
                Some(("requests", r)) => req.contains_key(r),
                Some(("limits", r)) => lim.contains_key(r),
                _ => req.contains_key(*key),
            };
            if !stated {
                out.insert(key.to_string());
            }
        }
    }
    out.into_iter().collect()
}

fn container_items(ranges: &[Value], kind: &str) -> Vec<Map<String, Value>> {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"] == kind)
        .filter_map(|i| i.as_object().cloned())
        .collect()
}

/// Sets the Container defaults of `ranges` on every container of `pod` that states
/// no request or limit of its own; returns upstream's `kubernetes.io/limit-ranger`
/// annotation text when it set anything.
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> Option<String> {
    let items = container_items(ranges, "Container");
    let mut said = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers {
            let name = c["name"].as_str().unwrap_or("").to_string();
            for (field, from, word) in [
                ("requests", "defaultRequest", "request"),
                ("limits", "default", "limit"),
            ] {
                let mut set = Vec::new();
                for item in &items {
                    for (k, v) in item
                        .get(from)
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let resources = c
                            .as_object_mut()
                            .map(|m| m.entry("resources").or_insert_with(|| json!({})));
                        let Some(target) = resources
                            .and_then(Value::as_object_mut)
                            .map(|r| r.entry(field).or_insert_with(|| json!({})))
                            .and_then(Value::as_object_mut)
                        else {
                            continue;
                        };
                        if !target.contains_key(k) {
                            target.insert(k.clone(), v.clone());
                            set.push(k.clone());
                        }
                    }
                }
                if !set.is_empty() {
                    said.push(format!(
                        "{} {word} for {} {name}",
                        set.join(", "),
                        "container"
                    ));
                }
            }
        }
    }
    (!said.is_empty()).then(|| format!("LimitRanger plugin set: {}", said.join("; ")))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One item's min, max and maxLimitRequestRatio against requests and limits, in
/// upstream's words; `kind` is `Container` or `Pod`.
fn check(
    kind: &str,
    item: &Map<String, Value>,
    req: &Map<String, Value>,
    lim: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    let amount = |m: &Map<String, Value>, k: &str| m.get(k).and_then(quantity::of);
    for (k, enforced) in item
        .get("min")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let e = quantity::of(enforced).unwrap_or(0.0);
        let e_text = text(enforced);
        match amount(req, k) {
            None => out.push(format!(
                "minimum {k} usage per {kind} is {e_text}.  No request is specified"
            )),
            Some(r) if r < e => out.push(format!(
                "minimum {k} usage per {kind} is {e_text}, but request is {}",
                text(&req[k])
            )),
            _ => {
                if amount(lim, k).is_some_and(|l| l < e) {
                    out.push(format!(
                        "minimum {k} usage per {kind} is {e_text}, but limit is {}",
                        text(&lim[k])
                    ));
                }
            }
        }
    }
    for (k, enforced) in item
        .get("max")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let e = quantity::of(enforced).unwrap_or(0.0);
        let e_text = text(enforced);
        match amount(lim, k) {
            None => out.push(format!(
                "maximum {k} usage per {kind} is {e_text}.  No limit is specified"
            )),
            Some(l) if l > e => out.push(format!(
                "maximum {k} usage per {kind} is {e_text}, but limit is {}",
                text(&lim[k])
            )),
            _ => {
                if amount(req, k).is_some_and(|r| r > e) {
                    out.push(format!(
                        "maximum {k} usage per {kind} is {e_text}, but request is {}",
                        text(&req[k])
                    ));
                }
            }
        }
    }
    let ratios = item.get("maxLimitRequestRatio").and_then(Value::as_object);
    for (k, enforced) in ratios.into_iter().flatten() {
        let e_text = text(enforced);
        let (r, l) = (amount(req, k).unwrap_or(0.0), amount(lim, k).unwrap_or(0.0));
        if r == 0.0 {
            out.push(format!("{k} max limit to request ratio per {kind} is {e_text}, but no request is specified or request is 0"));
        } else if l == 0.0 {
            out.push(format!("{k} max limit to request ratio per {kind} is {e_text}, but no limit is specified or limit is 0"));
        } else if l / r > quantity::of(enforced).unwrap_or(f64::INFINITY) + 1e-9 {
            out.push(format!(
                "{k} max limit to request ratio per {kind} is {e_text}, but provided ratio is {:.6}",
                l / r
            ));
        }
    }
}

/// Everything about `pod` that the Container and Pod items of `ranges` forbid.
pub fn violations(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let resources = |c: &Value, which: &str| {
        c["resources"][which]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    for item in container_items(ranges, "Container") {
        let containers = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod["spec"][*k].as_array().cloned().unwrap_or_default());
        for c in containers {
            check(
                "Container",
                &item,
                &resources(&c, "requests"),
                &resources(&c, "limits"),
                &mut out,
            );
        }
    }
    let as_map = |l: BTreeMap<String, f64>| -> Map<String, Value> {
        l.into_iter()
            .map(|(k, v)| {
                let s = format(&k, v);
                (k, json!(s))
            })
            .collect()
    };
    for item in container_items(ranges, "Pod") {
        check(
            "Pod",
            &item,
            &as_map(pod_list(pod, "requests")),
            &as_map(pod_list(pod, "limits")),
            &mut out,
        );
    }
    out
}

/// Joins errors as upstream's aggregate does: one alone, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}, "status": {"phase": "Pending"}})
    }

    #[test]
    fn pod_usage_sums_containers_and_counts_finished_pods_as_objects_only() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
        ]));
        let u = usage("", "pods", &p);
        assert_eq!(u["pods"], 1.0);
        assert_eq!(u["count/pods"], 1.0);
        assert!((u["requests.cpu"] - 0.3).abs() < 1e-9 && (u["cpu"] - 0.3).abs() < 1e-9);
        assert_eq!(u["requests.memory"], 64.0 * 1024.0 * 1024.0);
        assert_eq!(u["limits.cpu"], 1.0);
        let mut done = p.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            usage("", "pods", &done).into_iter().collect::<Vec<_>>(),
            [("count/pods".to_string(), 1.0)]
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc);
        assert_eq!((u["services"], u["services.nodeports"]), (1.0, 2.0));
        assert_eq!(
            usage("apps", "deployments", &svc)["count/deployments.apps"],
            1.0
        );
    }

    #[test]
    fn amounts_print_as_quantities() {
        assert_eq!(format("requests.cpu", 0.3), "300m");
        assert_eq!(format("requests.cpu", 2.0), "2");
        assert_eq!(format("requests.memory", 256.0 * 1024.0 * 1024.0), "256Mi");
        assert_eq!(format("limits.memory", 1e9), "1G");
        assert_eq!(format("pods", 3.0), "3");
        assert_eq!(format("requests.memory", 0.0), "0");
    }

    #[test]
    fn a_quota_on_compute_wants_every_container_to_state_it() {
        let hard = json!({"requests.cpu": "1", "limits.memory": "1Gi", "pods": "5"});
        let p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        assert_eq!(missing(&p, hard.as_object().unwrap()), ["limits.memory"]);
    }

    #[test]
    fn limit_ranges_default_then_bound_containers() {
        // as stored: defaulting has filled defaultRequest from default
        let mut range = json!({"spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m"}, "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"}}]}});
        crate::api::defaults::apply("LimitRange", &mut range);
        assert_eq!(
            range["spec"]["limits"][0]["default"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert_eq!(
            range["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        let mut p = pod(json!([{"name": "web", "resources": {"requests": {"cpu": "200m"}}}]));
        let said = apply_defaults(&mut p, std::slice::from_ref(&range)).unwrap();
        assert_eq!(
            said,
            "LimitRanger plugin set: memory request for container web; cpu, memory limit for container web"
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "200m", "memory": "1Gi"})
        );
        assert!(violations(&p, std::slice::from_ref(&range)).is_empty());
        let too_big = pod(
            json!([{"name": "x", "resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "2", "memory": "1Gi"}}}]),
        );
        assert_eq!(
            aggregate(&violations(&too_big, std::slice::from_ref(&range))),
            "[minimum cpu usage per Container is 100m, but request is 50m, maximum cpu usage per Container is 1, but limit is 2]"
        );
        let ratio =
            json!({"spec": {"limits": [{"type": "Pod", "maxLimitRequestRatio": {"cpu": "2"}}]}});
        let p = pod(
            json!([{"name": "x", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}}]),
        );
        assert_eq!(
            violations(&p, &[ratio]),
            ["cpu max limit to request ratio per Pod is 2, but provided ratio is 4.000000"]
        );
    }
}
