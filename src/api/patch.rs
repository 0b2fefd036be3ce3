//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), as kube-apiserver applies
//! them to objects.

use serde_json::Value;

/// kube-apiserver's limit on JSON patch operations.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    Malformed(String),
    /// The patch cannot be applied to this object (422, as upstream).
    Unapplicable(String),
    /// Too many operations (413, as upstream).
    TooLarge(String),
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Splits a JSON pointer into unescaped tokens.
fn pointer_tokens(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path.strip_prefix('/').ok_or_else(|| {
        PatchError::Malformed(format!("JSON pointer {path:?} must start with '/'"))
    })?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_and_last<'a>(
    doc: &'a mut Value,
    path: &str,
) -> Result<(&'a mut Value, String), PatchError> {
    let mut tokens = pointer_tokens(path)?;
    let last = tokens.pop().ok_or_else(|| {
        PatchError::Unapplicable("the whole document cannot be the target".into())
    })?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| {
            PatchError::Unapplicable(format!("doc is missing path: \"{path}\": missing value"))
        })?;
    }
    Ok((cur, last))
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, PatchError> {
    let mut cur = doc;
    for t in pointer_tokens(path)? {
        cur = match cur {
            Value::Object(m) => m.get(&t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| {
            PatchError::Unapplicable(format!("doc is missing path: \"{path}\": missing value"))
        })?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_and_last(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| {
                        PatchError::Unapplicable(format!(
                            "add operation does not apply: doc is missing path: \"{path}\""
                        ))
                    })?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(PatchError::Unapplicable(format!(
            "add operation does not apply: doc is missing path: \"{path}\""
        ))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = parent_and_last(doc, path)?;
    let missing = || {
        PatchError::Unapplicable(format!(
            "remove operation does not apply: doc is missing path: \"{path}\""
        ))
    };
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 operations in order; the document is unchanged if any fails.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = ops.as_array().ok_or_else(|| {
        PatchError::Malformed("a JSON patch must be an array of operations".into())
    })?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut out = doc.clone();
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("operation {op} lacks {name:?}")))
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("operation {op} lacks \"value\"")))
        };
        match field("op")? {
            "add" => add(&mut out, field("path")?, value()?)?,
            "remove" => {
                remove(&mut out, field("path")?)?;
            }
            "replace" => {
                let path = field("path")?;
                get(&out, path)?;
                if path.is_empty() {
                    out = value()?;
                } else {
                    remove(&mut out, path)?;
                    add(&mut out, path, value()?)?;
                }
            }
            "move" => {
                let v = remove(&mut out, field("from")?)?;
                add(&mut out, field("path")?, v)?;
            }
            "copy" => {
                let v = get(&out, field("from")?)?.clone();
                add(&mut out, field("path")?, v)?;
            }
            "test" => {
                let path = field("path")?;
                if get(&out, path)? != &value()? {
                    return Err(PatchError::Unapplicable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(PatchError::Malformed(format!(
                    "unknown JSON patch operation {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "items": [1, 2, 3]});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "replace", "path": "/items/0", "value": 9},
                {"op": "remove", "path": "/items/1"},
                {"op": "add", "path": "/items/-", "value": 4},
                {"op": "copy", "from": "/metadata/labels/a", "path": "/copied"},
                {"op": "move", "from": "/copied", "path": "/moved"},
                {"op": "test", "path": "/moved", "value": "1"}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1", "b/c": "2"}}, "items": [9, 3, 4], "moved": "1"})
        );
        assert!(matches!(
            json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}])),
            Err(PatchError::Unapplicable(_))
        ));
        assert!(matches!(
            json_patch(
                &doc,
                &json!([{"op": "test", "path": "/items/0", "value": 7}])
            ),
            Err(PatchError::Unapplicable(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!({"op": "add"})),
            Err(PatchError::Malformed(_))
        ));
        let many: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "", "value": 1}))
            .collect();
        assert!(matches!(
            json_patch(&doc, &Value::Array(many)),
            Err(PatchError::TooLarge(_))
        ));
    }
}
