//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`): request bodies of every
//! built-in kind (kubectl ≥ 1.32 sends its generator commands' objects this way, Go
//! clients built on client-go their whole objects and `DeleteOptions`), and responses,
//! lists, `Status` and watch streams for clients that ask for it. The codec is driven by
//! a table generated from upstream's `.proto` files (through the `k8s-pb` crate's
//! types; `schema_gen.rs`), so every field of every message is known.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` message
//! { 1: TypeMeta { 1: apiVersion, 2: kind }, 2: raw object bytes }.

pub mod codec;
#[cfg(test)]
mod conformance;
mod json_schema;
#[cfg(test)]
mod schema_gen;
mod values;

use crate::apiserver::status::Body;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// Why a protobuf body cannot be read or an object cannot be written as protobuf.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The bytes break the wire format (a truncated field, field number 0, a field of
    /// the wrong wire type, …).
    #[error("{0}")]
    Malformed(&'static str),
    /// A varint that does not end or overflows.
    #[error(transparent)]
    Varint(#[from] prost::DecodeError),
    /// A wire type protobuf 3 does not use (groups) or that does not exist.
    #[error("unsupported wire type {0}")]
    WireType(u64),
    /// Embedded JSON (`RawExtension`, `FieldsV1`) that does not parse.
    #[error("embedded JSON: {0}")]
    EmbeddedJson(serde_json::Error),
    /// Messages (decoding) or objects (encoding) nested past the depth limit.
    #[error("{0} nested deeper than {max}", max = codec::MAX_DEPTH)]
    TooDeep(&'static str),
    /// A message name the generated table does not hold.
    #[error("no protobuf message {0}")]
    UnknownMessage(String),
    /// The body lacks the `k8s\0` magic.
    #[error("the body does not start with the Kubernetes protobuf magic")]
    NoMagic,
    /// `runtime.Unknown` with a content encoding (gzip).
    #[error("compressed protobuf bodies are not supported")]
    Compressed,
    /// A kind without a protobuf form (custom resources, tables).
    #[error("{kind} in version {api_version:?} has no protobuf form; send application/json")]
    NoProtobufForm {
        /// The envelope's kind.
        kind: String,
        /// The envelope's apiVersion.
        api_version: String,
    },
    /// A JSON value of the wrong type for its field.
    #[error("{value} is not {expected}")]
    NotA {
        /// The value, as JSON.
        value: String,
        /// What the field needs ("an integer", "base64", "a time", …).
        expected: &'static str,
    },
    /// A message field whose JSON value is not an object.
    #[error("{message}: {value} is not an object")]
    NotAnObject {
        /// The message's name.
        message: String,
        /// The value, as JSON.
        value: String,
    },
}

impl ProtobufError {
    fn not_a(value: &impl std::fmt::Display, expected: &'static str) -> ProtobufError {
        ProtobufError::NotA {
            value: value.to_string(),
            expected,
        }
    }
}

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
const MAGIC: &[u8] = b"k8s\0";

/// Decodes a protobuf request body into its JSON form.
pub fn to_json(body: &[u8]) -> Result<Value, ProtobufError> {
    codec::decode_envelope(body, 0)
}

/// The protobuf form of an object (with apiVersion and kind), `None` when its kind has
/// none (tables, custom resources) and JSON must be sent.
pub fn from_json(obj: &Value) -> Option<Vec<u8>> {
    codec::encode_envelope(obj)?.ok()
}

/// A JSON response in protobuf, for a client that prefers it: objects, lists and
/// `Status` of kinds with a protobuf form (others stay JSON, which client-go reads too);
/// a watch stream frame by frame (each JSON line, one event, becomes a length-prefixed
/// `WatchEvent`).
pub async fn transcode(resp: Response<Body>, watch: bool) -> Response<Body> {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/json");
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if watch {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(WATCH_MEDIA_TYPE),
        );
        let body = body
            .map_frame(|f| f.map_data(|line| watch_frame(&line)))
            .boxed();
        return Response::from_parts(parts, body);
    }
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| from_json(&v));
    let body = match encoded {
        Some(pb) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(pb)
        }
        None => bytes,
    };
    Response::from_parts(parts, http_body_util::Full::new(body).boxed())
}

/// One watch event line (`{"type": …, "object": …}`) as a protobuf frame: a 4-byte
/// big-endian length, then the `WatchEvent` (no magic of its own), whose object is the
/// object's enveloped protobuf.
fn watch_frame(line: &[u8]) -> Bytes {
    let event: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let kind = event["type"].as_str().unwrap_or("ERROR");
    let (kind, object) = match from_json(&event["object"]) {
        Some(o) => (kind, o),
        None => {
            let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": "this watch event has no protobuf form", "reason": "InternalError",
                "code": 500});
            ("ERROR", from_json(&status).unwrap_or_default())
        }
    };
    let event = codec::watch_event(kind, &object);
    let mut frame = Vec::with_capacity(event.len() + 4);
    frame.extend_from_slice(&u32::try_from(event.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&event);
    Bytes::from(frame)
}

/// Whether a client's `Accept` header prefers protobuf to JSON: the first media range
/// (by quality, then order) this server can produce.
pub fn preferred(accept: &str) -> bool {
    let mut ranges: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, r)| {
            let mut parts = r.split(';').map(str::trim);
            let media = parts.next()?;
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                }
                // `as=Table` and other conversions are JSON only
                if p.starts_with("as=") {
                    return None;
                }
            }
            (q > 0.0).then_some((q, i, media))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges
        .iter()
        .find(|(_, _, m)| {
            matches!(
                *m,
                MEDIA_TYPE | "application/json" | "application/*" | "*/*" | "application/yaml"
            )
        })
        .is_some_and(|(_, _, m)| *m == MEDIA_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_protobuf_only_when_they_prefer_it() {
        assert!(preferred("application/vnd.kubernetes.protobuf, */*"));
        assert!(preferred(
            "application/vnd.kubernetes.protobuf,application/json"
        ));
        assert!(!preferred(
            "application/json, application/vnd.kubernetes.protobuf"
        ));
        assert!(!preferred(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!preferred(
            "application/vnd.kubernetes.protobuf;q=0.5, application/json"
        ));
        assert!(!preferred(""));
        assert!(!preferred("*/*"));
    }
}
