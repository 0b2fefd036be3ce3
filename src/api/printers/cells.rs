//! The cells of a Table row, per kind, in upstream's formats.

use super::parse_rfc3339;
use serde_json::{Value, json};

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let sec = seconds % 60;
        return if sec == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{sec}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        let y = hours / 24 / 365;
        return if dy == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{dy}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value, now: i64) -> String {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
    {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn count_keys(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_object).map_or(0, |m| m.len() as i64)
}

fn containers(obj: &Value, path: &str) -> (String, String) {
    let list = obj
        .pointer(path)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = list.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = list.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

fn selector(obj: &Value) -> String {
    let Some(sel) = obj.pointer("/spec/selector") else {
        return "<none>".into();
    };
    let labels = sel.get("matchLabels").unwrap_or(sel);
    let mut parts: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_string())
                .map(|(k, v)| format!("{k}={}", s(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    or_none(parts.join(","))
}

fn pod_status(pod: &Value) -> (String, String, i64) {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    let restarts: i64 = statuses.iter().map(|c| n(c.get("restartCount"))).sum();
    let mut reason = s(pod.pointer("/status/reason"));
    if reason.is_empty() {
        reason = s(pod.pointer("/status/phase"));
    }
    for c in statuses.iter().rev() {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(r) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            reason = r.to_string();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    (
        format!("{ready}/{total}"),
        if reason.is_empty() {
            "Pending".into()
        } else {
            reason
        },
        restarts,
    )
}

fn service_ports(svc: &Value) -> String {
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parts: Vec<String> = ports
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", n(p.get("port"))),
                None => format!("{}/{proto}", n(p.get("port"))),
            }
        })
        .collect();
    or_none(parts.join(","))
}

fn external_ips(svc: &Value) -> String {
    let mut ips: Vec<String> = svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| s(Some(v))).collect())
        .unwrap_or_default();
    if let Some(ing) = svc
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
    {
        ips.extend(ing.iter().map(|i| {
            if i.get("ip").is_some() {
                s(i.get("ip"))
            } else {
                s(i.get("hostname"))
            }
        }));
    }
    match (
        svc.pointer("/spec/type").and_then(Value::as_str),
        ips.is_empty(),
    ) {
        (Some("LoadBalancer"), true) => "<pending>".into(),
        (Some("ExternalName"), _) => s(svc.pointer("/spec/externalName")),
        _ => or_none(ips.join(",")),
    }
}

