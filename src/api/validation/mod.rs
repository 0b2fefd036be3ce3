//! Value validation of the common kinds, with upstream's field paths and messages:
//! label and annotation syntax and size, required fields, the selector/template match
//! of workloads, and fields that may not change after creation.

pub(crate) mod pod;

use pod::pod_spec;
use serde_json::{Map, Value};

/// One problem, as a `StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTooLong`, ...
    pub reason: &'static str,
    pub message: String,
}

impl Cause {
    pub(crate) fn required(field: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }
    }

    pub(crate) fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {detail}"),
        }
    }
}

/// Upstream's limit on all annotations of an object together.
pub const TOTAL_ANNOTATION_BYTES: usize = 256 * 1024;

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const PREFIX_MSG: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key: `[prefix/]name`, problems in upstream's words.
fn key_problem(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Some(PREFIX_MSG);
        }
    }
    (!name_part_ok(name)).then_some(QUALIFIED_NAME_MSG)
}

fn labels(map: Option<&Map<String, Value>>, field: &str, out: &mut Vec<Cause>) {
    for (k, v) in map.into_iter().flatten() {
        if let Some(problem) = key_problem(k) {
            out.push(Cause::invalid(field, k, problem));
        }
        let value = v.as_str().unwrap_or_default();
        if !(value.is_empty() || name_part_ok(value)) {
            out.push(Cause::invalid(field, value, LABEL_VALUE_MSG));
        }
    }
}

fn metadata(obj: &Value, out: &mut Vec<Cause>) {
    labels(
        obj.pointer("/metadata/labels").and_then(Value::as_object),
        "metadata.labels",
        out,
    );
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0usize;
        for (k, v) in annotations {
            if let Some(problem) = key_problem(k) {
                out.push(Cause::invalid("metadata.annotations", k, problem));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > TOTAL_ANNOTATION_BYTES {
            out.push(Cause {
                field: "metadata.annotations".into(),
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {TOTAL_ANNOTATION_BYTES} bytes"),
            });
        }
    }
}

/// A workload's selector must select its template (upstream's "`selector` does not
/// match template `labels`").
fn selector_matches_template(obj: &Value, out: &mut Vec<Cause>) {
    let Some(selector) = obj.pointer("/spec/selector") else {
        out.push(Cause::required("spec.selector"));
        return;
    };
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    match crate::api::selector::LabelSelector::from_object(selector) {
        Ok(sel) if sel.is_empty() => out.push(Cause::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        )),
        Ok(sel) if !sel.matches(labels) => out.push(Cause {
            field: "spec.template.metadata.labels".into(),
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                serde_json::to_string(&labels.cloned().unwrap_or_default()).unwrap_or_default()
            ),
        }),
        Ok(_) => {}
        Err(e) => out.push(Cause::invalid(
            "spec.selector",
            &selector.to_string(),
            &e.to_string(),
        )),
    }
}

/// A ReplicationController's selector is a plain label map: required, not empty, and
/// it must select the template (upstream's `ValidateReplicationControllerSpec`).
fn replication_controller_selector(obj: &Value, out: &mut Vec<Cause>) {
    let selector = obj.pointer("/spec/selector").and_then(Value::as_object);
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        out.push(Cause::required("spec.selector"));
        return;
    };
    if obj.pointer("/spec/template").is_none_or(Value::is_null) {
        out.push(Cause::required("spec.template"));
        return;
    }
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let selected = selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    if !selected {
        out.push(Cause {
            field: "spec.template.metadata.labels".into(),
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                serde_json::to_string(&labels.cloned().unwrap_or_default()).unwrap_or_default()
            ),
        });
    }
}

fn immutable(obj: &Value, old: &Value, pointer: &str, field: &str, out: &mut Vec<Cause>) {
    if obj.pointer(pointer) != old.pointer(pointer) {
        let value = obj
            .pointer(pointer)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "null".into());
        out.push(Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: field is immutable"),
        });
    }
}

