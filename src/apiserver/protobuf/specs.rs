//! Decoders of the spec messages (and the values inside them) of the kinds in
//! `KINDS`, field numbers from the published IDL.

use super::{
    Field, fields, insert_entry, label_selector, object_meta, push, set_str, strings, text,
};
use serde_json::{Value, json};

/// ContainerPort { 1 name, 2 hostPort, 3 containerPort, 4 protocol }.
pub(super) fn container_port(b: &[u8]) -> Result<Value, String> {
    let mut port = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => set_str(&mut port, "name", x)?,
            (2, Field::Varint(x)) if x != 0 => port["hostPort"] = json!(x),
            (3, Field::Varint(x)) => port["containerPort"] = json!(x),
            (4, Field::Bytes(x)) => set_str(&mut port, "protocol", x)?,
            _ => {}
        }
    }
    Ok(port)
}

/// EnvVar { 1 name, 2 value }.
pub(super) fn env_var(b: &[u8]) -> Result<Value, String> {
    let mut env = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => env["name"] = json!(text(x)?),
            (2, Field::Bytes(x)) => set_str(&mut env, "value", x)?,
            _ => {}
        }
    }
    Ok(env)
}

/// Container { 1 name, 2 image, 3 command, 4 args, 5 workingDir, 6 ports, 7 env,
/// 14 imagePullPolicy }.
pub(super) fn container(b: &[u8]) -> Result<Value, String> {
    let mut c = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => set_str(&mut c, "name", v)?,
            (2, Field::Bytes(v)) => set_str(&mut c, "image", v)?,
            (3, Field::Bytes(v)) => strings(v, &mut c, "command")?,
            (4, Field::Bytes(v)) => strings(v, &mut c, "args")?,
            (5, Field::Bytes(v)) => set_str(&mut c, "workingDir", v)?,
            (6, Field::Bytes(v)) => push(&mut c, "ports", container_port(v)?),
            (7, Field::Bytes(v)) => push(&mut c, "env", env_var(v)?),
            (14, Field::Bytes(v)) => set_str(&mut c, "imagePullPolicy", v)?,
            _ => {}
        }
    }
    Ok(c)
}

/// PodTemplateSpec { 1 metadata, 2 PodSpec { 2 containers, 3 restartPolicy,
/// 6 dnsPolicy, 7 nodeSelector, 8 serviceAccountName } }.
pub(super) fn pod_template(b: &[u8]) -> Result<Value, String> {
    let mut t = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => t["metadata"] = object_meta(v)?,
            (2, Field::Bytes(v)) => {
                let mut spec = json!({});
                for (n, f) in fields(v)? {
                    match (n, f) {
                        (2, Field::Bytes(x)) => push(&mut spec, "containers", container(x)?),
                        (3, Field::Bytes(x)) => set_str(&mut spec, "restartPolicy", x)?,
                        (6, Field::Bytes(x)) => set_str(&mut spec, "dnsPolicy", x)?,
                        (7, Field::Bytes(x)) => insert_entry(&mut spec, "nodeSelector", x, false)?,
                        (8, Field::Bytes(x)) => set_str(&mut spec, "serviceAccountName", x)?,
                        _ => {}
                    }
                }
                t["spec"] = spec;
            }
            _ => {}
        }
    }
    Ok(t)
}

/// ServicePort { 1 name, 2 protocol, 3 port, 4 targetPort (IntOrString { 1 type,
/// 2 intVal, 3 strVal }), 5 nodePort }.
pub(super) fn service_port(b: &[u8]) -> Result<Value, String> {
    let mut p = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => set_str(&mut p, "name", v)?,
            (2, Field::Bytes(v)) => set_str(&mut p, "protocol", v)?,
            (3, Field::Varint(v)) => p["port"] = json!(v),
            (4, Field::Bytes(v)) => p["targetPort"] = int_or_string(v)?,
            (5, Field::Varint(v)) if v != 0 => p["nodePort"] = json!(v),
            _ => {}
        }
    }
    Ok(p)
}

