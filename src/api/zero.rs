//! Upstream's zero values: a Go field without `omitempty` is written out even when it
//! is zero (`"replicas": 0`, `"currentNumberScheduled": 0`), and clients built from the
//! OpenAPI schemas (the Python client's pydantic models) refuse an object that lacks
//! one. The fields come from the schemas' `required` lists, collected at build time
//! (`build.rs`, `ZeroShapes`); timestamps, whose zero upstream writes as `null`, and
//! int-or-string values are left alone.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The shapes as `build.rs` wrote them: immutable data embedded in the binary.
struct Shapes {
    kinds: HashMap<String, String>,
    shapes: Map<String, Value>,
}

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let doc: Value =
            serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/zero_shapes.json")))
                .unwrap_or_default();
        let kinds = doc["kinds"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let shapes = match doc.get("shapes") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        Shapes { kinds, shapes }
    })
}

/// Writes the zero value of every required field `obj` (of `group/version` `kind`)
/// lacks, in it and in the objects and list items it holds.
pub fn fill(group: &str, version: &str, kind: &str, obj: &mut Value) {
    let all = shapes();
    if let Some(component) = all.kinds.get(&format!("{group}/{version}/{kind}")) {
        fill_component(&all.shapes, component, obj);
    }
}

fn fill_component(shapes: &Map<String, Value>, component: &str, obj: &mut Value) {
    let (Some(shape), Some(map)) = (shapes.get(component), obj.as_object_mut()) else {
        return;
    };
    for (field, zero) in shape["r"].as_object().into_iter().flatten() {
        if !map.contains_key(field) {
            map.insert(field.clone(), zero.clone());
        }
    }
    for (field, child) in shape["o"].as_object().into_iter().flatten() {
        if let (Some(v), Some(c)) = (map.get_mut(field), child.as_str()) {
            fill_component(shapes, c, v);
        }
    }
    for (field, child) in shape["a"].as_object().into_iter().flatten() {
        if let (Some(Value::Array(items)), Some(c)) = (map.get_mut(field), child.as_str()) {
            items.iter_mut().for_each(|v| fill_component(shapes, c, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_get_their_required_counts_and_conditions_their_fields() {
        let mut ds = json!({"metadata": {"name": "d"}, "spec": {"selector": {}, "template": {}},
            "status": {"numberAvailable": 2, "conditions": [{"type": "X"}]}});
        fill("apps", "v1", "DaemonSet", &mut ds);
        let status = &ds["status"];
        for counter in [
            "currentNumberScheduled",
            "desiredNumberScheduled",
            "numberMisscheduled",
            "numberReady",
        ] {
            assert_eq!(status[counter], 0, "{counter}: {status}");
        }
        assert_eq!(status["numberAvailable"], 2, "what is there stays");
        assert_eq!(status["conditions"][0]["status"], "");
        assert!(
            status["conditions"][0].get("lastTransitionTime").is_none(),
            "a zero time is null upstream: left out"
        );
        let mut rc = json!({"metadata": {}, "status": {}});
        fill("", "v1", "ReplicationController", &mut rc);
        assert_eq!(rc["status"]["replicas"], 0);
        // containers' names and ports' numbers are required too
        let mut pod =
            json!({"metadata": {}, "spec": {"containers": [{"image": "i", "ports": [{}]}]}});
        fill("", "v1", "Pod", &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["name"], "");
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["containerPort"], 0);
        // nothing is made up for kinds without a schema
        let mut other = json!({"spec": {}});
        fill("example.com", "v1", "Widget", &mut other);
        assert_eq!(other, json!({"spec": {}}));
    }
}