/// An IP network `a.b.c.d/n` or `x::/n`, as (address bits, prefix, width).
fn cidr(s: &str) -> Option<(u128, u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let (bits, width) = match ip {
        std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        std::net::IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    (len <= width).then_some((bits, len, width))
}

/// Upstream's NetworkPolicy validation: selectors, peers (one kind each), ipBlocks with
/// exceptions inside them, protocols, ports and port ranges, policy types.
fn network_policy(obj: &Value, out: &mut Vec<Cause>) {
    let selector_ok = |v: &Value, field: &str, out: &mut Vec<Cause>| {
        if let Err(e) = crate::api::selector::LabelSelector::from_object(v) {
            out.push(Cause::invalid(field, &v.to_string(), &e.to_string()));
        }
    };
    match obj.pointer("/spec/podSelector") {
        Some(sel) => selector_ok(sel, "spec.podSelector", out),
        None => out.push(Cause::required("spec.podSelector")),
    }
    for (i, t) in obj
        .pointer("/spec/policyTypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
            out.push(Cause {
                field: format!("spec.policyTypes[{i}]"),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: {t}: supported values: \"Egress\", \"Ingress\""
                ),
            });
        }
    }
    for (dir, peers_key) in [("ingress", "from"), ("egress", "to")] {
        let rules = obj
            .pointer(&format!("/spec/{dir}"))
            .and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let base = format!("spec.{dir}[{i}]");
            for (j, port) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                let f = format!("{base}.ports[{j}]");
                if let Some(proto) = port.get("protocol").and_then(Value::as_str) {
                    if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                        out.push(Cause {
                            field: format!("{f}.protocol"),
                            reason: "FieldValueNotSupported",
                            message: format!("Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
                        });
                    }
                }
                let number = port.get("port").and_then(Value::as_i64);
                if let Some(n) = number.filter(|n| !(1..=65535).contains(n)) {
                    out.push(Cause::invalid(
                        &format!("{f}.port"),
                        &n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(end) = port.get("endPort").and_then(Value::as_i64) {
                    match number {
                        None => out.push(Cause {
                            field: format!("{f}.endPort"),
                            reason: "FieldValueInvalid",
                            message: format!("Invalid value: {end}: may not be specified when `port` is non-numeric"),
                        }),
                        Some(n) if end < n => out.push(Cause {
                            field: format!("{f}.endPort"),
                            reason: "FieldValueInvalid",
                            message: format!("Invalid value: {end}: must be greater than or equal to `port`"),
                        }),
                        _ => {}
                    }
                }
            }
            for (j, peer) in rule[peers_key].as_array().into_iter().flatten().enumerate() {
                let f = format!("{base}.{peers_key}[{j}]");
                let has = |k: &str| peer.get(k).is_some_and(|v| !v.is_null());
                let selectors = has("podSelector") || has("namespaceSelector");
                if has("ipBlock") && selectors {
                    out.push(Cause {
                        field: f.clone(),
                        reason: "FieldValueForbidden",
                        message: "Forbidden: may not specify both ipBlock and another peer".into(),
                    });
                } else if !has("ipBlock") && !selectors {
                    out.push(Cause {
                        field: f.clone(),
                        reason: "FieldValueRequired",
                        message: "Required value: must specify a peer".into(),
                    });
                }
                for k in ["podSelector", "namespaceSelector"] {
                    if let Some(sel) = peer.get(k).filter(|v| !v.is_null()) {
                        selector_ok(sel, &format!("{f}.{k}"), out);
                    }
                }
                let Some(block) = peer.get("ipBlock").filter(|v| !v.is_null()) else {
                    continue;
                };
                let text = block["cidr"].as_str().unwrap_or("");
                let Some((net, len, width)) = cidr(text) else {
                    out.push(if text.is_empty() {
                        Cause::required(&format!("{f}.ipBlock.cidr"))
                    } else {
                        Cause::invalid(
                            &format!("{f}.ipBlock.cidr"),
                            text,
                            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                        )
                    });
                    continue;
                };
                for (k, e) in block["except"].as_array().into_iter().flatten().enumerate() {
                    let ef = format!("{f}.ipBlock.except[{k}]");
                    let et = e.as_str().unwrap_or("");
                    match cidr(et) {
                        None => out.push(Cause::invalid(
                            &ef,
                            et,
                            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                        )),
                        Some((enet, elen, ewidth)) => {
                            let shift = width - len;
                            let inside = ewidth == width
                                && elen > len
                                && (shift >= 128 || (enet >> shift) == (net >> shift));
                            if !inside {
                                out.push(Cause::invalid(
                                    &ef,
                                    et,
                                    "must be a strict subset of `cidr`",
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Upstream's `ValidateNodeUpdate`: a pod range, once assigned, and a provider ID,
/// once set, never change (the overlay routes a node's pods by its range).
fn node_update(obj: &Value, old: &Value, out: &mut Vec<Cause>) {
    let ranges = |v: &Value| -> Vec<String> {
        let list: Vec<String> = v
            .pointer("/spec/podCIDRs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        if list.is_empty() {
            v.pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(|c| vec![c.to_string()])
                .unwrap_or_default()
        } else {
            list
        }
    };
    let was = ranges(old);
    if !was.is_empty() && was != ranges(obj) {
        out.push(Cause {
            field: "spec.podCIDRs".into(),
            reason: "FieldValueForbidden",
            message: "Forbidden: node updates may not change podCIDR except from \"\" to valid"
                .into(),
        });
    }
    let provider = |v: &Value| {
        v.pointer("/spec/providerID")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if !provider(old).is_empty() && provider(old) != provider(obj) {
        out.push(Cause {
            field: "spec.providerID".into(),
            reason: "FieldValueForbidden",
            message: "Forbidden: node updates may not change providerID except from \"\" to valid"
                .into(),
        });
    }
}

/// Problems with `obj` (of `kind`); `old` is the stored version on updates.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    metadata(obj, &mut out);
    match kind {
        "Pod" => pod_spec(obj.get("spec"), "spec", &mut out),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            selector_matches_template(obj, &mut out);
            pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut out,
            );
            if let Some(old) = old {
                immutable(obj, old, "/spec/selector", "spec.selector", &mut out);
            }
        }
        "Job" => {
            pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut out,
            );
            match obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
            {
                Some("Never" | "OnFailure") => {}
                other => out.push(Cause {
                    field: "spec.template.spec.restartPolicy".into(),
                    reason: "FieldValueNotSupported",
                    message: format!(
                        "Unsupported value: \"{}\": supported values: \"OnFailure\", \"Never\"",
                        other.unwrap_or("Always")
                    ),
                }),
            }
            if let Some(old) = old {
                immutable(obj, old, "/spec/selector", "spec.selector", &mut out);
                immutable(obj, old, "/spec/template", "spec.template", &mut out);
            }
        }
        "CronJob" => {
            if obj
                .pointer("/spec/schedule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(Cause::required("spec.schedule"));
            }
            pod_spec(
                obj.pointer("/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
                &mut out,
            );
        }
        "Service" => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if ty != "ExternalName"
                && ports == 0
                && obj.pointer("/spec/clusterIP") != Some(&Value::from("None"))
            {
                out.push(Cause::required("spec.ports"));
            }
            pod::service_ports(obj, &mut out);
        }
        "NetworkPolicy" => network_policy(obj, &mut out),
        "EndpointSlice" => pod::endpoint_slice_ports(obj, &mut out),
        "PodTemplate" => pod_spec(obj.pointer("/template/spec"), "template.spec", &mut out),
        "ReplicationController" => {
            replication_controller_selector(obj, &mut out);
            if obj.pointer("/spec/template").is_some_and(|t| !t.is_null()) {
                pod_spec(
                    obj.pointer("/spec/template/spec"),
                    "spec.template.spec",
                    &mut out,
                );
            }
        }
        "Node" => {
            if let Some(old) = old {
                node_update(obj, old, &mut out);
            }
        }
        "ConfigMap" | "Secret" => {
            if kind == "Secret" {
                // stringData may repeat a key of data (it wins), as upstream
                pod::config_keys(obj, &["data"], &mut out);
                pod::config_keys(obj, &["stringData"], &mut out);
            } else {
                pod::config_keys(obj, &["data", "binaryData"], &mut out);
            }
            if let Some(old) = old {
                if old.get("immutable") == Some(&Value::Bool(true)) {
                    for field in ["data", "binaryData", "stringData"] {
                        if obj.get(field) != old.get(field) {
                            out.push(Cause {
                                field: field.into(),
                                reason: "FieldValueForbidden",
                                message: "Forbidden: field is immutable when `immutable` is set"
                                    .into(),
                            });
                        }
                    }
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_keeps_its_pod_range_once_assigned() {
        let old = json!({"spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}});
        assert!(validate("Node", &old, Some(&old)).is_empty());
        let unassigned = json!({"spec": {}});
        assert!(validate("Node", &old, Some(&unassigned)).is_empty());
        for moved in [
            json!({"spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}}),
            json!({"spec": {}}),
            json!({"spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24", "fd00::/64"]}}),
        ] {
            let causes = validate("Node", &moved, Some(&old));
            assert_eq!(causes.len(), 1, "{moved}");
            assert_eq!(causes[0].field, "spec.podCIDRs");
            assert_eq!(causes[0].reason, "FieldValueForbidden");
        }
    }

    #[test]
    fn labels_and_annotations() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web", "tier": ""}}});
        assert!(validate("ConfigMap", &ok, None).is_empty());
        let bad = json!({"metadata": {"labels": {"bad key!": "x", "ok": "bad value!"}}});
        let causes = validate("ConfigMap", &bad, None);
        assert_eq!(causes.len(), 2);
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"bad key!\": name part must consist")
        );
        let big = json!({"metadata": {"annotations": {"a": "x".repeat(TOTAL_ANNOTATION_BYTES)}}});
        assert_eq!(
            validate("ConfigMap", &big, None)[0].reason,
            "FieldValueTooLong"
        );
    }

    #[test]
    fn network_policies_are_checked_as_upstream_checks_them() {
        let ok = json!({"spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"protocol": "UDP", "port": 53, "endPort": 60}]}]}});
        assert!(validate("NetworkPolicy", &ok, None).is_empty());
        let bad = json!({"spec": {"podSelector": {}, "policyTypes": ["Sideways"], "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/8\nflush ruleset"}}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}, "podSelector": {}}, {}],
            "ports": [{"protocol": "ICMP", "port": 70000}, {"port": "http", "endPort": 90}]}]}});
        let causes = validate("NetworkPolicy", &bad, None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.policyTypes[0]",
                "spec.ingress[0].ports[0].protocol",
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].ports[1].endPort",
                "spec.ingress[0].from[0].ipBlock.cidr",
                "spec.ingress[0].from[1]",
                "spec.ingress[0].from[1].ipBlock.except[0]",
                "spec.ingress[0].from[2]",
            ],
            "{causes:?}"
        );
        assert!(causes[7].message.contains("must specify a peer"));
        assert!(
            causes[6]
                .message
                .ends_with("must be a strict subset of `cidr`")
        );
    }

    #[test]
    fn a_replication_controller_needs_a_selector_that_selects_its_template() {
        let spec = json!({"containers": [{"name": "c", "image": "i"}]});
        let rc = |selector: Value, labels: Value| {
            json!({"spec": {"selector": selector,
                "template": {"metadata": {"labels": labels}, "spec": spec.clone()}}})
        };
        let fields = |rc: &Value| -> Vec<String> {
            validate("ReplicationController", rc, None)
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        assert_eq!(fields(&rc(json!({}), json!({"a": "1"}))), ["spec.selector"]);
        assert_eq!(
            fields(&rc(Value::Null, json!({"a": "1"}))),
            ["spec.selector"]
        );
        assert_eq!(
            fields(&rc(json!({"a": "1", "b": "2"}), json!({"a": "1"}))),
            ["spec.template.metadata.labels"]
        );
        assert!(fields(&rc(json!({"a": "1"}), json!({"a": "1", "b": "2"}))).is_empty());
        let no_template = json!({"spec": {"selector": {"a": "1"}}});
        assert_eq!(fields(&no_template), ["spec.template"]);
    }

    #[test]
    fn workloads_need_containers_and_matching_selectors() {
        let causes = validate(
            "Pod",
            &json!({"spec": {"containers": [{"name": "c"}]}}),
            None,
        );
        assert_eq!(causes, vec![Cause::required("spec.containers[0].image")]);
        assert_eq!(
            validate("Pod", &json!({"spec": {}}), None),
            vec![Cause::required("spec.containers")]
        );
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate("Deployment", &d, None);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert!(
            causes[0]
                .message
                .ends_with("`selector` does not match template `labels`")
        );
        let mut ok = d.clone();
        ok["spec"]["template"]["metadata"]["labels"]["app"] = json!("a");
        assert!(validate("Deployment", &ok, None).is_empty());
        let mut moved = ok.clone();
        moved["spec"]["selector"]["matchLabels"]["extra"] = json!("x");
        moved["spec"]["template"]["metadata"]["labels"]["extra"] = json!("x");
        assert!(
            validate("Deployment", &moved, Some(&ok))[0]
                .message
                .ends_with("field is immutable")
        );
        let job =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            validate("Job", &job, None)[0].reason,
            "FieldValueNotSupported"
        );
    }
}