/// ServiceSpec { 1 ports, 2 selector, 3 clusterIP, 4 type, 5 externalIPs,
/// 7 sessionAffinity, 10 externalName, 11 externalTrafficPolicy }.
pub(super) fn service_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => push(&mut spec, "ports", service_port(x)?),
            (2, Field::Bytes(x)) => insert_entry(&mut spec, "selector", x, false)?,
            (3, Field::Bytes(x)) => set_str(&mut spec, "clusterIP", x)?,
            (4, Field::Bytes(x)) => set_str(&mut spec, "type", x)?,
            (5, Field::Bytes(x)) => strings(x, &mut spec, "externalIPs")?,
            (7, Field::Bytes(x)) => set_str(&mut spec, "sessionAffinity", x)?,
            (10, Field::Bytes(x)) => set_str(&mut spec, "externalName", x)?,
            (11, Field::Bytes(x)) => set_str(&mut spec, "externalTrafficPolicy", x)?,
            _ => {}
        }
    }
    Ok(spec)
}

/// DeploymentSpec { 1 replicas, 2 selector, 3 template, 4 strategy { 1 type },
/// 6 revisionHistoryLimit, 7 paused, 9 progressDeadlineSeconds }.
pub(super) fn deployment_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(x)) => spec["replicas"] = json!(x),
            (2, Field::Bytes(x)) => spec["selector"] = label_selector(x)?,
            (3, Field::Bytes(x)) => spec["template"] = pod_template(x)?,
            (4, Field::Bytes(x)) => {
                let mut strategy = json!({});
                for (n, f) in fields(x)? {
                    if let (1, Field::Bytes(t)) = (n, f) {
                        set_str(&mut strategy, "type", t)?;
                    }
                }
                if strategy.as_object().is_some_and(|m| !m.is_empty()) {
                    spec["strategy"] = strategy;
                }
            }
            (6, Field::Varint(x)) => spec["revisionHistoryLimit"] = json!(x),
            (7, Field::Varint(x)) if x != 0 => spec["paused"] = json!(true),
            (9, Field::Varint(x)) => spec["progressDeadlineSeconds"] = json!(x),
            _ => {}
        }
    }
    Ok(spec)
}

/// JobSpec { 1 parallelism, 2 completions, 3 activeDeadlineSeconds, 6 template,
/// 7 backoffLimit }.
pub(super) fn job_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(x)) => spec["parallelism"] = json!(x),
            (2, Field::Varint(x)) => spec["completions"] = json!(x),
            (3, Field::Varint(x)) => spec["activeDeadlineSeconds"] = json!(x),
            (6, Field::Bytes(x)) => spec["template"] = pod_template(x)?,
            (7, Field::Varint(x)) => spec["backoffLimit"] = json!(x),
            _ => {}
        }
    }
    Ok(spec)
}

/// CronJobSpec { 1 schedule, 3 concurrencyPolicy, 5 jobTemplate { 1 metadata,
/// 2 JobSpec } }.
pub(super) fn cronjob_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => set_str(&mut spec, "schedule", x)?,
            (3, Field::Bytes(x)) => set_str(&mut spec, "concurrencyPolicy", x)?,
            (5, Field::Bytes(x)) => {
                let mut template = json!({});
                for (n, f) in fields(x)? {
                    match (n, f) {
                        (1, Field::Bytes(m)) => template["metadata"] = object_meta(m)?,
                        (2, Field::Bytes(j)) => template["spec"] = job_spec(j)?,
                        _ => {}
                    }
                }
                spec["jobTemplate"] = template;
            }
            _ => {}
        }
    }
    Ok(spec)
}

/// IntOrString { 1 type (0 int, 1 string), 2 intVal, 3 strVal }.
pub(super) fn int_or_string(b: &[u8]) -> Result<Value, String> {
    let (mut ty, mut int_val, mut str_val) = (0, 0, String::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Varint(x)) => ty = x,
            (2, Field::Varint(x)) => int_val = x,
            (3, Field::Bytes(x)) => str_val = text(x)?,
            _ => {}
        }
    }
    Ok(if ty == 1 {
        json!(str_val)
    } else {
        json!(int_val)
    })
}

