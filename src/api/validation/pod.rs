//! Upstream's validation of what in a pod spec names a path or a file: volume and
//! container names, projected paths and subPaths, port names; ConfigMap and Secret
//! keys; Service and EndpointSlice port names. The kubelet turns these into host paths
//! and nftables names, so each is checked as upstream checks it (messages included).

use super::Cause;
use serde_json::Value;
use std::collections::HashSet;

const DNS_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause::invalid(field, value, detail)
}

fn duplicate(field: &str, value: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: \"{value}\""),
    }
}

fn not_found(field: &str, value: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueNotFound",
        message: format!("Not found: \"{value}\""),
    }
}

/// A lowercase RFC 1123 label.
pub fn dns_label_problem(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| DNS_LABEL_MSG.to_string())
}

/// Upstream's `IsValidPortName` (IANA_SVC_NAME): the first problem, if any.
pub fn port_name_problem(s: &str) -> Option<&'static str> {
    if s.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        return Some("must not contain consecutive hyphens");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not begin or end with a hyphen");
    }
    None
}

/// Upstream's `validateLocalDescendingPath` and `validateLocalNonReservedPath`.
fn local_path(path: &str, field: &str, reserved: bool, out: &mut Vec<Cause>) {
    if path.starts_with('/') {
        out.push(invalid(field, path, "must be a relative path"));
    }
    if path.split('/').any(|p| p == "..") {
        out.push(invalid(field, path, "must not contain '..'"));
    }
    // upstream does not repeat what the '..' element check already said
    if reserved && path.starts_with("..") && !path.starts_with("../") {
        out.push(invalid(field, path, "must not start with '..'"));
    }
    if path.contains('\0') {
        out.push(invalid(field, path, "must not contain a NUL byte"));
    }
}

/// `items[]` of a configMap or secret source: a key and a relative path.
fn key_to_paths(items: &Value, field: &str, out: &mut Vec<Cause>) {
    for (i, item) in items.as_array().into_iter().flatten().enumerate() {
        let f = format!("{field}.items[{i}]");
        match item["key"].as_str() {
            None | Some("") => out.push(Cause::required(&format!("{f}.key"))),
            Some(_) => {}
        }
        match item["path"].as_str() {
            None | Some("") => out.push(Cause::required(&format!("{f}.path"))),
            Some(p) => local_path(p, &format!("{f}.path"), true, out),
        }
    }
}

fn downward_items(items: &Value, field: &str, out: &mut Vec<Cause>) {
    for (i, item) in items.as_array().into_iter().flatten().enumerate() {
        let f = format!("{field}.items[{i}].path");
        match item["path"].as_str() {
            None | Some("") => out.push(Cause::required(&f)),
            Some(p) => local_path(p, &f, true, out),
        }
    }
}

/// A required name that is a DNS-1123 label, unique among `seen`.
fn unique_label(name: &Value, field: &str, seen: &mut HashSet<String>, out: &mut Vec<Cause>) {
    match name.as_str() {
        None | Some("") => out.push(Cause::required(field)),
        Some(n) => {
            if let Some(problem) = dns_label_problem(n) {
                out.push(invalid(field, n, &problem));
            } else if !seen.insert(n.to_string()) {
                out.push(duplicate(field, n));
            }
        }
    }
}

fn volumes(spec: &Value, field: &str, out: &mut Vec<Cause>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        unique_label(&v["name"], &format!("{f}.name"), &mut names, out);
        for kind in ["configMap", "secret"] {
            if v[kind].is_object() {
                key_to_paths(&v[kind]["items"], &format!("{f}.{kind}"), out);
            }
        }
        if v["downwardAPI"].is_object() {
            downward_items(&v["downwardAPI"]["items"], &format!("{f}.downwardAPI"), out);
        }
        let sources = v["projected"]["sources"].as_array();
        for (j, src) in sources.into_iter().flatten().enumerate() {
            let sf = format!("{f}.projected.sources[{j}]");
            for kind in ["configMap", "secret"] {
                if src[kind].is_object() {
                    key_to_paths(&src[kind]["items"], &format!("{sf}.{kind}"), out);
                }
            }
            if src["downwardAPI"].is_object() {
                downward_items(
                    &src["downwardAPI"]["items"],
                    &format!("{sf}.downwardAPI"),
                    out,
                );
            }
            if src["serviceAccountToken"].is_object() {
                let tf = format!("{sf}.serviceAccountToken.path");
                match src["serviceAccountToken"]["path"].as_str() {
                    None | Some("") => out.push(Cause::required(&tf)),
                    Some(p) => local_path(p, &tf, true, out),
                }
            }
        }
    }
    names
}

