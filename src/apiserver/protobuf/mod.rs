//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the
//! kinds that kubectl's generator commands send that way since 1.32 (`kubectl create
//! namespace | configmap | secret | serviceaccount | token`). They are turned into
//! the JSON the rest of the server handles. The field numbers are those of the
//! published Kubernetes protobuf IDL, checked against bodies kubectl 1.33 sends.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` message
//! { 1: TypeMeta { 1: apiVersion, 2: kind }, 2: raw object bytes }.

mod specs;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use specs::{
    cronjob_spec, deployment_spec, hpa_spec, ingress_spec, job_spec, pdb_spec, policy_rule,
    quota_spec, reference, service_spec,
};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
/// Kinds whose protobuf bodies this server understands.
pub const KINDS: &[&str] = &[
    "Namespace",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "TokenRequest",
    "Service",
    "Deployment",
    "Job",
    "CronJob",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "PodDisruptionBudget",
    "ResourceQuota",
    "Ingress",
    "PriorityClass",
    "HorizontalPodAutoscaler",
    "SelfSubjectAccessReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
];

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of one message, in order.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    fn varint(b: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length too large")?;
                if len > b.len() {
                    return Err("truncated field".into());
                }
                let (data, rest) = b.split_at(len);
                b = rest;
                Field::Bytes(data)
            }
            1 => {
                b = b.get(8..).ok_or("truncated fixed64")?;
                continue;
            }
            5 => {
                b = b.get(4..).ok_or("truncated fixed32")?;
                continue;
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

/// A map entry message { 1: key, 2: value }; values are strings or (base64) bytes.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) if bytes_value => value = json!(STANDARD.encode(v)),
            (2, Field::Bytes(v)) => value = json!(text(v)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(obj: &mut Value, name: &str, b: &[u8], bytes_value: bool) -> Result<(), String> {
    let (k, v) = map_entry(b, bytes_value)?;
    if !obj.get(name).is_some_and(Value::is_object) {
        obj[name] = json!({});
    }
    if let Some(m) = obj[name].as_object_mut() {
        m.insert(k, v);
    }
    Ok(())
}

fn push(obj: &mut Value, name: &str, v: Value) {
    if !obj.get(name).is_some_and(Value::is_array) {
        obj[name] = json!([]);
    }
    if let Some(a) = obj[name].as_array_mut() {
        a.push(v);
    }
}

fn set_str(obj: &mut Value, name: &str, b: &[u8]) -> Result<(), String> {
    let s = text(b)?;
    if !s.is_empty() {
        obj[name] = json!(s);
    }
    Ok(())
}

/// ObjectMeta: the fields a client sets when creating or replacing.
fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => set_str(&mut m, "name", v)?,
            (2, Field::Bytes(v)) => set_str(&mut m, "generateName", v)?,
            (3, Field::Bytes(v)) => set_str(&mut m, "namespace", v)?,
            (5, Field::Bytes(v)) => set_str(&mut m, "uid", v)?,
            (6, Field::Bytes(v)) => set_str(&mut m, "resourceVersion", v)?,
            (11, Field::Bytes(v)) => insert_entry(&mut m, "labels", v, false)?,
            (12, Field::Bytes(v)) => insert_entry(&mut m, "annotations", v, false)?,
            (14, Field::Bytes(v)) => push(&mut m, "finalizers", json!(text(v)?)),
            _ => {}
        }
    }
    Ok(m)
}

fn local_reference(b: &[u8]) -> Result<Value, String> {
    let mut r = json!({});
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(v)) = (n, f) {
            set_str(&mut r, "name", v)?;
        }
    }
    Ok(r)
}

fn strings(b: &[u8], obj: &mut Value, name: &str) -> Result<(), String> {
    let v = text(b)?;
    push(obj, name, json!(v));
    Ok(())
}

/// LabelSelector { 1: matchLabels map }.
fn label_selector(b: &[u8]) -> Result<Value, String> {
    let mut sel = json!({});
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(v)) = (n, f) {
            insert_entry(&mut sel, "matchLabels", v, false)?;
        }
    }
    Ok(sel)
}

