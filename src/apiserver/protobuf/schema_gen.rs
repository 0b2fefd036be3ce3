//! Generates `schema.json`, the field table the protobuf codec reads, from the Rust
//! types the `k8s-pb` crate generates from upstream's `.proto` files (the crate is a
//! dev-dependency: this test reads its sources, and `conformance.rs` checks the codec
//! against its types). The JSON names come from the OpenAPI schemas this server
//! serves. `SKUA_REGENERATE=1 cargo nextest run protobuf::schema_gen` rewrites the
//! file; otherwise the test fails when the file and k8s-pb disagree.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The source directory of the k8s-pb crate in the lock file.
fn k8s_pb_source() -> PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(env!("SKUA_TARGET"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "k8s-pb")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("k8s-pb is a dev-dependency");
    Path::new(manifest).with_file_name("src")
}

/// `io.k8s.api.core.v1` for `api/core/v1`, as the OpenAPI definitions name packages.
fn package(module: &[String]) -> String {
    let mut parts = vec!["io".to_string(), "k8s".to_string()];
    for (i, m) in module.iter().enumerate() {
        parts.push(if i == 0 {
            m.replace('_', "-")
        } else {
            m.clone()
        });
    }
    parts.join(".")
}

fn normalized(name: &str) -> String {
    name.trim_start_matches("r#")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.trim_start_matches("r#").split('_').enumerate() {
        let mut chars = part.chars();
        if i == 0 {
            out.push_str(part);
        } else if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The JSON name of a field of a message the OpenAPI documents do not describe (groups
/// not served yet, such as apiextensions): the proto name, with JSON schema's own
/// spellings (`$ref`, `$schema`, `x-kubernetes-…`).
fn json_name_without_schema(message: &str, rust: &str) -> String {
    let json_schema = message == "JsonSchemaProps";
    match rust {
        "ref" if json_schema => "$ref".into(),
        "schema" if json_schema => "$schema".into(),
        "open_apiv3_schema" => "openAPIV3Schema".into(),
        r if r.starts_with("x_kubernetes_") => r.replace('_', "-"),
        // Go's `UID` is `uID` in the .proto, `uid` in JSON
        "u_id" => "uid".into(),
        r => go_initialisms(&lower_camel(r)),
    }
}

/// Go's initialisms after the first word, as its JSON names keep them (`nodeID`,
/// `clientCIDR`, `insecureSkipTLSVerifyBackend`, `podIPs`).
fn go_initialisms(camel: &str) -> String {
    const INITIALISMS: [(&str, &str); 9] = [
        ("Id", "ID"),
        ("Ips", "IPs"),
        ("Ip", "IP"),
        ("Ipc", "IPC"),
        ("Pid", "PID"),
        ("Tls", "TLS"),
        ("Cidr", "CIDR"),
        ("Url", "URL"),
        ("Dns", "DNS"),
    ];
    // split before each capital: words after the first
    let mut words: Vec<String> = Vec::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(w) = words.last_mut() {
            w.push(c);
        }
    }
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let upper = INITIALISMS.iter().find(|(from, _)| from == w);
            match upper {
                Some((_, to)) if i > 0 => (*to).to_string(),
                _ => w.clone(),
            }
        })
        .collect()
}

/// The message a field's Rust type names: the innermost path argument that is not a
/// container, resolved against the module it is written in.
fn message_type(ty: &syn::Type, module: &[String]) -> Option<(Vec<String>, String)> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let name = last.ident.to_string();
    if matches!(
        name.as_str(),
        "Option" | "Vec" | "Box" | "BTreeMap" | "HashMap"
    ) {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        return args.args.iter().rev().find_map(|a| match a {
            syn::GenericArgument::Type(t) => message_type(t, module),
            _ => None,
        });
    }
    if name == "String" || name == "u8" {
        return None;
    }
    let mut at: Vec<String> = module.to_vec();
    let segs: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let mut rest = &segs[..segs.len() - 1];
    while let Some((first, tail)) = rest.split_first() {
        match first.as_str() {
            "super" => {
                at.pop();
            }
            "crate" => at.clear(),
            other => at.push(other.to_string()),
        }
        rest = tail;
    }
    Some((at, name))
}

