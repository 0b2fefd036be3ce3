//! Turning request bodies into stored objects and stored bytes back into responses:
//! storage keys, decoding, metadata defaults and validation, `resourceVersion`.

use crate::api::meta::{NameRule, name_problems, name_suffix, new_uid, now_rfc3339};
use crate::api::registry::Resource;
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::{KeyValue, Revision};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// Largest object kept in the store (etcd's default request limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// `/registry/<group|core>/<plural>/[<namespace>/]` — every object of a resource (in
/// a namespace) shares this prefix.
pub fn prefix(res: &Resource, namespace: Option<&str>) -> String {
    let group = if res.group.is_empty() {
        "core"
    } else {
        res.group
    };
    match namespace {
        Some(ns) if res.namespaced => format!("/registry/{group}/{}/{ns}/", res.plural),
        _ => format!("/registry/{group}/{}/", res.plural),
    }
}

pub fn key(res: &Resource, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(res, namespace))
}

/// A stored object as clients see it: with its `resourceVersion`.
pub fn from_store(kv: &KeyValue) -> Result<Value, ApiStatus> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("stored object {} is unreadable: {e}", kv.key),
        )
    })?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// What upstream's typed round trip does to every object it stores: `null` members
/// are unset fields and go; the object metadata's empty lists and maps go too (they
/// are `omitempty`: an owner reference list emptied by orphaning is absent, not `[]`);
/// required fields get their zero values (`api::zero`).
pub fn normalize(res: &Resource, obj: &mut Value) {
    crate::api::defaults::drop_nulls_of(res.kind, obj);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ] {
            let empty = match meta.get(field) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                _ => false,
            };
            if empty {
                meta.remove(field);
            }
        }
    }
    crate::api::zero::fill(res.group, res.version, res.kind, obj);
}

/// The bytes to store: without `resourceVersion` (the store's revision is the truth).
pub fn to_store(obj: &Value) -> Result<Vec<u8>, ApiStatus> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let depth = crate::api::patch::depth(&obj);
    if depth > crate::api::patch::MAX_DEPTH {
        // what is stored must read back (serde_json reads 128 levels; lists and
        // watch events add a few)
        return Err(ApiStatus::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "the object is nested {depth} levels deep; at most {} are allowed",
                crate::api::patch::MAX_DEPTH
            ),
        ));
    }
    let bytes = serde_json::to_vec(&obj).map_err(|e| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiStatus::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: the object is {} bytes, the limit is {MAX_OBJECT_BYTES}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Decodes a request body into an object of `res`'s kind.
pub fn decode(res: &Resource, media: &str, body: &[u8]) -> Result<Value, ApiStatus> {
    let obj: Value = if media == "application/yaml" {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiStatus::bad_request("the YAML body is not UTF-8"))?;
        serde_saphyr::from_str(text).map_err(|e| {
            ApiStatus::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
        })?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    let Value::Object(map) = &obj else {
        return Err(ApiStatus::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let want = res.group_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != want => {
            return Err(ApiStatus::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != res.kind => Err(ApiStatus::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({}) of {}",
            res.kind,
            qualified(res.plural, res.group)
        ))),
        _ => Ok(obj),
    }
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// A 422 `Invalid` for one field, in upstream's shape.
pub fn invalid(
    res: &Resource,
    name: &str,
    field: &str,
    cause_reason: &str,
    detail: &str,
) -> ApiStatus {
    let cause = detail.to_string();
    ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} \"{name}\" is invalid: {field}: {cause}", res.kind),
    )
    .with_details(json!({
        "name": name,
        "group": res.group,
        "kind": res.kind,
        "causes": [{"reason": cause_reason, "message": cause, "field": field}],
    }))
}

/// Causes as upstream's aggregate error prints them: one as `field: message`, several
/// in brackets.
pub(crate) fn causes_summary(causes: &[crate::api::validation::Cause]) -> String {
    let listed: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if listed.len() == 1 {
        listed[0].clone()
    } else {
        format!("[{}]", listed.join(", "))
    }
}

/// Validation causes (the kind strategy's `validate`) as a 422 in upstream's shape:
/// one cause is `Kind "name" is invalid: field: message`, several are listed in
/// brackets.
pub(crate) fn check_values(
    res: &Resource,
    name: &str,
    causes: &[crate::api::validation::Cause],
) -> Result<(), ApiStatus> {
    if causes.is_empty() {
        return Ok(());
    }
    let summary = causes_summary(causes);
    Err(ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} \"{name}\" is invalid: {summary}", res.kind),
    )
    .with_details(json!({
        "name": name,
        "group": res.group,
        "kind": res.kind,
        "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
    })))
}