/// Containers of every kind: names unique DNS-1123 labels across all three lists,
/// port names IANA service names, mounts of existing volumes with relative subPaths.
fn containers(spec: &Value, field: &str, volume_names: &HashSet<String>, out: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let f = format!("{field}.{list}[{i}]");
            unique_label(&c["name"], &format!("{f}.name"), &mut names, out);
            if list != "ephemeralContainers" && c["image"].as_str().is_none_or(str::is_empty) {
                out.push(Cause::required(&format!("{f}.image")));
            }
            let mut port_names = HashSet::new();
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let pf = format!("{f}.ports[{j}].name");
                if let Some(problem) = port_name_problem(n) {
                    out.push(invalid(&pf, n, problem));
                } else if !port_names.insert(n) {
                    out.push(duplicate(&pf, n));
                }
            }
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mf = format!("{f}.volumeMounts[{j}]");
                match m["name"].as_str() {
                    None | Some("") => out.push(Cause::required(&format!("{mf}.name"))),
                    Some(n) if !volume_names.contains(n) => {
                        out.push(not_found(&format!("{mf}.name"), n))
                    }
                    _ => {}
                }
                if m["mountPath"].as_str().is_none_or(str::is_empty) {
                    out.push(Cause::required(&format!("{mf}.mountPath")));
                }
                for key in ["subPath", "subPathExpr"] {
                    if let Some(sub) = m[key].as_str().filter(|s| !s.is_empty()) {
                        local_path(sub, &format!("{mf}.{key}"), false, out);
                    }
                }
            }
        }
    }
}

/// A pod spec (of a Pod or a workload's template) at `field`.
pub fn pod_spec(spec: Option<&Value>, field: &str, out: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        out.push(Cause::required(&format!("{field}.containers")));
        return;
    };
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        out.push(Cause::required(&format!("{field}.containers")));
    }
    let volume_names = volumes(spec, field, out);
    containers(spec, field, &volume_names, out);
}

/// ConfigMap and Secret keys: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.`,
/// `..` or `..`-prefixed (the atomic writer's own names), and no key in both maps.
pub fn config_keys(obj: &Value, maps: &[&str], out: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for map in maps {
        for key in obj[*map].as_object().into_iter().flat_map(|m| m.keys()) {
            let f = format!("{map}[{key}]");
            if key.len() > 253 {
                out.push(invalid(&f, key, "must be no more than 253 characters"));
            }
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                out.push(invalid(&f, key, CONFIG_KEY_MSG));
            }
            if key == "." {
                out.push(invalid(&f, key, "must not be '.'"));
            } else if key == ".." {
                out.push(invalid(&f, key, "must not be '..'"));
            } else if key.starts_with("..") {
                out.push(invalid(&f, key, "must not start with '..'"));
            }
            if !seen.insert(key.clone()) {
                out.push(invalid(&f, key, "duplicate of key present in binaryData"));
            }
        }
    }
}

/// Service ports: names DNS-1123 labels, unique, and required when there are several.
pub fn service_ports(obj: &Value, out: &mut Vec<Cause>) {
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    let several = ports.is_some_and(|p| p.len() > 1);
    let mut names = HashSet::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        let f = format!("spec.ports[{i}].name");
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if several => out.push(Cause::required(&f)),
            None => {}
            Some(n) => {
                if let Some(problem) = dns_label_problem(n) {
                    out.push(invalid(&f, n, &problem));
                } else if !names.insert(n) {
                    out.push(duplicate(&f, n));
                }
            }
        }
    }
}