fn object(kind: &str, api_version: &str, raw: &[u8]) -> Result<Value, String> {
    let mut o = json!({});
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(v)) => o["metadata"] = object_meta(v)?,
            ("ConfigMap", 2, Field::Bytes(v)) => insert_entry(&mut o, "data", v, false)?,
            ("ConfigMap", 3, Field::Bytes(v)) => insert_entry(&mut o, "binaryData", v, true)?,
            ("ConfigMap", 4, Field::Varint(v)) => o["immutable"] = json!(v != 0),
            ("Secret", 2, Field::Bytes(v)) => insert_entry(&mut o, "data", v, true)?,
            ("Secret", 3, Field::Bytes(v)) => set_str(&mut o, "type", v)?,
            ("Secret", 4, Field::Bytes(v)) => insert_entry(&mut o, "stringData", v, false)?,
            ("Secret", 5, Field::Varint(v)) => o["immutable"] = json!(v != 0),
            ("Namespace", 2, Field::Bytes(v)) => {
                let mut spec = json!({});
                for (n, f) in fields(v)? {
                    if let (1, Field::Bytes(f)) = (n, f) {
                        push(&mut spec, "finalizers", json!(text(f)?));
                    }
                }
                o["spec"] = spec;
            }
            ("ServiceAccount", 3, Field::Bytes(v)) => {
                push(&mut o, "imagePullSecrets", local_reference(v)?)
            }
            ("ServiceAccount", 4, Field::Varint(v)) => {
                o["automountServiceAccountToken"] = json!(v != 0)
            }
            ("Service", 2, Field::Bytes(v)) => o["spec"] = service_spec(v)?,
            ("Deployment", 2, Field::Bytes(v)) => o["spec"] = deployment_spec(v)?,
            ("Job", 2, Field::Bytes(v)) => o["spec"] = job_spec(v)?,
            ("CronJob", 2, Field::Bytes(v)) => o["spec"] = cronjob_spec(v)?,
            ("Role" | "ClusterRole", 2, Field::Bytes(v)) => push(&mut o, "rules", policy_rule(v)?),
            ("RoleBinding" | "ClusterRoleBinding", 2, Field::Bytes(v)) => push(
                &mut o,
                "subjects",
                reference(v, &["kind", "apiGroup", "name", "namespace"])?,
            ),
            ("RoleBinding" | "ClusterRoleBinding", 3, Field::Bytes(v)) => {
                o["roleRef"] = reference(v, &["apiGroup", "kind", "name"])?
            }
            ("PodDisruptionBudget", 2, Field::Bytes(v)) => o["spec"] = pdb_spec(v)?,
            ("ResourceQuota", 2, Field::Bytes(v)) => o["spec"] = quota_spec(v)?,
            ("Ingress", 2, Field::Bytes(v)) => o["spec"] = ingress_spec(v)?,
            ("PriorityClass", 2, Field::Varint(v)) => o["value"] = json!(v as i32),
            ("PriorityClass", 3, Field::Varint(v)) if v != 0 => o["globalDefault"] = json!(true),
            ("PriorityClass", 4, Field::Bytes(v)) => set_str(&mut o, "description", v)?,
            ("PriorityClass", 5, Field::Bytes(v)) => set_str(&mut o, "preemptionPolicy", v)?,
            ("HorizontalPodAutoscaler", 2, Field::Bytes(v)) => {
                o["spec"] = hpa_spec(v, api_version == "autoscaling/v1")?
            }
            (
                "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview",
                2,
                Field::Bytes(v),
            ) => o["spec"] = access_review_spec(v)?,
            ("TokenRequest", 2, Field::Bytes(v)) => {
                let mut spec = json!({});
                for (n, f) in fields(v)? {
                    match (n, f) {
                        (1, Field::Bytes(a)) => push(&mut spec, "audiences", json!(text(a)?)),
                        (4, Field::Varint(s)) => spec["expirationSeconds"] = json!(s),
                        (3, Field::Bytes(r)) => {
                            let mut bound = json!({});
                            for (n, f) in fields(r)? {
                                if let Field::Bytes(x) = f {
                                    let name = match n {
                                        1 => "kind",
                                        2 => "apiVersion",
                                        3 => "name",
                                        4 => "uid",
                                        _ => continue,
                                    };
                                    set_str(&mut bound, name, x)?;
                                }
                            }
                            spec["boundObjectRef"] = bound;
                        }
                        _ => {}
                    }
                }
                o["spec"] = spec;
            }
            _ => {}
        }
    }
    Ok(o)
}