/// Checks the request namespace against the object's and fills it in.
fn settle_namespace(
    res: &Resource,
    obj: &mut Value,
    namespace: Option<&str>,
) -> Result<(), ApiStatus> {
    let meta = metadata_mut(obj);
    if !res.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let ns = namespace.unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(given) if !given.is_empty() && given != ns => Err(ApiStatus::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

fn check_name(res: &Resource, name: &str) -> Result<(), ApiStatus> {
    if let Some(problem) = name_problems(NameRule::for_kind(res.kind), name)
        .into_iter()
        .next()
    {
        return Err(invalid(
            res,
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: \"{name}\": {problem}"),
        ));
    }
    Ok(())
}

/// Prepares a new object: namespace, name (or generateName), uid, creation time,
/// generation, and the kind's defaults (the kind's strategy and validation follow
/// admission's mutating phase, in `create`).
pub fn prepare_create(
    res: &Resource,
    mut obj: Value,
    namespace: Option<&str>,
) -> Result<(Value, String), ApiStatus> {
    settle_namespace(res, &mut obj, namespace)?;
    obj["apiVersion"] = json!(res.group_version());
    obj["kind"] = json!(res.kind);
    let meta = metadata_mut(&mut obj);
    let name = match meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(n) => n.to_string(),
        None => match meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(base) => format!("{base}{}", name_suffix()),
            None => {
                return Err(invalid(
                    res,
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                ));
            }
        },
    };
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for transient in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(transient);
    }
    if obj.get("spec").is_some() {
        metadata_mut(&mut obj).insert("generation".into(), json!(1));
    }
    check_name(res, &name)?;
    crate::api::defaults::apply(res.kind, &mut obj);
    Ok((obj, name))
}

/// Prepares a replacement of `current` by `obj` (PUT): identity and creation fields are
/// kept, `generation` moves when the spec changes, the kind's strategy keeps what
/// the main resource may not change, and the result is validated.
pub fn prepare_update(
    res: &Resource,
    mut obj: Value,
    current: &Value,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiStatus> {
    settle_namespace(res, &mut obj, namespace)?;
    match name_of(&obj) {
        Some(n) if n != name => {
            return Err(ApiStatus::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    obj["apiVersion"] = json!(res.group_version());
    obj["kind"] = json!(res.kind);
    crate::api::defaults::apply(res.kind, &mut obj);
    let strategy = super::kinds::of(res);
    strategy.prepare_for_update(&mut obj, current);
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let meta = metadata_mut(&mut obj);
    meta.insert("name".into(), json!(name));
    for kept in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cur_meta.get(kept) {
            Some(v) => meta.insert(kept.into(), v.clone()),
            None => meta.remove(kept),
        };
    }
    if obj.get("spec") != current.get("spec") {
        let next = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        metadata_mut(&mut obj).insert("generation".into(), json!(next));
    }
    check_values(res, name, &strategy.validate(res, &obj, Some(current)))?;
    Ok(obj)
}

/// The `resourceVersion` a client sent in an object, if any.
pub fn sent_resource_version(obj: &Value) -> Result<Option<Revision>, ApiStatus> {
    match obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(rv) => rv.parse::<Revision>().map(Some).map_err(|_| {
            ApiStatus::bad_request(format!(
                "invalid resourceVersion {rv:?}: it must be a resourceVersion the server returned"
            ))
        }),
    }
}

/// 409 on a stale write, with upstream's words.
pub fn conflict(res: &Resource, name: &str) -> ApiStatus {
    ApiStatus::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(res.plural, res.group)
        ),
    )
    .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::find;

    #[test]
    fn creation_fills_metadata_and_validates_names() {
        let cm = find("", "v1", "configmaps").unwrap();
        let (obj, name) = prepare_create(
            cm,
            json!({"metadata": {"generateName": "web-"}, "data": {"a": "1"}}),
            Some("default"),
        )
        .unwrap();
        assert!(name.starts_with("web-") && name.len() == 9);
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["kind"], "ConfigMap");
        assert!(obj["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(
            obj["metadata"].get("generation").is_none(),
            "no spec, no generation"
        );
        let err = prepare_create(
            cm,
            json!({"metadata": {"name": "Bad_Name"}}),
            Some("default"),
        )
        .unwrap_err();
        assert_eq!(err.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        assert_eq!(err.details["causes"][0]["field"], "metadata.name");
        let err = prepare_create(
            cm,
            json!({"metadata": {"name": "a", "namespace": "other"}}),
            Some("default"),
        )
        .unwrap_err();
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn updates_keep_identity_and_bump_generation_on_spec_change() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let spec = |replicas: i64| {
            json!({
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
            })
        };
        let (cur, _) = prepare_create(
            deploy,
            json!({"metadata": {"name": "d"}, "spec": spec(1)}),
            Some("x"),
        )
        .unwrap();
        let same = prepare_update(
            deploy,
            json!({"metadata": {"name": "d", "uid": "forged"}, "spec": spec(1)}),
            &cur,
            Some("x"),
            "d",
        )
        .unwrap();
        assert_eq!(same["metadata"]["uid"], cur["metadata"]["uid"]);
        assert_eq!(same["metadata"]["generation"], 1);
        let changed = prepare_update(
            deploy,
            json!({"metadata": {"name": "d"}, "spec": spec(3)}),
            &cur,
            Some("x"),
            "d",
        )
        .unwrap();
        assert_eq!(changed["metadata"]["generation"], 2);
        assert!(
            prepare_update(
                deploy,
                json!({"metadata": {"name": "other"}}),
                &cur,
                Some("x"),
                "d"
            )
            .is_err()
        );
    }
}
