//! `/openapi/v2`, the Swagger 2.0 document older kubectl (1.27) reads to learn that the
//! server validates fields itself (`fieldValidation` on each kind's PATCH operation).
//! kubectl decodes it as gnostic's `openapi.v2.Document` protobuf, so that is encoded
//! here by hand for the subset it reads: paths → patch operation → the
//! `x-kubernetes-group-version-kind` extension and the query parameters. Schemas are
//! served by `/openapi/v3`.

use super::registry::Registry;
use super::status::{Body, json, json_typed};
use crate::api::registry::{RESOURCES, Resource};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The protobuf media type clients ask for (with `@`, which is not a valid MIME token,
/// so responses use the dotted form below, as kube-openapi does).
const PROTOBUF_ACCEPT: &str = "com.github.proto-openapi.spec.v2";
/// The protobuf media type of the response.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const QUERY_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited field (strings and embedded messages).
fn field(buf: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(buf, (number << 3) | 2);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn message(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::new();
    build(&mut buf);
    buf
}

/// (path, group, version, kind) of every PATCH endpoint.
fn patch_paths(
    resources: &[&'static Resource],
) -> Vec<(String, &'static str, &'static str, &'static str)> {
    resources
        .iter()
        .filter(|r| r.verbs.contains(&"patch"))
        .map(|r| {
            let base = if r.group.is_empty() {
                format!("/api/{}", r.version)
            } else {
                format!("/apis/{}/{}", r.group, r.version)
            };
            let path = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("{base}/{}/{{name}}", r.plural)
            };
            (path, r.group, r.version, r.kind)
        })
        .collect()
}

fn encode(resources: &[&'static Resource]) -> Vec<u8> {
    message(|doc| {
        field(doc, 1, b"2.0"); // swagger
        field(
            doc,
            2,
            &message(|info| {
                field(info, 1, b"Kubernetes"); // title
                field(info, 2, crate::apiserver::KUBE_GIT_VERSION.as_bytes()); // version
            }),
        );
        field(
            doc,
            8,
            &message(|paths| {
                for (path, group, version, kind) in patch_paths(resources) {
                    let operation = message(|op| {
                        field(op, 5, format!("patch{kind}").as_bytes()); // operation_id
                        for name in QUERY_PARAMS {
                            // ParametersItem.parameter → Parameter.non_body_parameter →
                            // NonBodyParameter.query_parameter_sub_schema
                            let query = message(|q| {
                                field(q, 2, b"query"); // in
                                field(q, 4, name.as_bytes()); // name
                                field(q, 6, b"string"); // type
                            });
                            let non_body = message(|nb| field(nb, 3, &query));
                            let parameter = message(|p| field(p, 2, &non_body));
                            field(op, 8, &message(|item| field(item, 1, &parameter)));
                        }
                        let yaml =
                            format!("group: \"{group}\"\nkind: {kind}\nversion: {version}\n");
                        let any = message(|a| field(a, 2, yaml.as_bytes())); // Any.yaml
                        field(
                            op,
                            13,
                            &message(|ext| {
                                field(ext, 1, b"x-kubernetes-group-version-kind");
                                field(ext, 2, &any);
                            }),
                        );
                    });
                    let item = message(|pi| field(pi, 8, &operation)); // PathItem.patch
                    field(
                        paths,
                        2,
                        &message(|named| {
                            field(named, 1, path.as_bytes());
                            field(named, 2, &item);
                        }),
                    );
                }
            }),
        );
    })
}

fn document_json(resources: &[&'static Resource]) -> Value {
    let mut paths = Map::new();
    for (path, group, version, kind) in patch_paths(resources) {
        let params: Vec<Value> = QUERY_PARAMS
            .iter()
            .map(|n| json!({"name": n, "in": "query", "type": "string", "uniqueItems": true}))
            .collect();
        paths.insert(path, json!({"patch": {
            "operationId": format!("patch{kind}"),
            "parameters": params,
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
            "responses": {"200": {"description": "OK"}},
        }}));
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": crate::apiserver::KUBE_GIT_VERSION}, "paths": paths})
}

/// `GET /openapi/v2`: protobuf when asked for it, JSON otherwise.
/// `GET /openapi/v2`: every resource served now (the built-in document is encoded
/// once; entries added at run time make a fresh one).
pub fn serve(accept: &str, reg: &Registry) -> Response<Body> {
    static PB: OnceLock<Bytes> = OnceLock::new();
    let all = reg.all();
    let only_builtin = all.len() == RESOURCES.len();
    if accept.contains(PROTOBUF_ACCEPT) {
        let body = if only_builtin {
            PB.get_or_init(|| Bytes::from(encode(RESOURCES))).clone()
        } else {
            Bytes::from(encode(&all))
        };
        let mut resp = json_typed(StatusCode::OK, &Value::Null, PROTOBUF);
        *resp.body_mut() = Full::new(body).boxed();
        return resp;
    }
    json(StatusCode::OK, &document_json(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads (field number, bytes) pairs of length-delimited fields.
    fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let read_varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        };
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = read_varint(&mut b);
            assert_eq!(key & 7, 2, "only length-delimited fields are written");
            let len = read_varint(&mut b) as usize;
            out.push((key >> 3, b[..len].to_vec()));
            b = &b[len..];
        }
        out
    }

    #[test]
    fn the_protobuf_document_nests_as_gnostic_expects() {
        let doc = encode(RESOURCES);
        let top = fields(&doc);
        assert_eq!(top[0], (1, b"2.0".to_vec()));
        let paths = &top.iter().find(|(n, _)| *n == 8).unwrap().1;
        let first = fields(paths);
        let named = fields(&first[0].1);
        assert!(String::from_utf8_lossy(&named[0].1).starts_with("/api/v1/"));
        let patch_op = &fields(&named[1].1)[0];
        assert_eq!(patch_op.0, 8, "PathItem.patch");
        let op = fields(&patch_op.1);
        let params: Vec<String> = op
            .iter()
            .filter(|(n, _)| *n == 8)
            .map(|(_, item)| {
                let parameter = &fields(item)[0].1;
                let non_body = &fields(parameter)[0].1;
                let query = &fields(non_body)[0].1;
                let q = fields(query);
                String::from_utf8(q.iter().find(|(n, _)| *n == 4).unwrap().1.clone()).unwrap()
            })
            .collect();
        assert!(params.contains(&"fieldValidation".to_string()));
        let ext = fields(&op.iter().find(|(n, _)| *n == 13).unwrap().1);
        assert_eq!(ext[0].1, b"x-kubernetes-group-version-kind");
        let yaml = String::from_utf8(fields(&ext[1].1)[0].1.clone()).unwrap();
        assert!(
            yaml.contains("kind: ") && yaml.contains("version: v1"),
            "{yaml}"
        );
    }
}
