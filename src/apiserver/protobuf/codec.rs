//! The protobuf codec: Kubernetes' wire format to and from the JSON form the rest of the
//! server handles, driven by `schema.json` (field numbers, types and JSON names of every
//! message of upstream's `.proto` files, generated from the `k8s-pb` crate's types by
//! `schema_gen.rs`). The types whose JSON is not their message (times, quantities,
//! int-or-string, embedded raw JSON, the JSON-schema unions, string lists) are mapped
//! as upstream's custom marshallers map them.
//!
//! Zero values: Go writes every non-pointer field on the wire, zero or not, and its JSON
//! encoder leaves zero `omitempty` fields out, so a decoded zero scalar is dropped, as if
//! absent, unless the field is one of the pointer fields whose zero is a value
//! (`replicas: 0`, `automountServiceAccountToken: false`, …; `KEEP_ZERO`).

use super::ProtobufError;
use super::json_schema::{decode_json_schema_union, encode_json_schema_union};
use super::values::{double, go_duration, parse_go_duration, rfc3339_nanos};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// How deep messages may nest (JSON-schema properties are recursive).
pub(super) const MAX_DEPTH: usize = 100;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const QUANTITY_VALUE: &str = "io.k8s.apimachinery.pkg.api.resource.QuantityValue";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

/// Pointer fields (Go `*int32`, `*bool`, `*IntOrString`, …) whose zero differs from
/// unset; a decoded zero of any other field is dropped as Go's JSON would drop it.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "minReplicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "parallelism",
    "completions",
    "ttlSecondsAfterFinished",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "priority",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "supplementalGroups",
    "gracePeriodSeconds",
    "deletionGracePeriodSeconds",
    "expirationSeconds",
    "defaultMode",
    "mode",
    "partition",
    "maxUnavailable",
    "maxSurge",
    "minAvailable",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "hostUsers",
    "allowPrivilegeEscalation",
    "allocateLoadBalancerNodePorts",
    "ready",
    "serving",
    "terminating",
    "orphanDependents",
    "suspend",
    "immutable",
    "runAsNonRoot",
    "privileged",
    "readOnlyRootFilesystem",
    "shareProcessNamespace",
    "setHostnameAsFQDN",
    "manualSelector",
    "optional",
    "value",
    "weight",
    "seconds",
    "globalDefault",
    "allowed",
    "denied",
    "unschedulable",
];

/// Pointer strings whose empty value differs from unset (`storageClassName: ""` asks
/// for no class; unset asks for the default one).
const KEEP_EMPTY: &[&str] = &["storageClassName"];

#[derive(Debug)]
enum Ty {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    Bytes,
    Message(String),
}

#[derive(Debug)]
enum Rule {
    Single,
    /// a Go inline member: its fields are the parent's in JSON
    Inline,
    Repeated,
    Map(Ty),
}

#[derive(Debug)]
struct FieldDef {
    tag: u64,
    json: String,
    ty: Ty,
    rule: Rule,
}

struct Schema {
    api_versions: HashMap<String, String>,
    messages: HashMap<String, Vec<FieldDef>>,
    /// lowercase full name → full name (kinds are looked up case-insensitively only
    /// when the exact name is absent)
    lower: HashMap<String, String>,
}

fn ty(name: &str) -> Ty {
    match name {
        "string" => Ty::String,
        "bool" => Ty::Bool,
        "int32" => Ty::Int32,
        "int64" => Ty::Int64,
        "double" => Ty::Double,
        "bytes" => Ty::Bytes,
        other => Ty::Message(other.to_string()),
    }
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let doc: Value = serde_json::from_str(include_str!("schema.json")).unwrap_or_default();
        let api_versions = doc["apiVersions"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let mut messages = HashMap::new();
        for (name, fields) in doc["messages"].as_object().into_iter().flatten() {
            let defs = fields
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    let tag = f[0].as_u64()?;
                    let json = f[1].as_str()?.to_string();
                    let t = f[2].as_str()?;
                    let (ty, rule) = match f[3].as_str()? {
                        "r" => (ty(t), Rule::Repeated),
                        "i" => (ty(t), Rule::Inline),
                        "m" => {
                            let (k, v) = t.split_once(',')?;
                            (ty(k), Rule::Map(ty(v)))
                        }
                        _ => (ty(t), Rule::Single),
                    };
                    Some(FieldDef {
                        tag,
                        json,
                        ty,
                        rule,
                    })
                })
                .collect();
            messages.insert(name.clone(), defs);
        }
        let lower = messages
            .keys()
            .map(|k| (k.to_ascii_lowercase(), k.clone()))
            .collect();
        Schema {
            api_versions,
            messages,
            lower,
        }
    })
}

