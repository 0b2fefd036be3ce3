//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), as kube-apiserver applies
//! them to objects.

use serde_json::Value;

/// kube-apiserver's limit on JSON patch operations.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// kube-apiserver's `JSONPatchMaxCopyBytes` (its `MaxRequestBodyBytes`, 3 MiB): the
/// most a JSON patch's `copy` operations may copy in total.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 << 20;

/// How deeply an object may nest (objects and arrays). Stored objects are read back
/// with serde_json's limit of 128, and lists and watch events wrap them a few levels
/// more, so nothing deeper than this is ever stored.
pub const MAX_DEPTH: usize = 100;

/// How deeply `v` nests (a scalar is 0, `{}` 1), without recursion.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => {
                deepest = deepest.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The serialized size of `v`, without building the text.
fn size(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Refuses a value that, put at `path`, would nest the document deeper than
/// [`MAX_DEPTH`] (checked per operation, so no operation builds a document that
/// cannot be cloned, dropped or stored).
fn fits(path: &str, value: &Value) -> Result<(), PatchError> {
    let at = path.matches('/').count();
    if at + depth(value) > MAX_DEPTH {
        return Err(PatchError::Unapplicable(format!(
            "the patched object would be nested more than {MAX_DEPTH} levels deep at {path}"
        )));
    }
    Ok(())
}

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
    let mut copied = 0usize;
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
            "add" => {
                let (path, v) = (field("path")?, value()?);
                fits(path, &v)?;
                add(&mut out, path, v)?
            }
            "remove" => {
                remove(&mut out, field("path")?)?;
            }
            "replace" => {
                let path = field("path")?;
                get(&out, path)?;
                fits(path, &value()?)?;
                if path.is_empty() {
                    out = value()?;
                } else {
                    remove(&mut out, path)?;
                    add(&mut out, path, value()?)?;
                }
            }
            "move" => {
                let (from, path) = (field("from")?, field("path")?);
                fits(path, get(&out, from)?)?;
                let v = remove(&mut out, from)?;
                add(&mut out, path, v)?;
            }
            "copy" => {
                let (from, path) = (field("from")?, field("path")?);
                let source = get(&out, from)?;
                fits(path, source)?;
                copied += size(source);
                if copied > MAX_JSON_PATCH_COPY_BYTES {
                    return Err(PatchError::TooLarge(format!(
                        "Unable to copy, the accumulated size increase of copy is {copied}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}"
                    )));
                }
                let v = source.clone();
                add(&mut out, path, v)?;
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
    fn json_patch_cannot_nest_deeper_than_can_be_read_or_copy_without_bound() {
        let deep = |n: usize| {
            let mut v = json!(1);
            for _ in 0..n {
                v = json!({"a": v});
            }
            v
        };
        let doc = json!({"status": {}});
        // two nested adds (the review's attack): the second one is refused
        let first = json!([{"op": "add", "path": "/status/x", "value": deep(90)}]);
        let mid = json_patch(&doc, &first).unwrap();
        assert!(depth(&mid) <= MAX_DEPTH);
        let path = format!("/status/x{}", "/a".repeat(89));
        let second = json!([{"op": "add", "path": path, "value": deep(90)}]);
        assert!(matches!(
            json_patch(&mid, &second),
            Err(PatchError::Unapplicable(_))
        ));
        // copying a value into its own subtree, again and again
        let mut ops = vec![json!({"op": "add", "path": "/status/x", "value": {"a": 1}})];
        for _ in 0..120 {
            ops.push(json!({"op": "copy", "from": "/status/x", "path": "/status/x/b"}));
        }
        match json_patch(&doc, &Value::Array(ops)) {
            Err(PatchError::Unapplicable(m)) => assert!(m.contains("levels deep"), "{m}"),
            other => panic!("{other:?}"),
        }
        // and doubling it each time: the copied bytes hit the limit
        let mut ops =
            vec![json!({"op": "add", "path": "/status/x", "value": {"a": "x".repeat(1000)}})];
        for i in 0..30 {
            ops.push(json!({"op": "copy", "from": "/status/x", "path": format!("/status/x/b{i}")}));
        }
        match json_patch(&doc, &Value::Array(ops)) {
            Err(PatchError::TooLarge(m)) => assert!(m.starts_with("Unable to copy"), "{m}"),
            other => panic!("{other:?}"),
        }
        // many wide copies side by side: the copied bytes add up to the limit
        let mut ops = vec![json!({"op": "add", "path": "/status/x", "value": "y".repeat(100_000)})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/status/x", "path": format!("/status/c{i}")}));
        }
        match json_patch(&doc, &Value::Array(ops)) {
            Err(PatchError::TooLarge(m)) => assert!(m.starts_with("Unable to copy"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(depth(&json!(1)), 0);
    }

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