/// PolicyRule { 1 verbs, 2 apiGroups, 3 resources, 4 resourceNames, 5 nonResourceURLs }.
pub(super) fn policy_rule(b: &[u8]) -> Result<Value, String> {
    let mut rule = json!({"verbs": []});
    for (n, f) in fields(b)? {
        let name = match n {
            1 => "verbs",
            2 => "apiGroups",
            3 => "resources",
            4 => "resourceNames",
            5 => "nonResourceURLs",
            _ => continue,
        };
        if let Field::Bytes(v) = f {
            strings(v, &mut rule, name)?;
        }
    }
    Ok(rule)
}

/// Subject { 1 kind, 2 apiGroup, 3 name, 4 namespace } and RoleRef { 1 apiGroup,
/// 2 kind, 3 name }: string fields named by position.
pub(super) fn reference(b: &[u8], names: &[&str]) -> Result<Value, String> {
    let mut r = json!({});
    for (n, f) in fields(b)? {
        let name = usize::try_from(n)
            .ok()
            .and_then(|i| names.get(i.wrapping_sub(1)));
        if let (Some(name), Field::Bytes(v)) = (name, f) {
            set_str(&mut r, name, v)?;
        }
    }
    Ok(r)
}

/// PodDisruptionBudgetSpec { 1 minAvailable, 2 selector, 3 maxUnavailable,
/// 4 unhealthyPodEvictionPolicy }.
pub(super) fn pdb_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => spec["minAvailable"] = int_or_string(x)?,
            (2, Field::Bytes(x)) => spec["selector"] = label_selector(x)?,
            (3, Field::Bytes(x)) => spec["maxUnavailable"] = int_or_string(x)?,
            (4, Field::Bytes(x)) => set_str(&mut spec, "unhealthyPodEvictionPolicy", x)?,
            _ => {}
        }
    }
    Ok(spec)
}

/// Quantity { 1 string }.
pub(super) fn quantity(b: &[u8]) -> Result<Value, String> {
    let mut q = String::new();
    for (n, f) in fields(b)? {
        if let (1, Field::Bytes(v)) = (n, f) {
            q = text(v)?;
        }
    }
    Ok(json!(q))
}

/// A map<string, Quantity> entry.
pub(super) fn insert_quantity(obj: &mut Value, name: &str, b: &[u8]) -> Result<(), String> {
    let (mut key, mut value) = (String::new(), json!(""));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = text(k)?,
            (2, Field::Bytes(v)) => value = quantity(v)?,
            _ => {}
        }
    }
    if !obj.get(name).is_some_and(Value::is_object) {
        obj[name] = json!({});
    }
    obj[name][key] = value;
    Ok(())
}

/// ResourceQuotaSpec { 1 hard map<string, Quantity>, 2 scopes }.
pub(super) fn quota_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => insert_quantity(&mut spec, "hard", x)?,
            (2, Field::Bytes(x)) => strings(x, &mut spec, "scopes")?,
            _ => {}
        }
    }
    Ok(spec)
}

/// IngressBackend { 4 service IngressServiceBackend { 1 name, 2 port
/// ServiceBackendPort { 1 name, 2 number } } }.
pub(super) fn ingress_backend(b: &[u8]) -> Result<Value, String> {
    let mut backend = json!({});
    for (n, f) in fields(b)? {
        if let (4, Field::Bytes(svc)) = (n, f) {
            let mut service = json!({});
            for (n, f) in fields(svc)? {
                match (n, f) {
                    (1, Field::Bytes(x)) => set_str(&mut service, "name", x)?,
                    (2, Field::Bytes(x)) => {
                        let mut port = json!({});
                        for (n, f) in fields(x)? {
                            match (n, f) {
                                (1, Field::Bytes(v)) => set_str(&mut port, "name", v)?,
                                (2, Field::Varint(v)) if v != 0 => port["number"] = json!(v),
                                _ => {}
                            }
                        }
                        service["port"] = port;
                    }
                    _ => {}
                }
            }
            backend["service"] = service;
        }
    }
    Ok(backend)
}