/// The message of a kind: its group-version's package (`apps/v1` → `io.k8s.api.apps.v1`),
/// then meta/v1's (`Status`, `DeleteOptions`, `WatchEvent` in any group-version).
pub fn message_of(api_version: &str, kind: &str) -> Option<&'static str> {
    let s = schema();
    let package = match api_version {
        "meta.k8s.io/v1" => Some(META),
        v => s.api_versions.get(v).map(String::as_str),
    };
    let find = |pkg: &str| {
        let full = format!("{pkg}.{kind}");
        s.messages
            .get_key_value(&full)
            .map(|(k, _)| k.as_str())
            .or_else(|| s.lower.get(&full.to_ascii_lowercase()).map(String::as_str))
    };
    package.and_then(find).or_else(|| find(META))
}

// ---- the wire ----

fn varint(b: &mut &[u8]) -> Result<u64, ProtobufError> {
    Ok(prost::encoding::decode_varint(b)?)
}

pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of one message, in order.
pub(super) fn fields(mut b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ProtobufError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut b)?),
            1 => {
                let (v, rest) = b
                    .split_first_chunk::<8>()
                    .ok_or(ProtobufError::Malformed("truncated fixed64"))?;
                b = rest;
                Wire::Fixed64(u64::from_le_bytes(*v))
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?)
                    .map_err(|_| ProtobufError::Malformed("length too large"))?;
                if len > b.len() {
                    return Err(ProtobufError::Malformed("truncated field"));
                }
                let (data, rest) = b.split_at(len);
                b = rest;
                Wire::Bytes(data)
            }
            5 => {
                let (_, rest) = b
                    .split_first_chunk::<4>()
                    .ok_or(ProtobufError::Malformed("truncated fixed32"))?;
                b = rest;
                Wire::Fixed32
            }
            other => return Err(ProtobufError::WireType(other)),
        };
        if key >> 3 == 0 {
            return Err(ProtobufError::Malformed("field number 0"));
        }
        out.push((key >> 3, wire));
    }
    Ok(out)
}

pub(super) fn text(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ProtobufError::Malformed("a string field is not UTF-8"))
}

/// The raw bytes of field `n` of a message, if present.
fn bytes_field(b: &[u8], n: u64) -> Result<Option<&[u8]>, ProtobufError> {
    Ok(fields(b)?.into_iter().rev().find_map(|(tag, w)| match w {
        Wire::Bytes(v) if tag == n => Some(v),
        _ => None,
    }))
}

pub(super) fn varint_field(b: &[u8], n: u64) -> Result<u64, ProtobufError> {
    Ok(fields(b)?
        .into_iter()
        .rev()
        .find_map(|(tag, w)| match w {
            Wire::Varint(v) if tag == n => Some(v),
            _ => None,
        })
        .unwrap_or(0))
}

/// Embedded JSON (`RawExtension`, `FieldsV1`, apiextensions' `JSON`); a nested protobuf
/// object (a `RawExtension` a protobuf client filled) is decoded too.
fn raw_json(raw: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(super::MAGIC) {
        return decode_envelope(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(ProtobufError::EmbeddedJson)
}

// ---- decoding ----

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn scalar(ty: &Ty, w: &Wire<'_>) -> Result<Value, ProtobufError> {
    Ok(match (ty, w) {
        (Ty::String, Wire::Bytes(b)) => Value::String(text(b)?),
        (Ty::Bytes, Wire::Bytes(b)) => Value::String(STANDARD.encode(b)),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
        (Ty::Int32, Wire::Varint(v)) => json!(*v as i32),
        (Ty::Int64, Wire::Varint(v)) => json!(*v as i64),
        (Ty::Double, Wire::Fixed64(v)) => double(f64::from_bits(*v)),
        _ => return Err(ProtobufError::Malformed("a field has the wrong wire type")),
    })
}

/// Packed repeated numbers (`[1 2 3]` in one length-delimited field).
fn packed(ty: &Ty, mut b: &[u8]) -> Result<Vec<Value>, ProtobufError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        match ty {
            Ty::Double => {
                let (v, rest) = b
                    .split_first_chunk::<8>()
                    .ok_or(ProtobufError::Malformed("truncated packed"))?;
                b = rest;
                out.push(double(f64::from_le_bytes(*v)));
            }
            t => out.push(scalar(t, &Wire::Varint(varint(&mut b)?))?),
        }
    }
    Ok(out)
}