/// A (Self/Local)SubjectAccessReviewSpec: resource or non-resource attributes, and for
/// the others' reviews the user, groups and uid.
fn access_review_spec(v: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(v)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                let mut a = json!({});
                for (n, f) in fields(b)? {
                    let Field::Bytes(x) = f else { continue };
                    let name = match n {
                        1 => "namespace",
                        2 => "verb",
                        3 => "group",
                        4 => "version",
                        5 => "resource",
                        6 => "subresource",
                        7 => "name",
                        _ => continue,
                    };
                    set_str(&mut a, name, x)?;
                }
                spec["resourceAttributes"] = a;
            }
            2 => {
                let mut a = json!({});
                for (n, f) in fields(b)? {
                    if let (1 | 2, Field::Bytes(x)) = (n, f) {
                        set_str(&mut a, if n == 1 { "path" } else { "verb" }, x)?;
                    }
                }
                spec["nonResourceAttributes"] = a;
            }
            3 => set_str(&mut spec, "user", b)?,
            4 => push(&mut spec, "groups", json!(text(b)?)),
            6 => set_str(&mut spec, "uid", b)?,
            _ => {}
        }
    }
    Ok(spec)
}

/// Decodes a protobuf request body into its JSON form.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the Kubernetes protobuf magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(v)) => api_version = text(v)?,
                        (2, Field::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(v)) => raw = v,
            (3, Field::Bytes(v)) if !v.is_empty() => {
                return Err("compressed protobuf bodies are not supported".into());
            }
            _ => {}
        }
    }
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "protobuf request bodies are supported for {} in this skua build, not {kind}; send application/json",
            KINDS.join(", ")
        ));
    }
    let mut obj = object(&kind, &api_version, raw)?;
    let map: &mut Map<String, Value> = obj.as_object_mut().ok_or("not an object")?;
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(kind));
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = field(1, api_version.as_bytes());
        tm.extend(field(2, kind.as_bytes()));
        let mut out = MAGIC.to_vec();
        out.extend(field(1, &tm));
        out.extend(field(2, raw));
        out
    }

    #[test]
    fn configmaps_and_secrets_decode_as_kubectl_sends_them() {
        let meta = field(1, &field(1, b"cm1"));
        let mut raw = meta.clone();
        let mut entry = field(1, b"k1");
        entry.extend(field(2, b"v1"));
        raw.extend(field(2, &entry));
        let cm = to_json(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"k1": "v1"}})
        );
        let mut raw = field(1, &field(1, b"s1"));
        raw.extend(field(2, &entry));
        raw.extend(field(3, b"my/type"));
        let s = to_json(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(s["data"]["k1"], json!(STANDARD.encode("v1")));
        assert_eq!(s["type"], "my/type");
        let tr = to_json(&envelope("authentication.k8s.io/v1", "TokenRequest", &{
            let mut spec = field(1, b"aud1");
            spec.extend([4 << 3, 0xb0, 0x09]); // expirationSeconds = 1200
            let mut raw = field(1, &[]);
            raw.extend(field(2, &spec));
            raw
        }))
        .unwrap();
        assert_eq!(
            tr["spec"],
            json!({"audiences": ["aud1"], "expirationSeconds": 1200})
        );
        assert!(
            to_json(&envelope("apps/v1", "DaemonSet", &meta))
                .unwrap_err()
                .contains("send application/json")
        );
        assert!(to_json(b"garbage").is_err());
        assert!(
            to_json(&[b'k', b'8', b's', 0, 0x0a, 0x7f]).is_err(),
            "truncated"
        );
    }
}
