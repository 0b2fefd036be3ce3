//! Sets of field paths, as server-side apply records who owns what (upstream's
//! structured-merge-diff `fieldpath.Set`), and their `FieldsV1` form in
//! `metadata.managedFields`.
//!
//! A set is a tree: each node is one path, `member` says the path itself is in the
//! set, and children extend the path by one element. In `FieldsV1` a node is a JSON
//! object whose keys are the children (`f:<field>`, `k:<key fields as JSON>`,
//! `v:<value as JSON>`, `i:<index>`), plus `"."` when a node with children is itself
//! a member.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why a `FieldsV1` object cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FieldSetError {
    /// A key that is not `f:`, `k:`, `v:` or `i:` followed by its text.
    #[error("{0:?} is not a field path element (f:, k:, v: or i:)")]
    NotAnElement(String),
    /// A `k:` element whose key is not a JSON object.
    #[error("{0:?}: a key must be a JSON object")]
    Key(String),
    /// A `v:` element whose value is not JSON.
    #[error("{element:?}: {error}")]
    Value {
        /// The element.
        element: String,
        /// Why its value does not parse.
        error: serde_json::Error,
    },
    /// An `i:` element whose index is not a number.
    #[error("{0:?}: an index must be a number")]
    Index(String),
    /// A node that is not a JSON object.
    #[error("every node of fieldsV1 must be a JSON object")]
    NotAnObject,
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A field of an object (or an entry of a map).
    Field(String),
    /// An item of a keyed list: its key fields as a JSON object with sorted keys.
    Key(String),
    /// An item of a set list: the value as JSON.
    Value(String),
    /// An item of a list identified only by its position.
    Index(usize),
}

impl Element {
    fn encode(&self) -> String {
        match self {
            Element::Field(f) => format!("f:{f}"),
            Element::Key(k) => format!("k:{k}"),
            Element::Value(v) => format!("v:{v}"),
            Element::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Element, FieldSetError> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| FieldSetError::NotAnElement(s.to_string()))?;
        match kind {
            "f" => Ok(Element::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(v @ Value::Object(_)) => Ok(Element::Key(v.to_string())),
                _ => Err(FieldSetError::Key(s.to_string())),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| Element::Value(v.to_string()))
                .map_err(|error| FieldSetError::Value {
                    element: s.to_string(),
                    error,
                }),
            "i" => rest
                .parse()
                .map(Element::Index)
                .map_err(|_| FieldSetError::Index(s.to_string())),
            _ => Err(FieldSetError::NotAnElement(s.to_string())),
        }
    }

    /// Upstream's text form, as in conflict messages: `.name`, `[name="c"]`, `[="v"]`,
    /// `[3]`.
    fn display(&self) -> String {
        match self {
            Element::Field(f) => format!(".{f}"),
            Element::Key(k) => {
                let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            Element::Value(v) => format!("[={v}]"),
            Element::Index(i) => format!("[{i}]"),
        }
    }
}

/// A path as upstream prints it, e.g. `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[Element]) -> String {
    path.iter().map(Element::display).collect()
}

/// A set of field paths (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    /// Whether no path is a member.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn get(&self, e: &Element) -> Option<&FieldSet> {
        self.children.get(e)
    }

    /// The node of `path` below this one, created if missing.
    pub fn node_mut(&mut self, path: &[Element]) -> &mut FieldSet {
        let mut node = self;
        for e in path {
            node = node.children.entry(e.clone()).or_default();
        }
        node
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (e, o) in &other.children {
            self.children.entry(e.clone()).or_default().union_with(o);
        }
    }

    /// The members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (e, mine) in &self.children {
            let rest = match other.children.get(e) {
                Some(o) => mine.difference(o),
                None => mine.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(e.clone(), rest);
            }
        }
        out
    }

    /// The members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (e, mine) in &self.children {
            if let Some(o) = other.children.get(e) {
                let both = mine.intersection(o);
                if !both.is_empty() {
                    out.children.insert(e.clone(), both);
                }
            }
        }
        out
    }

    /// Drops nodes that hold no member.
    pub fn prune_empty(&mut self) {
        self.children.retain(|_, c| {
            c.prune_empty();
            !c.is_empty()
        });
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Vec<Element>> {
        fn walk(node: &FieldSet, prefix: &mut Vec<Element>, out: &mut Vec<Vec<Element>>) {
            if node.member {
                out.push(prefix.clone());
            }
            for (e, child) in &node.children {
                prefix.push(e.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        let non_empty: Vec<_> = self
            .children
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if self.member && !non_empty.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (e, child) in non_empty {
            map.insert(e.encode(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Reads a `FieldsV1` JSON object.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldSetError> {
        fn node(v: &Value) -> Result<FieldSet, FieldSetError> {
            let Value::Object(map) = v else {
                return Err(FieldSetError::NotAnObject);
            };
            let mut out = FieldSet {
                member: map.is_empty(),
                children: BTreeMap::new(),
            };
            for (k, child) in map {
                if k == "." {
                    out.member = true;
                    continue;
                }
                out.children.insert(Element::decode(k)?, node(child)?);
            }
            Ok(out)
        }
        let mut root = node(v)?;
        // the root path itself is never owned; an empty object is the empty set
        root.member = false;
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Value) -> FieldSet {
        FieldSet::from_fields_v1(&v).unwrap()
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_that_have_children() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}},
                       "f:finalizers": {"v:\"a\"": {}}}
        });
        let s = set(v.clone());
        assert_eq!(s.to_fields_v1(), v);
        let paths: Vec<String> = s.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.containers[name=\"web\"]",
                ".spec.containers[name=\"web\"].image",
                ".spec.containers[name=\"web\"].name",
                ".spec.finalizers[=\"a\"]",
            ]
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(set(json!({})).is_empty());
    }

    #[test]
    fn set_algebra() {
        let a = set(json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}}));
        let b = set(json!({"f:b": {"f:c": {}}, "f:e": {}}));
        assert_eq!(
            a.difference(&b),
            set(json!({"f:a": {}, "f:b": {"f:d": {}}}))
        );
        assert_eq!(a.intersection(&b), set(json!({"f:b": {"f:c": {}}})));
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(u.paths().len(), 4);
        assert!(a.difference(&a).is_empty());
    }
}
