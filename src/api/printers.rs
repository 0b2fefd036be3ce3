//! Server-side printing: the `Table` columns kube-apiserver returns for `kubectl get`,
//! per kind, with upstream's column names and cell formats (ages as HumanDuration).
//! Kinds without a printer get upstream's default: Name and Created At.

use serde_json::{Value, json};

/// One column: (name, type, priority). Priority 1 columns show with `-o wide`.
type Column = (&'static str, &'static str, u8);

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

/// Seconds since the epoch of an RFC 3339 timestamp (`2006-01-02T15:04:05Z`).
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // days from civil (Howard Hinnant)
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
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

/// Columns and the row function for a kind.
pub fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Namespace" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => vec![
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "Secret" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "ServiceAccount" => vec![
            ("Name", "string", 0),
            ("Secrets", "integer", 0),
            ("Age", "string", 0),
        ],
        "Pod" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Service" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Deployment" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" | "ReplicationController" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "StatefulSet" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "DaemonSet" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Job" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "CronJob" => vec![
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Node" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ],
        "PersistentVolume" => vec![
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
        ],
        "PersistentVolumeClaim" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
        ],
        "HorizontalPodAutoscaler" => vec![
            ("Name", "string", 0),
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            ("Age", "string", 0),
        ],
        "Lease" => vec![
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        _ => vec![("Name", "string", 0), ("Created At", "date", 0)],
    }
}

/// The cells of one object's row, matching [`columns`].
pub fn cells(kind: &str, o: &Value, now: i64) -> Vec<Value> {
    let name = json!(s(o.pointer("/metadata/name")));
    let age = json!(age(o, now));
    match kind {
        "Namespace" => vec![name, json!(s(o.pointer("/status/phase"))), age],
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
            json!("<unknown>"),
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
        _ => vec![name, json!(s(o.pointer("/metadata/creationTimestamp")))],
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

/// The PartialObjectMetadata a table row carries (kubectl reads names from it).
pub fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A `meta.k8s.io/v1` Table of `objects` (column definitions omitted when asked, as
/// watch events after the first do).
pub fn table(
    kind: &str,
    objects: &[Value],
    resource_version: &str,
    with_columns: bool,
    now: i64,
) -> Value {
    let columns: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o, now), "object": partial_metadata(o)}))
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = json!(columns);
    }
    t
}

/// Whether an Accept header asks for a Table (`as=Table;g=meta.k8s.io;v=v1`).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.iter().any(|p| *p == "v=v1" || *p == "v=v1beta1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
    }

    #[test]
    fn tables_carry_upstream_columns_and_cells() {
        let now = parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let t = table("Deployment", &[d], "7", true, now);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "1/2", "2", "1", "10m", "c", "nginx", "app=web"])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.5", "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            cells("Service", &svc, now)[2..5],
            [json!("10.43.0.5"), json!("<none>"), json!("80:30080/TCP")]
        );
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