/// The cells of one object's row, matching [`columns`].
pub fn cells(kind: &str, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(s(o.pointer("/metadata/name")));
    let age = json!(age(o, now));
    match kind {
        "Namespace" => vec![name, json!(s(o.pointer("/status/phase"))), age],
        "ResourceQuota" => {
            // upstream: each hard resource as used/hard, limits.* in the Limit column
            let (mut request, mut limit) = (Vec::new(), Vec::new());
            let hard = o.pointer("/status/hard").and_then(Value::as_object);
            for (k, h) in hard.into_iter().flatten() {
                let used = o
                    .pointer("/status/used")
                    .and_then(|u| u.get(k))
                    .map_or("0".to_string(), |u| s(Some(u)).to_string());
                let cell = format!("{k}: {used}/{}", s(Some(h)));
                if k.starts_with("limits.") {
                    limit.push(cell);
                } else {
                    request.push(cell);
                }
            }
            vec![
                name,
                age,
                json!(request.join(", ")),
                json!(limit.join(", ")),
            ]
        }
        "LimitRange" => vec![name, json!(s(o.pointer("/metadata/creationTimestamp")))],
        "PriorityClass" => vec![
            name,
            json!(o.get("value").and_then(Value::as_i64).unwrap_or(0)),
            json!(o.get("globalDefault") == Some(&json!(true))),
            age,
            json!(s(o.get("preemptionPolicy"))),
        ],
        "ConfigMap" => vec![
            name,
            json!(count_keys(o.get("data")) + count_keys(o.get("binaryData"))),
            age,
        ],
        "Secret" => vec![
            name,
            json!(s(o.get("type")).if_empty("Opaque")),
            json!(count_keys(o.get("data"))),
            age,
        ],
        "ServiceAccount" => vec![
            name,
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            age,
        ],
        "Pod" => {
            let (ready, status, restarts) = pod_status(o);
            vec![
                name,
                json!(ready),
                json!(status),
                json!(restarts.to_string()),
                age,
                json!(or_none(s(o.pointer("/status/podIP")))),
                json!(or_none(s(o.pointer("/spec/nodeName")))),
                json!(or_none(s(o.pointer("/status/nominatedNodeName")))),
                json!("<none>"),
            ]
        }
        "Service" => vec![
            name,
            json!(s(o.pointer("/spec/type")).if_empty("ClusterIP")),
            json!(or_none(s(o.pointer("/spec/clusterIP")))),
            json!(external_ips(o)),
            json!(service_ports(o)),
            age,
            json!(selector(o)),
        ],
        "Deployment" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o.pointer("/status/readyReplicas")),
                    n(o.pointer("/spec/replicas"))
                )),
                json!(n(o.pointer("/status/updatedReplicas")).to_string()),
                json!(n(o.pointer("/status/availableReplicas")).to_string()),
                age,
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        "ReplicaSet" | "ReplicationController" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(n(o.pointer("/spec/replicas"))),
                json!(n(o.pointer("/status/replicas"))),
                json!(n(o.pointer("/status/readyReplicas"))),
                age,
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        "StatefulSet" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o.pointer("/status/readyReplicas")),
                    n(o.pointer("/spec/replicas"))
                )),
                age,
                json!(c),
                json!(i),
            ]
        }
        "DaemonSet" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            let node_selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(Some(v))))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(n(o.pointer("/status/desiredNumberScheduled"))),
                json!(n(o.pointer("/status/currentNumberScheduled"))),
                json!(n(o.pointer("/status/numberReady"))),
                json!(n(o.pointer("/status/updatedNumberScheduled"))),
                json!(n(o.pointer("/status/numberAvailable"))),
                json!(or_none(node_selector)),
                age,
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        "Job" => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            let completions = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| {
                conds.iter().any(|c| {
                    c.get("type") == Some(&json!(t)) && c.get("status") == Some(&json!("True"))
                })
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match (
                o.pointer("/status/startTime")
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339),
                o.pointer("/status/completionTime")
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339),
            ) {
                (Some(start), Some(end)) => human_duration(end - start),
                (Some(start), None) => human_duration(now - start),
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(format!(
                    "{}/{completions}",
                    n(o.pointer("/status/succeeded"))
                )),
                json!(duration),
                age,
                json!(c),
                json!(i),
                json!(selector(o)),
            ]
        }
        "CronJob" => {
            let (c, i) = containers(o, "/spec/jobTemplate/spec/template/spec/containers");
            let last = o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .map_or("<none>".to_string(), |t| human_duration(now - t));
            vec![
                name,
                json!(s(o.pointer("/spec/schedule"))),
                json!(or_none(s(o.pointer("/spec/timeZone")))),
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(
                    o.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                ),
                json!(last),
                age,
                json!(c),
                json!(i),
                json!("<none>"),
            ]
        }
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
                .map(|c| {
                    if c.get("status") == Some(&json!("True")) {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let status = if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                format!("{ready},SchedulingDisabled")
            } else {
                ready.to_string()
            };
            let mut roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            vec![
                name,
                json!(status),
                json!(or_none(roles.join(","))),
                age,
                json!(s(o.pointer("/status/nodeInfo/kubeletVersion"))),
            ]
        }
        "PersistentVolume" => {
            let claim = match (
                o.pointer("/spec/claimRef/namespace"),
                o.pointer("/spec/claimRef/name"),
            ) {
                (Some(ns), Some(nm)) => format!("{}/{}", s(Some(ns)), s(Some(nm))),
                _ => String::new(),
            };
            vec![
                name,
                json!(s(o.pointer("/spec/capacity/storage"))),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(s(o.pointer("/spec/persistentVolumeReclaimPolicy"))),
                json!(s(o.pointer("/status/phase"))),
                json!(claim),
                json!(s(o.pointer("/spec/storageClassName"))),
                json!(or_none(s(o.pointer("/spec/volumeAttributesClassName")))),
                json!(s(o.pointer("/status/reason"))),
                age,
            ]
        }
        "PersistentVolumeClaim" => vec![
            name,
            json!(s(o.pointer("/status/phase"))),
            json!(s(o.pointer("/spec/volumeName"))),
            json!(s(o.pointer("/status/capacity/storage"))),
            json!(access_modes(o.pointer("/status/accessModes"))),
            json!(s(o.pointer("/spec/storageClassName"))),
            json!(or_none(s(o.pointer("/spec/volumeAttributesClassName")))),
            age,
        ],
        "HorizontalPodAutoscaler" => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o.pointer("/spec/scaleTargetRef/kind")),
                s(o.pointer("/spec/scaleTargetRef/name"))
            )),
            json!(hpa_targets(o)),
            json!(
                o.pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string()
            ),
            json!(n(o.pointer("/spec/maxReplicas"))),
            json!(n(o.pointer("/status/currentReplicas"))),
            age,
        ],
        "Lease" => vec![name, json!(s(o.pointer("/spec/holderIdentity"))), age],
        "Endpoints" => {
            let mut list = Vec::new();
            for subset in o
                .pointer("/subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for port in subset["ports"].as_array().into_iter().flatten() {
                    for a in subset["addresses"].as_array().into_iter().flatten() {
                        list.push(format!("{}:{}", s(a.get("ip")), n(port.get("port"))));
                    }
                }
            }
            vec![name, json!(first_three(list)), age]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o
                .pointer("/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| n(p.get("port")).to_string())
                .collect();
            let addresses: Vec<String> = o
                .pointer("/endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .map(|a| s(Some(&a)))
                .collect();
            let ports = if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            };
            vec![
                name,
                json!(s(o.pointer("/addressType"))),
                json!(ports),
                json!(first_three(addresses)),
                age,
            ]
        }
        "PodDisruptionBudget" => {
            let text = |v: Option<&Value>| match v {
                Some(Value::Null) | None => "N/A".to_string(),
                other => s(other),
            };
            vec![
                name,
                json!(text(o.pointer("/spec/minAvailable"))),
                json!(text(o.pointer("/spec/maxUnavailable"))),
                json!(n(o.pointer("/status/disruptionsAllowed"))),
                age,
            ]
        }
        "Event" => {
            let since = |field: &str| {
                o.pointer(field)
                    .and_then(Value::as_str)
                    .and_then(parse_rfc3339)
                    .map(|t| human_duration(now - t))
            };
            let last = since("/lastTimestamp")
                .or_else(|| since("/eventTime"))
                .or_else(|| since("/metadata/creationTimestamp"))
                .unwrap_or_else(|| "<unknown>".into());
            let first = since("/firstTimestamp")
                .or_else(|| since("/eventTime"))
                .unwrap_or_else(|| "<unknown>".into());
            let kind = s(o.pointer("/involvedObject/kind")).to_lowercase();
            let source = [
                s(o.pointer("/source/component")),
                s(o.pointer("/source/host")),
            ]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
            vec![
                json!(last),
                json!(s(o.pointer("/type"))),
                json!(s(o.pointer("/reason"))),
                json!(format!("{kind}/{}", s(o.pointer("/involvedObject/name")))),
                json!(s(o.pointer("/involvedObject/fieldPath"))),
                json!(source),
                json!(s(o.pointer("/message")).trim().to_string()),
                json!(first),
                json!(o.pointer("/count").and_then(Value::as_i64).unwrap_or(1)),
                name,
            ]
        }
        _ => vec![name, json!(s(o.pointer("/metadata/creationTimestamp")))],
    }
}