fn value(ty: &Ty, w: &Wire<'_>, depth: usize) -> Result<Value, ProtobufError> {
    match (ty, w) {
        (Ty::Message(name), Wire::Bytes(b)) => decode_message(name, b, depth + 1),
        (Ty::Message(_), _) => Err(ProtobufError::Malformed(
            "a message field has the wrong wire type",
        )),
        (t, w) => scalar(t, w),
    }
}

/// Decodes message `name`.
pub fn decode_message(name: &str, b: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep("messages"));
    }
    match name {
        TIME | MICRO_TIME => {
            let seconds = varint_field(b, 1)? as i64;
            let nanos = varint_field(b, 2)? as i32;
            return Ok(if seconds == 0 && nanos == 0 {
                Value::Null
            } else {
                json!(rfc3339_nanos(seconds, i64::from(nanos), name == MICRO_TIME))
            });
        }
        DURATION => return Ok(json!(go_duration(varint_field(b, 1)? as i64))),
        INT_OR_STRING => {
            return Ok(if varint_field(b, 1)? == 1 {
                json!(text(bytes_field(b, 3)?.unwrap_or_default())?)
            } else {
                json!(varint_field(b, 2)? as i32)
            });
        }
        QUANTITY | QUANTITY_VALUE => {
            return Ok(json!(text(bytes_field(b, 1)?.unwrap_or_default())?));
        }
        RAW_EXTENSION | FIELDS_V1 => {
            return raw_json(bytes_field(b, 1)?.unwrap_or_default(), depth);
        }
        _ => {}
    }
    if is_apiextensions(name, "JSON") {
        return raw_json(bytes_field(b, 1)?.unwrap_or_default(), depth);
    }
    if let Some(v) = decode_json_schema_union(name, b, depth)? {
        return Ok(v);
    }
    let defs = schema()
        .messages
        .get(name)
        .ok_or_else(|| ProtobufError::UnknownMessage(name.to_string()))?;
    let mut obj = Map::new();
    for (tag, w) in fields(b)? {
        let Some(def) = defs.iter().find(|d| d.tag == tag) else {
            continue; // unknown fields are skipped, as protobuf does
        };
        match &def.rule {
            Rule::Single => {
                let v = value(&def.ty, &w, depth)?;
                obj.insert(def.json.clone(), v);
            }
            Rule::Inline => {
                if let Value::Object(members) = value(&def.ty, &w, depth)? {
                    obj.extend(members);
                }
            }
            Rule::Repeated => {
                let items = match (&def.ty, &w) {
                    (Ty::Int32 | Ty::Int64 | Ty::Bool | Ty::Double, Wire::Bytes(p)) => {
                        packed(&def.ty, p)?
                    }
                    _ => vec![value(&def.ty, &w, depth)?],
                };
                let entry = obj
                    .entry(def.json.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = entry {
                    a.extend(items);
                }
            }
            Rule::Map(value_ty) => {
                let Wire::Bytes(entry_bytes) = w else {
                    return Err(ProtobufError::Malformed(
                        "a map entry has the wrong wire type",
                    ));
                };
                let (mut k, mut v) = (String::new(), None);
                for (n, ew) in fields(entry_bytes)? {
                    match n {
                        1 => k = scalar(&def.ty, &ew)?.as_str().unwrap_or("").to_string(),
                        2 => v = Some(value(value_ty, &ew, depth)?),
                        _ => {}
                    }
                }
                let v = match (v, value_ty) {
                    (Some(v), _) => v,
                    (None, Ty::Message(_)) => json!({}),
                    (None, Ty::Bytes | Ty::String) => json!(""),
                    (None, _) => json!(0),
                };
                let entry = obj
                    .entry(def.json.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
            }
        }
    }
    // Go's JSON leaves zero non-pointer fields out
    obj.retain(|k, v| {
        let def = defs.iter().find(|d| d.json == *k);
        // scalars, and the messages that are scalars in JSON and values in Go
        let single = def.is_some_and(|d| {
            matches!(d.rule, Rule::Single)
                && match &d.ty {
                    Ty::Message(m) => m == INT_OR_STRING || m == QUANTITY,
                    _ => true,
                }
        });
        if v.is_null() {
            return false;
        }
        if !single || !is_zero(v) {
            return true;
        }
        match v {
            Value::String(_) => KEEP_EMPTY.contains(&k.as_str()),
            _ => KEEP_ZERO.contains(&k.as_str()),
        }
    });
    Ok(unwrap_union(name, obj))
}

/// A message of apiextensions (k8s-pb spells `JSONSchemaProps` `JsonSchemaProps`).
pub(super) fn is_apiextensions(name: &str, short: &str) -> bool {
    name.starts_with("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.")
        && name
            .rsplit('.')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(short))
}

