//! `/openapi/v3` (index and per group-version documents, generated at build time by
//! build.rs) and the schema knowledge served from them: unknown-field detection for
//! `fieldValidation`.

use super::registry::Registry;
use super::status::{ApiStatus, Body, json, json_typed};
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

include!(concat!(env!("OUT_DIR"), "/openapi_docs.rs"));

/// `GET /openapi/v3`: the built-in group versions' documents and one for each group
/// version served only by entries added at run time.
pub fn index(reg: &Registry) -> Response<Body> {
    let mut paths: Map<String, Value> = DOCS
        .iter()
        .map(|(path, _, hash)| {
            (
                path.to_string(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    for (group, version) in reg.group_versions() {
        if reg.is_added_group_version(group, version) {
            let path = format!("apis/{group}/{version}");
            let hash = hash_of(&added_document(reg, group, version).to_string());
            let url = format!("/openapi/v3/{path}?hash={hash}");
            paths.insert(path, json!({"serverRelativeURL": url}));
        }
    }
    json(StatusCode::OK, &json!({"paths": paths}))
}

/// `GET /openapi/v3/<path>`.
pub fn document(path: &str, reg: &Registry) -> Option<Response<Body>> {
    let (doc, hash) = match DOCS.iter().find(|(p, _, _)| *p == path) {
        Some((_, doc, hash)) => (Bytes::from_static(doc.as_bytes()), hash.to_string()),
        None => {
            let (group, version) = path.strip_prefix("apis/")?.split_once('/')?;
            if !reg.is_added_group_version(group, version) {
                return None;
            }
            let doc = added_document(reg, group, version).to_string();
            let hash = hash_of(&doc);
            (Bytes::from(doc), hash)
        }
    };
    let mut resp = json_typed(StatusCode::OK, &Value::Null, "application/json");
    *resp.body_mut() = http_body_util::BodyExt::boxed(http_body_util::Full::new(doc));
    if let Ok(etag) = http::HeaderValue::from_str(&format!("\"{hash}\"")) {
        resp.headers_mut().insert(http::header::ETAG, etag);
    }
    Some(resp)
}

/// A document's hash as kube-openapi gives it: upper-case hex of the first 8 bytes of
/// its SHA-512.
fn hash_of(doc: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA512, doc.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// The document of a group version served by entries added at run time: each
/// resource's paths (with the query parameters kubectl looks for, so it leaves field
/// validation to the server) and a schema that keeps every field, as upstream
/// publishes a CustomResourceDefinition without a structural schema.
fn added_document(reg: &Registry, group: &str, version: &str) -> Value {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for r in reg.resources_of(group, version) {
        let name = format!("{}.{version}.{}", reversed.join("."), r.kind);
        let gvk = json!([{"group": group, "kind": r.kind, "version": version}]);
        schemas.insert(
            name.clone(),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                   "x-kubernetes-group-version-kind": gvk}),
        );
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        let op = |action: &str, with_params: bool| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": if with_params { params.clone() } else { Vec::new() },
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk[0],
            })
        };
        let base = format!("/apis/{group}/{version}");
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": op("list", false), "post": op("post", true)}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": op("get", false), "put": op("put", true),
                   "patch": op("patch", true), "delete": op("delete", false)}),
        );
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": crate::apiserver::KUBE_GIT_VERSION},
           "paths": paths, "components": {"schemas": schemas}})
}

/// Parsed documents, by path, loaded on first use.
fn parsed(path: &str) -> Option<Arc<Value>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Value>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = map.get(path) {
        return Some(v.clone());
    }
    let (p, doc, _) = DOCS.iter().find(|(p, _, _)| *p == path)?;
    let value: Value = serde_json::from_str(doc).ok()?;
    let value = Arc::new(value);
    map.insert(p, value.clone());
    Some(value)
}

/// Every schema component of every served document, by definition name (the protobuf
/// schema generator reads the JSON names from them).
#[cfg(test)]
pub(crate) fn all_schemas() -> Map<String, Value> {
    let mut all = Map::new();
    for (path, _, _) in DOCS {
        if let Some(doc) = parsed(path) {
            if let Some(s) = doc["components"]["schemas"].as_object() {
                all.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    all
}

/// What to do with unknown fields (`fieldValidation`; upstream's default is Warn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(value: Option<&str>) -> Result<FieldValidation, ApiStatus> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiStatus::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; valid values are Ignore, Warn and Strict"
            ))),
        }
    }
}

fn resolve<'a>(mut schema: &'a Value, components: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..16 {
        let next = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("allOf")
                    .and_then(|a| a.get(0))
                    .and_then(|s| s.get("$ref"))
            })
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .and_then(|name| components.get(name));
        match next {
            Some(s) => schema = s,
            None => break,
        }
    }
    schema
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    schema: &Value,
    value: &Value,
    path: &str,
    components: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    let schema = resolve(schema, components);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if props.is_none() && additional.is_none() {
                return; // free-form object (RawExtension and the like)
            }
            for (k, v) in map {
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(p), _) => walk(p, v, &join(path, k), components, out),
                    (None, Some(a)) if a.is_object() => walk(a, v, &join(path, k), components, out),
                    (None, Some(Value::Bool(true))) => {}
                    _ => out.push(join(path, k)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(item_schema, v, &format!("{path}[{i}]"), components, out);
                }
            }
        }
        _ => {}
    }
}

/// The fields of `obj` that its kind's schema does not know, as upstream names them
/// (`spec.containers[0].foo`).
pub fn unknown_fields(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<String> {
    let path = if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    };
    let Some(doc) = parsed(&path) else {
        return Vec::new();
    };
    let Some(components) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let gvk = json!([{"group": group, "kind": kind, "version": version}]);
    let Some(schema) = components
        .values()
        .find(|s| s.get("x-kubernetes-group-version-kind") == Some(&gvk))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(schema, obj, "", components, &mut out);
    out
}

/// Applies `mode` to `obj`: an error for Strict, warnings for Warn.
pub fn check_fields(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    mode: FieldValidation,
) -> Result<Vec<String>, ApiStatus> {
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let unknown: Vec<String> = unknown_fields(group, version, kind, obj)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match mode {
        FieldValidation::Strict => Err(ApiStatus::bad_request(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        _ => Ok(unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_kinds_and_patch_metadata() {
        assert!(DOCS.iter().any(|(p, _, _)| *p == "api/v1"));
        let doc = parsed("api/v1").unwrap();
        let container =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(container["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(container["x-kubernetes-patch-strategy"], "merge");
        let ports =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(ports["x-kubernetes-list-type"], "map");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            serde_json::json!(["containerPort", "protocol"])
        );
        let path = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(path["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert!(
            path["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
    }

    #[test]
    fn unknown_fields_are_found_where_they_are() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always"}], "nodeSelector": {"x": "y"}}});
        assert_eq!(
            unknown_fields("", "v1", "Pod", &pod),
            vec!["metadata.bogus", "spec.containers[0].imagePullPolcy"]
        );
        let d =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}, "replicas": 1}});
        assert!(unknown_fields("apps", "v1", "Deployment", &d).is_empty());
        let err = check_fields(
            "",
            "v1",
            "ConfigMap",
            &json!({"data": {}, "dta": 1}),
            FieldValidation::Strict,
        )
        .unwrap_err();
        assert_eq!(err.message, "strict decoding error: unknown field \"dta\"");
        assert_eq!(
            check_fields(
                "",
                "v1",
                "ConfigMap",
                &json!({"dta": 1}),
                FieldValidation::Warn
            )
            .unwrap(),
            vec!["unknown field \"dta\""]
        );
    }
}