struct Parsed {
    /// (module, Rust name) → fields (tag, Rust name, kind, rule, message type)
    messages: BTreeMap<(Vec<String>, String), Vec<RawField>>,
    /// apiVersion → module
    api_versions: BTreeMap<String, Vec<String>>,
}

struct RawField {
    tag: u32,
    name: String,
    kind: String,
    rule: &'static str,
    message: Option<(Vec<String>, String)>,
}

fn parse_attr(attr: &syn::Attribute) -> Option<(String, &'static str, u32)> {
    if !attr.path().is_ident("prost") {
        return None;
    }
    let text = quote::ToTokens::to_token_stream(&attr.meta)
        .to_string()
        .replace(' ', "");
    let inner = text.strip_prefix("prost(")?.strip_suffix(')')?;
    // split at the commas outside quotes: `btree_map="string,message"` is one part
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in inner.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => parts.push(String::new()),
            c => parts.last_mut()?.push(c),
        }
    }
    let mut kind = String::new();
    let mut rule = "";
    let mut tag = 0;
    for (i, part) in parts.iter().enumerate() {
        if let Some(t) = part.strip_prefix("tag=") {
            tag = t.parse().ok()?;
        } else if let Some(m) = part.strip_prefix("btree_map=") {
            kind = m.to_string();
            rule = "m";
        } else if i == 0 {
            kind = part.split('=').next()?.to_string();
        } else if part == "repeated" {
            rule = "r";
        }
    }
    Some((kind, rule, tag))
}

