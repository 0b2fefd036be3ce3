//! The JSON-schema unions of apiextensions (`JSONSchemaPropsOrArray`, `…OrBool`,
//! `…OrStringArray`): one message in protobuf, one of its fields in JSON.

use super::ProtobufError;
use super::codec::{
    Wire, as_str, decode_message, encode_message, fields, is_apiextensions, key, len_field, text,
    varint_field,
};
use serde_json::Value;

/// The JSON-schema unions of apiextensions, by field number: `OrArray` { 1 schema,
/// 2 jsonSchemas }, `OrBool` { 1 allows, 2 schema }, `OrStringArray` { 1 schema,
/// 2 property }; their JSON is one of the fields.
pub(super) fn decode_json_schema_union(
    name: &str,
    b: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let props = name
        .rsplit_once('.')
        .map(|(pkg, _)| format!("{pkg}.JsonSchemaProps"));
    let Some(props) = props else { return Ok(None) };
    let decode = |w: &[u8]| decode_message(&props, w, depth + 1);
    let fs = fields(b)?;
    let bytes_of = |n: u64| {
        fs.iter().filter_map(move |(tag, w)| match w {
            Wire::Bytes(v) if *tag == n => Some(*v),
            _ => None,
        })
    };
    Ok(Some(if is_apiextensions(name, "JSONSchemaPropsOrArray") {
        let many: Vec<Value> = bytes_of(2).map(decode).collect::<Result<_, _>>()?;
        match bytes_of(1).next_back() {
            Some(one) if many.is_empty() => decode(one)?,
            _ => Value::Array(many),
        }
    } else if is_apiextensions(name, "JSONSchemaPropsOrBool") {
        match bytes_of(2).next_back() {
            Some(schema) => decode(schema)?,
            None => Value::Bool(varint_field(b, 1)? != 0),
        }
    } else if is_apiextensions(name, "JSONSchemaPropsOrStringArray") {
        let strings: Vec<Value> = bytes_of(2)
            .map(|s| text(s).map(Value::String))
            .collect::<Result<_, _>>()?;
        match bytes_of(1).next_back() {
            Some(one) if strings.is_empty() => decode(one)?,
            _ => Value::Array(strings),
        }
    } else {
        return Ok(None);
    }))
}

pub(super) fn encode_json_schema_union(
    name: &str,
    v: &Value,
    depth: usize,
) -> Result<Option<Vec<u8>>, ProtobufError> {
    let Some((pkg, _)) = name.rsplit_once('.') else {
        return Ok(None);
    };
    let props = format!("{pkg}.JsonSchemaProps");
    let mut out = Vec::new();
    let schema = |out: &mut Vec<u8>, tag: u64, v: &Value| -> Result<(), ProtobufError> {
        let b = encode_message(&props, v, depth + 1)?;
        len_field(out, tag, &b);
        Ok(())
    };
    if is_apiextensions(name, "JSONSchemaPropsOrArray") {
        match v {
            Value::Array(items) => {
                for item in items {
                    schema(&mut out, 2, item)?;
                }
            }
            other => schema(&mut out, 1, other)?,
        }
    } else if is_apiextensions(name, "JSONSchemaPropsOrBool") {
        key(&mut out, 1, 0);
        out.push(u8::from(v.as_bool().unwrap_or(true)));
        if !v.is_boolean() {
            schema(&mut out, 2, v)?;
        }
    } else if is_apiextensions(name, "JSONSchemaPropsOrStringArray") {
        match v {
            Value::Array(items) => {
                for item in items {
                    len_field(&mut out, 2, as_str(item)?.as_bytes());
                }
            }
            other => schema(&mut out, 1, other)?,
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}
