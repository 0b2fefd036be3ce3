//! Strategic merge patch for built-in kinds, with the directives kubectl's client-side
//! three-way apply sends: `$patch: replace|merge|delete`, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//!
//! Lists merge by the key upstream's struct tags name (`patchMergeKey`) and otherwise
//! are replaced; `merge_keys.rs` holds that knowledge.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

use super::merge_keys::{ListStrategy, list_strategy};

/// The strategy of list field `name`, telling ports apart by an element's fields.
fn strategy(name: &str, sample: Option<&Value>) -> ListStrategy {
    let hint = match sample {
        Some(s) if s.get("containerPort").is_some() => "containerPort",
        Some(_) if name == "ports" => "port",
        _ => "",
    };
    list_strategy(name, hint)
}

/// Why a strategic merge patch cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum StrategicError {
    /// A `$patch` directive other than delete, replace and merge.
    #[error("unknown patch type {0:?}")]
    PatchType(String),
    /// A list merged by key whose patch holds something other than objects.
    #[error("{list}: expected objects with merge key {key:?}")]
    NotObject {
        /// The list's field.
        list: String,
        /// Its merge key.
        key: String,
    },
    /// An element of a list merged by key without that key.
    #[error("{list}: an element lacks its merge key {key:?}")]
    NoKey {
        /// The list's field.
        list: String,
        /// Its merge key.
        key: String,
    },
}

/// Applies a strategic merge patch to `target`. Returns `None` if the patch deletes the
/// whole object (`$patch: delete` at the top).
pub fn apply(target: &Value, patch: &Value) -> Result<Option<Value>, StrategicError> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_map(t, p).map(|m| m.map(Value::Object)),
        (_, Value::Object(p)) => merge_map(&Map::new(), p).map(|m| m.map(Value::Object)),
        (_, other) => Ok(Some(other.clone())),
    }
}