/// IngressSpec { 1 defaultBackend, 2 tls { 1 hosts, 2 secretName }, 3 rules { 1 host,
/// 2 IngressRuleValue { 1 http { 1 paths { 1 path, 2 backend, 3 pathType } } } },
/// 4 ingressClassName }.
pub(super) fn ingress_spec(b: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => spec["defaultBackend"] = ingress_backend(x)?,
            (2, Field::Bytes(x)) => {
                let mut tls = json!({});
                for (n, f) in fields(x)? {
                    match (n, f) {
                        (1, Field::Bytes(h)) => strings(h, &mut tls, "hosts")?,
                        (2, Field::Bytes(s)) => set_str(&mut tls, "secretName", s)?,
                        _ => {}
                    }
                }
                push(&mut spec, "tls", tls);
            }
            (3, Field::Bytes(x)) => {
                let mut rule = json!({});
                for (n, f) in fields(x)? {
                    match (n, f) {
                        (1, Field::Bytes(h)) => set_str(&mut rule, "host", h)?,
                        (2, Field::Bytes(value)) => {
                            for (n, f) in fields(value)? {
                                let (1, Field::Bytes(http)) = (n, f) else {
                                    continue;
                                };
                                let mut h = json!({"paths": []});
                                for (n, f) in fields(http)? {
                                    let (1, Field::Bytes(p)) = (n, f) else {
                                        continue;
                                    };
                                    let mut path = json!({});
                                    for (n, f) in fields(p)? {
                                        match (n, f) {
                                            (1, Field::Bytes(v)) => set_str(&mut path, "path", v)?,
                                            (2, Field::Bytes(v)) => {
                                                path["backend"] = ingress_backend(v)?
                                            }
                                            (3, Field::Bytes(v)) => {
                                                set_str(&mut path, "pathType", v)?
                                            }
                                            _ => {}
                                        }
                                    }
                                    push(&mut h, "paths", path);
                                }
                                rule["http"] = h;
                            }
                        }
                        _ => {}
                    }
                }
                push(&mut spec, "rules", rule);
            }
            (4, Field::Bytes(x)) => set_str(&mut spec, "ingressClassName", x)?,
            _ => {}
        }
    }
    Ok(spec)
}

/// HorizontalPodAutoscalerSpec: { 1 scaleTargetRef { 1 kind, 2 name, 3 apiVersion },
/// 2 minReplicas, 3 maxReplicas, then in v1 4 targetCPUUtilizationPercentage, in v2
/// 4 metrics { 1 type, 4 resource { 1 name, 2 target { 1 type, 2 value,
/// 3 averageValue, 4 averageUtilization } } } }.
pub(super) fn hpa_spec(b: &[u8], v1: bool) -> Result<Value, String> {
    let mut spec = json!({});
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                spec["scaleTargetRef"] = reference(x, &["kind", "name", "apiVersion"])?
            }
            (2, Field::Varint(x)) => spec["minReplicas"] = json!(x),
            (3, Field::Varint(x)) => spec["maxReplicas"] = json!(x),
            (4, Field::Varint(x)) if v1 => spec["targetCPUUtilizationPercentage"] = json!(x),
            (4, Field::Bytes(x)) if !v1 => {
                let mut metric = json!({});
                for (n, f) in fields(x)? {
                    match (n, f) {
                        (1, Field::Bytes(t)) => set_str(&mut metric, "type", t)?,
                        (4, Field::Bytes(r)) => {
                            let mut source = json!({});
                            for (n, f) in fields(r)? {
                                match (n, f) {
                                    (1, Field::Bytes(v)) => set_str(&mut source, "name", v)?,
                                    (2, Field::Bytes(t)) => {
                                        let mut target = json!({});
                                        for (n, f) in fields(t)? {
                                            match (n, f) {
                                                (1, Field::Bytes(v)) => {
                                                    set_str(&mut target, "type", v)?
                                                }
                                                (2, Field::Bytes(v)) => {
                                                    target["value"] = quantity(v)?
                                                }
                                                (3, Field::Bytes(v)) => {
                                                    target["averageValue"] = quantity(v)?
                                                }
                                                (4, Field::Varint(v)) => {
                                                    target["averageUtilization"] = json!(v)
                                                }
                                                _ => {}
                                            }
                                        }
                                        source["target"] = target;
                                    }
                                    _ => {}
                                }
                            }
                            metric["resource"] = source;
                        }
                        _ => {}
                    }
                }
                push(&mut spec, "metrics", metric);
            }
            _ => {}
        }
    }
    Ok(spec)
}