fn parse(dir: &Path, module: &mut Vec<String>, out: &mut Parsed) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("k8s-pb source")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            module.push(path.file_name().unwrap().to_string_lossy().into_owned());
            parse(&path, module, out);
            module.pop();
            continue;
        }
        if path.file_name().is_none_or(|n| n != "mod.rs") || module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let file = syn::parse_file(&text).expect("k8s-pb source parses");
        for item in file.items {
            match item {
                syn::Item::Struct(s) => {
                    let mut fields = Vec::new();
                    for f in &s.fields {
                        let Some((kind, rule, tag)) = f.attrs.iter().find_map(parse_attr) else {
                            continue;
                        };
                        let message = message_type(&f.ty, module);
                        fields.push(RawField {
                            tag,
                            name: f.ident.as_ref().expect("named").to_string(),
                            kind,
                            rule,
                            message,
                        });
                    }
                    out.messages
                        .insert((module.clone(), s.ident.to_string()), fields);
                }
                syn::Item::Impl(i) => {
                    let is_resource = i.trait_.as_ref().is_some_and(|(_, p, _)| {
                        p.segments.last().is_some_and(|s| s.ident == "Resource")
                    });
                    if !is_resource {
                        continue;
                    }
                    for it in &i.items {
                        if let syn::ImplItem::Const(c) = it {
                            if c.ident == "API_VERSION" {
                                if let syn::Expr::Lit(syn::ExprLit {
                                    lit: syn::Lit::Str(s),
                                    ..
                                }) = &c.expr
                                {
                                    out.api_versions.insert(s.value(), module.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The schema as the codec reads it.
pub(super) fn generate() -> String {
    let mut parsed = Parsed {
        messages: BTreeMap::new(),
        api_versions: BTreeMap::new(),
    };
    parse(&k8s_pb_source(), &mut Vec::new(), &mut parsed);
    let schemas = crate::apiserver::openapi::all_schemas();
    // the OpenAPI name of a message (its Go casing: `APIService`, not `ApiService`)
    let full_name = |module: &[String], rust: &str| -> String {
        let pkg = package(module);
        let wanted = format!("{pkg}.{rust}").to_ascii_lowercase();
        schemas
            .keys()
            .find(|k| k.to_ascii_lowercase() == wanted)
            .cloned()
            .unwrap_or(format!("{pkg}.{rust}"))
    };
    let props_of = |name: &str| -> Vec<String> {
        schemas
            .get(name)
            .and_then(|s| s["properties"].as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let matching = |props: &[String], field: &str| {
        props
            .iter()
            .find(|p| normalized(p) == normalized(field))
            .cloned()
    };
    // Go's inline members (`ProbeHandler` in `Probe`, `VolumeSource` in `Volume`): a
    // message field without a JSON property of its own whose message's fields are all
    // properties of the parent; that message takes its JSON names from the parent
    let mut inline: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut inline_fields: std::collections::BTreeSet<(String, u32)> = Default::default();
    for ((module, rust), fields) in &parsed.messages {
        let name = full_name(module, rust);
        let props = props_of(&name);
        if props.is_empty() {
            continue;
        }
        for f in fields {
            let Some((m, r)) = f.message.as_ref().filter(|_| f.rule.is_empty()) else {
                continue;
            };
            if matching(&props, &f.name).is_some() {
                continue;
            }
            let Some(sub) = parsed.messages.get(&(m.clone(), r.clone())) else {
                continue;
            };
            // most, not all: k8s-pb may know fields newer than the served schemas
            let known = sub
                .iter()
                .filter(|g| matching(&props, &g.name).is_some())
                .count();
            if !sub.is_empty() && known * 4 >= sub.len() * 3 {
                inline
                    .entry(full_name(m, r))
                    .or_default()
                    .extend(props.clone());
                inline_fields.insert((name.clone(), f.tag));
            }
        }
    }
    let mut messages = BTreeMap::new();
    for ((module, rust), fields) in &parsed.messages {
        let name = full_name(module, rust);
        let mut props = props_of(&name);
        if props.is_empty() {
            props = inline.get(&name).cloned().unwrap_or_default();
        }
        let entries: Vec<Value> = fields
            .iter()
            .map(|f| {
                let json_name = matching(&props, &f.name)
                    .unwrap_or_else(|| json_name_without_schema(rust, &f.name));
                let message = f.message.as_ref().map(|(m, r)| full_name(m, r));
                let ty = match (f.rule, message) {
                    ("m", Some(msg)) => f.kind.replace("message", &msg),
                    ("m", None) => f.kind.clone(),
                    (_, Some(msg)) if f.kind == "message" => msg,
                    _ => f.kind.clone(),
                };
                let rule = if inline_fields.contains(&(name.clone(), f.tag)) {
                    "i"
                } else {
                    f.rule
                };
                serde_json::json!([f.tag, json_name, ty, rule])
            })
            .collect();
        messages.insert(name, entries);
    }
    let api_versions: Map<String, Value> = parsed
        .api_versions
        .iter()
        .map(|(v, m)| (v.clone(), Value::String(package(m))))
        .collect();
    let mut out = String::from("{\n\"apiVersions\": ");
    out.push_str(&Value::Object(api_versions).to_string());
    out.push_str(",\n\"messages\": {\n");
    let last = messages.len().saturating_sub(1);
    for (i, (name, fields)) in messages.iter().enumerate() {
        out.push_str(&format!(
            "{}: {}{}\n",
            Value::String(name.clone()),
            Value::Array(fields.clone()),
            if i == last { "" } else { "," }
        ));
    }
    out.push_str("}}\n");
    out
}

#[test]
fn json_names_keep_gos_initialisms() {
    assert_eq!(go_initialisms("nodeId"), "nodeID");
    assert_eq!(go_initialisms("clientCidr"), "clientCIDR");
    assert_eq!(
        go_initialisms("insecureSkipTlsVerifyBackend"),
        "insecureSkipTLSVerifyBackend"
    );
    assert_eq!(go_initialisms("podIps"), "podIPs");
    assert_eq!(go_initialisms("idleTimeout"), "idleTimeout");
    assert_eq!(
        json_name_without_schema("BoundObjectReference", "u_id"),
        "uid"
    );
}

#[test]
fn the_schema_is_what_k8s_pb_generates_from_upstreams_protos() {
    let generated = generate();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apiserver/protobuf/schema.json");
    if std::env::var_os("SKUA_REGENERATE").is_some() {
        std::fs::write(&path, &generated).expect("write schema.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "src/apiserver/protobuf/schema.json differs from what k8s-pb generates; run with SKUA_REGENERATE=1"
    );
}
