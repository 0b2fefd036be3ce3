//! The schema walk under field ownership: which paths a value sets, what changed
//! between two versions, merging an applied configuration, and removing paths — by the
//! list and map kinds of `merge_keys.rs`.

use crate::api::fieldset::{Element, FieldSet};
use crate::api::merge_keys::{ApplyList, apply_atomic_object, apply_list, is_map_field};
use serde_json::{Map, Value, json};

/// The list type of list field `name` holding `items`.
pub(super) fn list_type(name: &str, items: &[Value]) -> ApplyList {
    let hint = match items.first() {
        Some(s) if s.get("containerPort").is_some() => "containerPort",
        Some(_) if name == "ports" => "port",
        _ => "",
    };
    apply_list(name, hint)
}

/// The element naming `item` in a keyed list.
pub(super) fn key_of(keys: &[&str], item: &Value) -> Element {
    let mut m = Map::new();
    for k in keys {
        match item.get(*k) {
            Some(v) if !v.is_null() => {
                m.insert((*k).into(), v.clone());
            }
            _ if *k == "protocol" => {
                m.insert("protocol".into(), json!("TCP"));
            }
            _ => {}
        }
    }
    Element::Key(Value::Object(m).to_string())
}

/// Whether the value of field `name` is owned as one value.
pub(super) fn is_leaf(v: &Value, name: &str) -> bool {
    match v {
        Value::Object(m) => m.is_empty() || apply_atomic_object(name),
        Value::Array(a) => a.is_empty() || list_type(name, a) == ApplyList::Atomic,
        _ => true,
    }
}

/// Adds the paths below `node` that value `v` (of field `name`) sets.
pub(super) fn fill(v: &Value, name: &str, node: &mut FieldSet) {
    match v {
        Value::Object(m) if !is_leaf(v, name) => {
            for (k, c) in m {
                let child = node.children.entry(Element::Field(k.clone())).or_default();
                if is_leaf(c, k) || is_map_field(name) {
                    child.member = true;
                }
                if !is_leaf(c, k) {
                    fill(c, k, child);
                }
            }
        }
        Value::Array(items) if !is_leaf(v, name) => match list_type(name, items) {
            ApplyList::Map(keys) => {
                for item in items {
                    let child = node.children.entry(key_of(keys, item)).or_default();
                    child.member = true;
                    fill(item, "", child);
                }
            }
            ApplyList::Set => {
                for item in items {
                    node.children
                        .entry(Element::Value(item.to_string()))
                        .or_default()
                        .member = true;
                }
            }
            ApplyList::Atomic => {}
        },
        _ => {}
    }
}

/// The fields an object (an applied configuration) sets.
pub fn fields_of(obj: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    fill(obj, "", &mut set);
    set
}

/// What changed between two versions of an object.
#[derive(Default, Debug)]
pub(super) struct Changes {
    pub(super) added: FieldSet,
    pub(super) modified: FieldSet,
    pub(super) removed: FieldSet,
}