/// The messages whose JSON is one of their fields: the string lists (`Verbs`,
/// `ExtraValue`).
fn unwrap_union(name: &str, mut obj: Map<String, Value>) -> Value {
    if is_string_list(name) {
        return obj.remove("items").unwrap_or(json!([]));
    }
    Value::Object(obj)
}

/// Go named string slices (`type Verbs []string`), a message of `repeated string items`.
fn is_string_list(name: &str) -> bool {
    matches!(name.rsplit('.').next(), Some("Verbs" | "ExtraValue"))
}

/// Decodes `k8s\0` + `runtime.Unknown` into the object's JSON (with apiVersion and kind).
pub fn decode_envelope(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    let rest = body
        .strip_prefix(super::MAGIC)
        .ok_or(ProtobufError::NoMagic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (n, w) in fields(tm)? {
                    match (n, w) {
                        (1, Wire::Bytes(v)) => api_version = text(v)?,
                        (2, Wire::Bytes(v)) => kind = text(v)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(v)) => raw = v,
            (3, Wire::Bytes(v)) if !v.is_empty() => {
                return Err(ProtobufError::Compressed);
            }
            _ => {}
        }
    }
    let message = message_of(&api_version, &kind).ok_or_else(|| ProtobufError::NoProtobufForm {
        kind: kind.clone(),
        api_version: api_version.clone(),
    })?;
    let mut obj = decode_message(message, raw, depth)?;
    let map = obj
        .as_object_mut()
        .ok_or(ProtobufError::Malformed("not an object"))?;
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(kind));
    Ok(obj)
}

// ---- encoding ----

pub(super) fn key(out: &mut Vec<u8>, tag: u64, wire: u64) {
    prost::encoding::encode_varint((tag << 3) | wire, out);
}

pub(super) fn len_field(out: &mut Vec<u8>, tag: u64, b: &[u8]) {
    key(out, tag, 2);
    prost::encoding::encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn int_of(v: &Value) -> Result<i64, ProtobufError> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| ProtobufError::not_a(v, "an integer"))
}

fn encode_scalar(out: &mut Vec<u8>, tag: u64, ty: &Ty, v: &Value) -> Result<(), ProtobufError> {
    match ty {
        Ty::String => len_field(out, tag, as_str(v)?.as_bytes()),
        Ty::Bytes => {
            let b = STANDARD
                .decode(as_str(v)?)
                .map_err(|_| ProtobufError::not_a(v, "base64"))?;
            len_field(out, tag, &b);
        }
        Ty::Bool => {
            key(out, tag, 0);
            out.push(u8::from(v.as_bool().unwrap_or(false)));
        }
        Ty::Int32 | Ty::Int64 => {
            key(out, tag, 0);
            let n = int_of(v)?;
            let n = if matches!(ty, Ty::Int32) {
                i64::from(n as i32)
            } else {
                n
            };
            prost::encoding::encode_varint(n as u64, out);
        }
        Ty::Double => {
            key(out, tag, 1);
            let f = v
                .as_f64()
                .ok_or_else(|| ProtobufError::not_a(v, "a number"))?;
            out.extend_from_slice(&f.to_le_bytes());
        }
        Ty::Message(name) => {
            let b = encode_message(name, v, 0)?;
            len_field(out, tag, &b);
        }
    }
    Ok(())
}

pub(super) fn as_str(v: &Value) -> Result<String, ProtobufError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ProtobufError::not_a(other, "a string")),
    }
}

fn encode_time(v: &Value) -> Result<Vec<u8>, ProtobufError> {
    let s = as_str(v)?;
    let seconds =
        crate::api::civil::parse_rfc3339(&s).ok_or_else(|| ProtobufError::not_a(&s, "a time"))?;
    let nanos: i64 = s
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| {
            let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
            format!("{digits:0<9}")[..9].parse().unwrap_or(0)
        })
        .unwrap_or(0);
    let mut out = Vec::new();
    key(&mut out, 1, 0);
    prost::encoding::encode_varint(seconds as u64, &mut out);
    key(&mut out, 2, 0);
    prost::encoding::encode_varint(nanos as u64, &mut out);
    Ok(out)
}