/// Removes null fields at every depth.
fn drop_nulls(m: &mut Map<String, Value>) {
    m.retain(|_, v| !v.is_null());
    for v in m.values_mut() {
        match v {
            Value::Object(inner) => drop_nulls(inner),
            Value::Array(items) => {
                for i in items.iter_mut() {
                    if let Value::Object(inner) = i {
                        drop_nulls(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

fn merge_map(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, StrategicError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            // the replacement as a typed decode would leave it: a null field is unset
            // (kubectl's undo sends template metadata with `creationTimestamp: null`)
            let mut out = patch.clone();
            out.remove("$patch");
            drop_nulls(&mut out);
            return Ok(Some(out));
        }
        Some("merge") | None => {}
        Some(other) => return Err(StrategicError::PatchType(other.to_string())),
    }
    let mut out = target.clone();
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            // hashed by canonical text: linear, however long both lists are
            let remove: HashSet<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !remove.contains(&x.to_string()));
            }
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) => {
                let base = match out.get(k) {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                match merge_map(&base, pm)? {
                    Some(m) => out.insert(k.clone(), Value::Object(m)),
                    None => out.remove(k),
                };
            }
            Value::Array(pl) => {
                let base = match out.get(k) {
                    Some(Value::Array(l)) => l.clone(),
                    _ => Vec::new(),
                };
                out.insert(k.clone(), Value::Array(merge_list(k, &base, pl)?));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = out.get_mut(&field) {
            reorder(&field, list, &order);
        }
    }
    Ok(Some(out))
}

fn merge_list(name: &str, base: &[Value], patch: &[Value]) -> Result<Vec<Value>, StrategicError> {
    // a `{"$patch": "replace"}` element replaces the whole list with the rest
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .collect());
    }
    match strategy(name, patch.first().or(base.first())) {
        ListStrategy::Replace => Ok(patch.to_vec()),
        ListStrategy::Set => {
            let mut seen: HashSet<String> = base.iter().map(Value::to_string).collect();
            let mut out = base.to_vec();
            for v in patch {
                if seen.insert(v.to_string()) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::ByKey(key) => {
            // elements by merge key, hashed: one pass over each list
            let mut out: Vec<Option<Value>> = base.iter().cloned().map(Some).collect();
            let mut index: HashMap<String, usize> = HashMap::with_capacity(out.len());
            for (i, e) in base.iter().enumerate() {
                if let Some(id) = e.get(key) {
                    index.entry(id.to_string()).or_insert(i);
                }
            }
            for element in patch {
                let Value::Object(pm) = element else {
                    return Err(StrategicError::NotObject {
                        list: name.to_string(),
                        key: key.to_string(),
                    });
                };
                let id = pm
                    .get(key)
                    .ok_or_else(|| StrategicError::NoKey {
                        list: name.to_string(),
                        key: key.to_string(),
                    })?
                    .to_string();
                let pos = index.get(&id).copied();
                let delete = pm.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out[i] = None;
                        index.remove(&id);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let base = out[i]
                            .as_ref()
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default();
                        match merge_map(&base, pm)? {
                            Some(m) => out[i] = Some(Value::Object(m)),
                            None => {
                                out[i] = None;
                                index.remove(&id);
                            }
                        }
                    }
                    (None, false) => {
                        let mut fresh = pm.clone();
                        fresh.remove("$patch");
                        index.insert(id, out.len());
                        out.push(Some(Value::Object(fresh)));
                    }
                }
            }
            Ok(out.into_iter().flatten().collect())
        }
    }
}

/// `$setElementOrder`: listed elements first, in that order; the rest after.
fn reorder(name: &str, list: &mut Vec<Value>, order: &[Value]) {
    let key = match strategy(name, list.first()) {
        ListStrategy::ByKey(k) => Some(k),
        _ => None,
    };
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    // positions by identity, hashed: linear in both lists
    let mut at: HashMap<String, std::collections::VecDeque<usize>> = HashMap::new();
    for (i, e) in list.iter().enumerate() {
        if let Some(k) = id(e) {
            at.entry(k.to_string()).or_default().push_back(i);
        }
    }
    let mut taken = vec![false; list.len()];
    let mut positions = Vec::with_capacity(list.len());
    for o in order {
        let Some(want) = id(o) else { continue };
        if let Some(i) = at.get_mut(&want.to_string()).and_then(|q| q.pop_front()) {
            taken[i] = true;
            positions.push(i);
        }
    }
    positions.extend((0..list.len()).filter(|i| !taken[*i]));
    let mut slots: Vec<Option<Value>> = std::mem::take(list).into_iter().map(Some).collect();
    *list = positions
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn big_lists_merge_in_one_pass() {
        // 100 000 finalizers: a quadratic merge would take minutes (the review's
        // 3 MiB patch of short strings is 10^11 comparisons); this one is linear
        let n = 100_000;
        let fins: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
        let target = json!({"metadata": {"finalizers": fins}});
        let mut reversed = fins.clone();
        reversed.reverse();
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": fins[..n / 2],
            "$setElementOrder/finalizers": reversed,
            "finalizers": (0..n).map(|i| json!(format!("g{i}"))).collect::<Vec<_>>(),
        }});
        let out = apply(&target, &patch).unwrap().unwrap();
        let got = out["metadata"]["finalizers"].as_array().unwrap();
        assert_eq!(got.len(), n / 2 + n);
        assert_eq!(
            got[0],
            json!(format!("f{}", n - 1)),
            "the order asked for first"
        );
        assert!(!got.contains(&json!("f0")));
        // containers by name, many of them
        let containers: Vec<Value> = (0..20_000)
            .map(|i| json!({"name": format!("c{i}"), "image": "a"}))
            .collect();
        let target = json!({"spec": {"containers": containers}});
        let changes: Vec<Value> = (0..20_000)
            .map(|i| json!({"name": format!("c{i}"), "image": "b"}))
            .collect();
        let out = apply(&target, &json!({"spec": {"containers": changes}}))
            .unwrap()
            .unwrap();
        let got = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(got.len(), 20_000);
        assert!(got.iter().all(|c| c["image"] == "b"));
    }

    fn pod() -> Value {
        json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
               "spec": {"containers": [
                   {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                   {"name": "side", "image": "busybox"}]}})
    }

    #[test]
    fn containers_merge_by_name_and_maps_merge() {
        let out = apply(&pod(), &json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["y"]},
            "spec": {"containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}))
            .unwrap()
            .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let web = &out["spec"]["containers"][0];
        assert_eq!(web["image"], "nginx:2");
        assert_eq!(
            web["ports"],
            json!([{"containerPort": 80}]),
            "untouched fields stay"
        );
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "side");
    }

    #[test]
    fn a_replaced_map_leaves_its_null_fields_unset() {
        // kubectl rollout undo sends a ControllerRevision's data like this
        let target = json!({"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}});
        let patch = json!({"spec": {"template": {"$patch": "replace",
            "metadata": {"creationTimestamp": null, "labels": {"v": "1"}}}}});
        let out = apply(&target, &patch).unwrap().unwrap();
        assert_eq!(
            out,
            json!({"spec": {"template": {"metadata": {"labels": {"v": "1"}}}}})
        );
    }

    #[test]
    fn directives_kubectl_apply_sends() {
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
            "containers": [{"name": "web", "$patch": "delete"}, {"name": "side", "image": "busybox:2"}]},
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "labels": {"a": null}}});
        let out = apply(&pod(), &patch).unwrap().unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "side", "image": "busybox:2"}])
        );
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(out["metadata"]["labels"], json!({}));
        let out = apply(&pod(), &json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "i"}]}})).unwrap().unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "i"}])
        );
        let out = apply(&json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})).unwrap().unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(apply(&pod(), &json!({"$patch": "delete"})).unwrap(), None);
        let svc = apply(
            &json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
            &json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            svc["spec"]["ports"].as_array().unwrap().len(),
            2,
            "service ports merge by port"
        );
        assert!(
            apply(
                &pod(),
                &json!({"spec": {"containers": [{"image": "no-name"}]}})
            )
            .is_err()
        );
    }
}
