//! Conversion between versions of one kind served at several group versions. Objects
//! are stored in the version they were written in; every read converts to the version
//! the client asked for. Today this is HorizontalPodAutoscaler, served as
//! `autoscaling/v2` (preferred) and `autoscaling/v1`.
//!
//! As upstream, v1 has room for one CPU utilization target only: the other v2 metrics
//! and `behavior` travel in annotations through a v1 round trip, so nothing is lost.

use super::registry::Resource;
use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// `obj` in the version of `res` (unchanged if it already is, or if the kind has one
/// version).
pub fn to_version(obj: Value, res: &Resource) -> Value {
    let want = res.group_version();
    let have = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if have == want || have.is_empty() {
        return obj;
    }
    match (res.kind, have, want.as_str()) {
        ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1") => hpa_down(obj),
        ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2") => hpa_up(obj),
        _ => obj,
    }
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations were just made an object")
}

fn hpa_down(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    let metrics = obj
        .pointer_mut("/spec/metrics")
        .map(Value::take)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let (cpu, other): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        if let Some(n) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        {
            spec.insert("targetCPUUtilizationPercentage".into(), n.clone());
        }
    }
    let behavior = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("behavior"));
    if !other.is_empty() {
        annotations(&mut obj).insert(METRICS.into(), json!(Value::Array(other).to_string()));
    }
    if let Some(b) = behavior {
        annotations(&mut obj).insert(BEHAVIOR.into(), json!(b.to_string()));
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = status.remove("currentMetrics");
        let cpu = current
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
            })
            .and_then(|m| m.pointer("/resource/current/averageUtilization").cloned());
        if let Some(n) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), n);
        }
        let conditions = status.remove("conditions");
        if let Some(c) = conditions.filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            annotations(&mut obj).insert(CONDITIONS.into(), json!(c.to_string()));
        }
    }
    obj
}

fn hpa_up(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    let mut stashed = |key: &str| -> Option<Value> {
        let a = obj.pointer_mut("/metadata/annotations")?.as_object_mut()?;
        let text = a.remove(key)?;
        serde_json::from_str(text.as_str()?).ok()
    };
    let mut metrics: Vec<Value> = stashed(METRICS)
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    let behavior = stashed(BEHAVIOR);
    let conditions = stashed(CONDITIONS);
    if obj["metadata"]["annotations"]
        .as_object()
        .is_some_and(Map::is_empty)
    {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(n) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": n}}}),
            );
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(n) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": n}}}]),
            );
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::find;

    #[test]
    fn hpa_round_trips_between_v2_and_v1_without_losing_metrics() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let obj = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
            },
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}
        });
        let down = to_version(obj.clone(), v1);
        assert_eq!(down["apiVersion"], "autoscaling/v1");
        assert_eq!(down["spec"]["targetCPUUtilizationPercentage"], 70);
        assert!(down["spec"].get("metrics").is_none());
        assert_eq!(down["status"]["currentCPUUtilizationPercentage"], 40);
        assert!(
            down["metadata"]["annotations"][METRICS]
                .as_str()
                .unwrap()
                .contains("memory")
        );
        let up = to_version(down, v2);
        assert_eq!(up["spec"], obj["spec"]);
        assert_eq!(
            up["status"]["currentMetrics"],
            obj["status"]["currentMetrics"]
        );
        assert!(up["metadata"].get("annotations").is_none());
        assert_eq!(to_version(obj.clone(), v2), obj, "same version: unchanged");
    }
}