/// EndpointSlice ports: names, when given, DNS-1123 labels.
pub fn endpoint_slice_ports(obj: &Value, out: &mut Vec<Cause>) {
    for (i, p) in obj["ports"].as_array().into_iter().flatten().enumerate() {
        if let Some(n) = p["name"].as_str().filter(|n| !n.is_empty()) {
            if let Some(problem) = dns_label_problem(n) {
                out.push(invalid(&format!("ports[{i}].name"), n, &problem));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn paths_names_and_keys_a_kubelet_would_write_are_checked() {
        let spec = json!({
            "volumes": [
                {"name": "/etc", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "../../etc/cron.d/x"}, {"key": "k", "path": "/abs"}]}},
                {"name": "cfg", "secret": {"secretName": "s"}},
                {"name": "dn", "downwardAPI": {"items": [{"path": "..data", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "pr", "projected": {"sources": [{"serviceAccountToken": {"path": "a/../../t"}}]}}
            ],
            "initContainers": [{"name": "..", "image": "i"}],
            "containers": [
                {"name": "c", "image": "i",
                 "ports": [{"name": "http\nflush", "containerPort": 80}, {"name": "123", "containerPort": 81}],
                 "volumeMounts": [{"name": "cfg", "mountPath": "/c", "subPath": "../x"}, {"name": "nope", "mountPath": "/n"}]}
            ],
            "ephemeralContainers": [{"name": "c"}]
        });
        let mut out = Vec::new();
        pod_spec(Some(&spec), "spec", &mut out);
        assert_eq!(
            fields(&out),
            [
                "spec.volumes[0].name",
                "spec.volumes[1].configMap.items[0].path",
                "spec.volumes[1].configMap.items[1].path",
                "spec.volumes[2].name",
                "spec.volumes[3].downwardAPI.items[0].path",
                "spec.volumes[4].projected.sources[0].serviceAccountToken.path",
                "spec.initContainers[0].name",
                "spec.containers[0].ports[0].name",
                "spec.containers[0].ports[1].name",
                "spec.containers[0].volumeMounts[0].subPath",
                "spec.containers[0].volumeMounts[1].name",
                "spec.ephemeralContainers[0].name",
            ],
            "{out:#?}"
        );
        assert_eq!(out[3].reason, "FieldValueDuplicate");
        assert_eq!(
            out[1].message,
            "Invalid value: \"../../etc/cron.d/x\": must not contain '..'"
        );
        assert!(out[4].message.ends_with("must not start with '..'"));
        assert_eq!(
            out[8].message,
            "Invalid value: \"123\": must contain at least one letter (a-z)"
        );
        assert_eq!(out[10].reason, "FieldValueNotFound");
        assert_eq!(out[11].reason, "FieldValueDuplicate");
        // what upstream accepts passes
        let fine = json!({"volumes": [{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "a/b..c"}]}}],
                          "containers": [{"name": "c", "image": "i", "ports": [{"name": "http-alt"}],
                                          "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "a/b"}]}]});
        let mut out = Vec::new();
        pod_spec(Some(&fine), "spec", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn config_keys_are_upstream_config_keys() {
        let obj = json!({"data": {"ok.key_1-x": "", "..data": "", ".": "", "../x": "", "a b": "", "dup": ""},
                         "binaryData": {"dup": ""}});
        let mut out = Vec::new();
        config_keys(&obj, &["data", "binaryData"], &mut out);
        let msgs: Vec<String> = out
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "data[.]: Invalid value: \".\": must not be '.'",
                &format!("data[../x]: Invalid value: \"../x\": {CONFIG_KEY_MSG}"),
                "data[../x]: Invalid value: \"../x\": must not start with '..'",
                "data[..data]: Invalid value: \"..data\": must not start with '..'",
                &format!("data[a b]: Invalid value: \"a b\": {CONFIG_KEY_MSG}"),
                "binaryData[dup]: Invalid value: \"dup\": duplicate of key present in binaryData",
            ]
        );
    }

    #[test]
    fn service_port_names_are_labels() {
        let svc = json!({"spec": {"ports": [{"name": "a\nflush ruleset", "port": 1}, {"port": 2}, {"name": "web", "port": 3}, {"name": "web", "port": 4}]}});
        let mut out = Vec::new();
        service_ports(&svc, &mut out);
        assert_eq!(
            fields(&out),
            [
                "spec.ports[0].name",
                "spec.ports[1].name",
                "spec.ports[3].name"
            ]
        );
        assert_eq!(out[1].reason, "FieldValueRequired");
        let mut out = Vec::new();
        service_ports(&json!({"spec": {"ports": [{"port": 80}]}}), &mut out);
        assert!(out.is_empty());
    }
}