/// Encodes `v` as message `name`.
pub fn encode_message(name: &str, v: &Value, depth: usize) -> Result<Vec<u8>, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep("objects"));
    }
    let mut out = Vec::new();
    match name {
        TIME | MICRO_TIME => return encode_time(v),
        DURATION => {
            let s = as_str(v)?;
            let ns = parse_go_duration(&s).ok_or_else(|| ProtobufError::not_a(&s, "a duration"))?;
            key(&mut out, 1, 0);
            prost::encoding::encode_varint(ns as u64, &mut out);
            return Ok(out);
        }
        INT_OR_STRING => {
            match v {
                Value::String(s) => {
                    key(&mut out, 1, 0);
                    out.push(1);
                    len_field(&mut out, 3, s.as_bytes());
                }
                other => {
                    key(&mut out, 1, 0);
                    out.push(0);
                    key(&mut out, 2, 0);
                    prost::encoding::encode_varint(
                        i64::from(int_of(other)? as i32) as u64,
                        &mut out,
                    );
                }
            }
            return Ok(out);
        }
        QUANTITY | QUANTITY_VALUE => {
            len_field(&mut out, 1, as_str(v)?.as_bytes());
            return Ok(out);
        }
        RAW_EXTENSION | FIELDS_V1 => {
            len_field(&mut out, 1, v.to_string().as_bytes());
            return Ok(out);
        }
        _ => {}
    }
    if is_apiextensions(name, "JSON") {
        len_field(&mut out, 1, v.to_string().as_bytes());
        return Ok(out);
    }
    if let Some(b) = encode_json_schema_union(name, v, depth)? {
        return Ok(b);
    }
    let wrapped;
    let v = if is_string_list(name) && v.is_array() {
        wrapped = json!({"items": v});
        &wrapped
    } else {
        v
    };
    let defs = schema()
        .messages
        .get(name)
        .ok_or_else(|| ProtobufError::UnknownMessage(name.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(ProtobufError::NotAnObject {
            message: name.to_string(),
            value: v.to_string(),
        });
    };
    for def in defs {
        if matches!(def.rule, Rule::Inline) {
            let b = encode_message(ty_name(&def.ty), v, depth + 1)?;
            if !b.is_empty() {
                len_field(&mut out, def.tag, &b);
            }
            continue;
        }
        let Some(fv) = obj.get(&def.json).filter(|x| !x.is_null()) else {
            continue;
        };
        match &def.rule {
            Rule::Single | Rule::Inline => encode_value(&mut out, def.tag, &def.ty, fv, depth)?,
            Rule::Repeated => {
                for item in fv.as_array().into_iter().flatten() {
                    encode_value(&mut out, def.tag, &def.ty, item, depth)?;
                }
            }
            Rule::Map(value_ty) => {
                for (k, item) in fv.as_object().into_iter().flatten() {
                    let mut entry = Vec::new();
                    encode_scalar(&mut entry, 1, &def.ty, &json!(k))?;
                    if !item.is_null() {
                        encode_value(&mut entry, 2, value_ty, item, depth)?;
                    }
                    len_field(&mut out, def.tag, &entry);
                }
            }
        }
    }
    Ok(out)
}

fn ty_name(ty: &Ty) -> &str {
    match ty {
        Ty::Message(name) => name,
        _ => "",
    }
}

fn encode_value(
    out: &mut Vec<u8>,
    tag: u64,
    ty: &Ty,
    v: &Value,
    depth: usize,
) -> Result<(), ProtobufError> {
    match ty {
        Ty::Message(name) => {
            let b = encode_message(name, v, depth + 1)?;
            len_field(out, tag, &b);
            Ok(())
        }
        t => encode_scalar(out, tag, t, v),
    }
}

/// Encodes an object (with apiVersion and kind) as `k8s\0` + `runtime.Unknown`; `None`
/// when its kind has no protobuf form (tables, custom resources).
pub fn encode_envelope(obj: &Value) -> Option<Result<Vec<u8>, ProtobufError>> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    let message = message_of(api_version, kind)?;
    Some(encode_message(message, obj, 0).map(|raw| envelope(api_version, kind, &raw)))
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw, contentEncoding: "", contentType: ""}`.
pub fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    len_field(&mut type_meta, 1, api_version.as_bytes());
    len_field(&mut type_meta, 2, kind.as_bytes());
    let mut out = super::MAGIC.to_vec();
    len_field(&mut out, 1, &type_meta);
    len_field(&mut out, 2, raw);
    len_field(&mut out, 3, b"");
    len_field(&mut out, 4, b"");
    out
}

/// A watch event as upstream frames it: `WatchEvent{type, object: RawExtension{raw:
/// the object's envelope}}`, without magic or envelope of its own.
pub fn watch_event(event_type: &str, object: &[u8]) -> Vec<u8> {
    let mut raw_ext = Vec::new();
    len_field(&mut raw_ext, 1, object);
    let mut out = Vec::new();
    len_field(&mut out, 1, event_type.as_bytes());
    len_field(&mut out, 2, &raw_ext);
    out
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