/// Upstream's TARGETS column: `cpu: 40%/70%` per resource metric, at most two shown.
fn hpa_targets(o: &Value) -> String {
    let empty = Vec::new();
    let specs = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let statuses = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if specs.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let current = statuses.get(i).and_then(|c| c.pointer("/resource/current"));
            match m["type"].as_str().unwrap_or("") {
                "Resource" => {
                    let name = m["resource"]["name"].as_str().unwrap_or("");
                    let target = &m["resource"]["target"];
                    if let Some(v) = target.get("averageValue") {
                        let now = current
                            .and_then(|c| c.get("averageValue"))
                            .map(|v| v.as_str().unwrap_or("").to_string())
                            .unwrap_or_else(|| "<unknown>".into());
                        format!("{name}: {now}/{}", v.as_str().unwrap_or(""))
                    } else {
                        let now = current
                            .and_then(|c| c.get("averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|n| format!("{n}%"))
                            .unwrap_or_else(|| "<unknown>".into());
                        let want = target
                            .get("averageUtilization")
                            .and_then(Value::as_i64)
                            .map(|n| format!("{n}%"))
                            .unwrap_or_else(|| "<auto>".into());
                        format!("{name}: {now}/{want}")
                    }
                }
                _ => "<unknown>/<unknown>".into(),
            }
        })
        .collect();
    if shown.len() > 2 {
        format!("{} + {} more...", shown[..2].join(", "), shown.len() - 2)
    } else {
        shown.join(", ")
    }
}

/// Up to three entries, then `+ N more...`; `<none>` for none (upstream's format).
fn first_three(list: Vec<String>) -> String {
    match list.len() {
        0 => "<none>".into(),
        1..=3 => list.join(","),
        n => format!("{} + {} more...", list[..3].join(","), n - 3),
    }
}

fn access_modes(v: Option<&Value>) -> String {
    let modes: Vec<&str> = v
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    modes.join(",")
}

trait IfEmpty {
    fn if_empty(self, default: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, default: &str) -> String {
        if self.is_empty() {
            default.to_string()
        } else {
            self
        }
    }
}