pub(super) fn compare(
    old: Option<&Value>,
    new: Option<&Value>,
    name: &str,
    item: bool,
    path: &mut Vec<Element>,
    ch: &mut Changes,
) {
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) | (Some(n), None) => {
            let target = if old.is_none() {
                &mut ch.added
            } else {
                &mut ch.removed
            };
            let node = target.node_mut(path);
            if item || is_leaf(n, name) || is_map_field(name) {
                node.member = true;
            }
            fill(n, name, node);
        }
        (Some(o), Some(n)) => {
            let same_shape = matches!(
                (o, n),
                (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_))
            );
            if !same_shape || is_leaf(o, name) || is_leaf(n, name) {
                if o != n {
                    ch.modified.node_mut(path).member = true;
                }
                return;
            }
            match (o, n) {
                (Value::Object(a), Value::Object(b)) => {
                    let keys: std::collections::BTreeSet<&String> =
                        a.keys().chain(b.keys()).collect();
                    for k in keys {
                        path.push(Element::Field(k.clone()));
                        compare(a.get(k), b.get(k), k, false, path, ch);
                        path.pop();
                    }
                }
                (Value::Array(a), Value::Array(b)) => {
                    let sample: Vec<Value> = a.iter().chain(b.iter()).take(1).cloned().collect();
                    match list_type(name, &sample) {
                        ApplyList::Map(keys) => {
                            let index = |list: &'_ Vec<Value>| -> Vec<(Element, Value)> {
                                list.iter().map(|i| (key_of(keys, i), i.clone())).collect()
                            };
                            let (ia, ib) = (index(a), index(b));
                            let mut seen = std::collections::BTreeSet::new();
                            for (k, _) in ia.iter().chain(ib.iter()) {
                                if !seen.insert(k.clone()) {
                                    continue;
                                }
                                let find = |l: &[(Element, Value)]| {
                                    l.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone())
                                };
                                let (x, y) = (find(&ia), find(&ib));
                                path.push(k.clone());
                                compare(x.as_ref(), y.as_ref(), "", true, path, ch);
                                path.pop();
                            }
                        }
                        ApplyList::Set => {
                            for v in a.iter().filter(|v| !b.contains(v)) {
                                path.push(Element::Value(v.to_string()));
                                ch.removed.node_mut(path).member = true;
                                path.pop();
                            }
                            for v in b.iter().filter(|v| !a.contains(v)) {
                                path.push(Element::Value(v.to_string()));
                                ch.added.node_mut(path).member = true;
                                path.pop();
                            }
                        }
                        ApplyList::Atomic => {
                            if a != b {
                                ch.modified.node_mut(path).member = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// `config` merged into `live`: objects field by field, keyed lists item by item, sets
/// as unions; everything else is replaced. A `null` in the configuration removes the
/// field.
pub(super) fn merge(live: &Value, config: &Value, name: &str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !apply_atomic_object(name) => {
            let mut out = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, k),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let sample: Vec<Value> = c.iter().chain(l.iter()).take(1).cloned().collect();
            match list_type(name, &sample) {
                ApplyList::Map(keys) => {
                    let mut out = l.clone();
                    for ci in c {
                        let k = key_of(keys, ci);
                        match out.iter().position(|li| key_of(keys, li) == k) {
                            Some(pos) => out[pos] = merge(&out[pos], ci, ""),
                            None => out.push(ci.clone()),
                        }
                    }
                    Value::Array(out)
                }
                ApplyList::Set => {
                    let mut out = l.clone();
                    for ci in c {
                        if !out.contains(ci) {
                            out.push(ci.clone());
                        }
                    }
                    Value::Array(out)
                }
                ApplyList::Atomic => config.clone(),
            }
        }
        _ => config.clone(),
    }
}

/// Removes the members of `rm` from `v`, except paths below which `keep` still holds
/// members (then only the parts not kept go) and the key fields of list items.
pub(super) fn remove_items(
    v: &mut Value,
    rm: &FieldSet,
    keep: Option<&FieldSet>,
    name: &str,
    keys: &[&str],
) {
    let kept = |e: &Element| keep.and_then(|k| k.get(e)).filter(|k| !k.is_empty());
    match v {
        Value::Object(m) => {
            for (e, r) in &rm.children {
                let Element::Field(f) = e else { continue };
                if keys.contains(&f.as_str()) {
                    continue;
                }
                let keep_child = kept(e);
                if r.member && keep_child.is_none() {
                    m.remove(f);
                } else if let Some(child) = m.get_mut(f) {
                    remove_items(child, r, keep_child, f, &[]);
                }
            }
        }
        Value::Array(items) => {
            let sample: Vec<Value> = items.iter().take(1).cloned().collect();
            match list_type(name, &sample) {
                ApplyList::Map(item_keys) => items.retain_mut(|it| {
                    let e = key_of(item_keys, it);
                    match rm.get(&e) {
                        Some(r) if r.member && kept(&e).is_none() => false,
                        Some(r) => {
                            remove_items(it, r, kept(&e), "", item_keys);
                            true
                        }
                        None => true,
                    }
                }),
                ApplyList::Set => items.retain(|it| {
                    !rm.get(&Element::Value(it.to_string()))
                        .is_some_and(|r| r.member)
                }),
                ApplyList::Atomic => {}
            }
        }
        _ => {}
    }
}
