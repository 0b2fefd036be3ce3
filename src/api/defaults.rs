//! Defaulting, as kube-apiserver applies it on every write (the `SetDefaults_*`
//! functions of k8s.io/api plus the admission defaults every cluster has), so that
//! `kubectl get -o yaml` of a created object looks like upstream's.

use serde_json::{Map, Value, json};

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    if v.get(key).is_none() || v[key].is_null() {
        v[key] = json!({});
    }
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn each_mut(v: Option<&mut Value>, mut f: impl FnMut(&mut Value)) {
    if let Some(Value::Array(items)) = v {
        items.iter_mut().for_each(&mut f);
    }
}

fn probe(p: &mut Value) {
    if let Some(m) = p.as_object_mut() {
        default(m, "timeoutSeconds", json!(1));
        default(m, "periodSeconds", json!(10));
        default(m, "successThreshold", json!(1));
        default(m, "failureThreshold", json!(3));
    }
    if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(h, "scheme", json!("HTTP"));
        default(h, "path", json!("/"));
    }
}

fn container(c: &mut Value) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(m) = c.as_object_mut() else { return };
    // an image without a tag (or with :latest) is pulled always, as upstream defaults
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = last
        .split_once('@')
        .map(|_| "digest")
        .or_else(|| last.split_once(':').map(|(_, t)| t));
    let policy = match tag {
        None | Some("latest") => "Always",
        _ => "IfNotPresent",
    };
    default(m, "imagePullPolicy", json!(policy));
    default(m, "terminationMessagePath", json!("/dev/termination-log"));
    default(m, "terminationMessagePolicy", json!("File"));
    default(m, "resources", json!({}));
    // a limit without a request: the request is the limit (upstream's defaulting)
    if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
        if let Some(limits) = r.get("limits").and_then(Value::as_object).cloned() {
            let requests = r.entry("requests").or_insert_with(|| json!({}));
            if let Some(requests) = requests.as_object_mut() {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
    each_mut(m.get_mut("ports"), |p| {
        if let Some(p) = p.as_object_mut() {
            default(p, "protocol", json!("TCP"));
        }
    });
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(name) {
            probe(p);
        }
    }
}

/// PodSpec defaults (pods and every pod template).
fn pod_spec(spec: &mut Value) {
    if let Some(m) = spec.as_object_mut() {
        default(m, "restartPolicy", json!("Always"));
        default(m, "dnsPolicy", json!("ClusterFirst"));
        default(m, "terminationGracePeriodSeconds", json!(30));
        default(m, "securityContext", json!({}));
        default(m, "schedulerName", json!("default-scheduler"));
        default(m, "enableServiceLinks", json!(true));
    }
    for list in ["containers", "initContainers"] {
        each_mut(spec.get_mut(list), container);
    }
}

fn template(obj: &mut Value, path: &str) {
    if let Some(spec) = obj.pointer_mut(path) {
        pod_spec(spec);
    }
}

fn pod(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds admission: evict from not-ready/unreachable nodes after 5 min
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !list.iter().any(|t| t.get("key") == Some(&json!(key))) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    if let Some(spec) = obj.get_mut("spec") {
        pod_spec(spec);
    }
}

/// The QoS class of a pod, from its containers' requests and limits.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        any |= limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|r| !r.is_empty());
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Applies the defaults of `kind` to an object being written.
/// A LimitRange's Container items, as upstream defaults them: the default limit is
/// the max, the default request the default limit, else the min.
fn limit_range(obj: &mut Value) {
    let items = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut);
    for item in items.into_iter().flatten() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let list = |item: &Map<String, Value>, k: &str| {
            item.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let (max, min) = (list(item, "max"), list(item, "min"));
        let mut limit = list(item, "default");
        for (k, v) in &max {
            limit.entry(k.clone()).or_insert(v.clone());
        }
        let mut request = list(item, "defaultRequest");
        for (k, v) in limit.iter().chain(min.iter()) {
            request.entry(k.clone()).or_insert(v.clone());
        }
        if !limit.is_empty() {
            item.insert("default".into(), Value::Object(limit));
        }
        if !request.is_empty() {
            item.insert("defaultRequest".into(), Value::Object(request));
        }
    }
}

/// A ReplicationController's selector and labels default to its template's labels
/// (upstream's `SetDefaults_ReplicationController`): without this its controller
/// selects nothing and creates pods for ever.
fn replication_controller_selector(obj: &mut Value) {
    let Some(labels) = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.is_object())
        .cloned()
    else {
        return;
    };
    let empty = |v: Option<&Value>| v.and_then(Value::as_object).is_none_or(Map::is_empty);
    if empty(obj.pointer("/spec/selector")) {
        if let Some(spec) = obj_mut(obj, "spec") {
            spec.insert("selector".into(), labels.clone());
        }
    }
    if empty(obj.pointer("/metadata/labels")) {
        if let Some(meta) = obj_mut(obj, "metadata") {
            meta.insert("labels".into(), labels);
        }
    }
}

/// Top-level fields that upstream keeps as raw bytes (`runtime.RawExtension`): what is
/// in them is stored exactly as sent, nulls included (kubectl compares a
/// ControllerRevision's `data` byte for byte with the template it computes, which
/// carries `creationTimestamp: null`).
const RAW_FIELDS: &[(&str, &str)] = &[("ControllerRevision", "data")];

/// Removes every `null` member of an object of `kind`, recursively, except inside
/// raw fields: upstream decodes into typed structs, where a null field is simply
/// unset and is omitted when the object is written out (`initContainers: null` from a
/// client comes back without the field). Elements of lists are kept.
pub fn drop_nulls_of(kind: &str, obj: &mut Value) {
    let Value::Object(m) = obj else { return };
    m.retain(|_, v| !v.is_null());
    for (field, v) in m.iter_mut() {
        if !RAW_FIELDS.contains(&(kind, field.as_str())) {
            drop_nulls(v);
        }
    }
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Upstream's defaults for a built-in kind (after dropping nulls, as typed decoding
/// does).
pub fn apply(kind: &str, obj: &mut Value) {
    drop_nulls_of(kind, obj);
    match kind {
        "Pod" => pod(obj),
        "LimitRange" => limit_range(obj),
        "PriorityClass" => {
            if let Some(m) = obj.as_object_mut() {
                default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        "Deployment" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                default(spec, "strategy", json!({"type": "RollingUpdate"}));
                if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            default(ru, "maxUnavailable", json!("25%"));
                            default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
            }
            template(obj, "/spec/template/spec");
        }
        "ReplicaSet" | "ReplicationController" => {
            if kind == "ReplicationController" {
                replication_controller_selector(obj);
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "replicas", json!(1));
            }
            template(obj, "/spec/template/spec");
        }
        "StatefulSet" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            template(obj, "/spec/template/spec");
        }
        "DaemonSet" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template(obj, "/spec/template/spec");
        }
        "Job" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "completions", json!(1));
                default(spec, "parallelism", json!(1));
                default(spec, "backoffLimit", json!(6));
                default(spec, "completionMode", json!("NonIndexed"));
                default(spec, "suspend", json!(false));
                default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
            template(obj, "/spec/template/spec");
        }
        "CronJob" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
            }
            template(obj, "/spec/jobTemplate/spec/template/spec");
        }
        "Service" => {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "type", json!("ClusterIP"));
                default(spec, "sessionAffinity", json!("None"));
                if ty != "ExternalName" {
                    default(spec, "ipFamilyPolicy", json!("SingleStack"));
                    default(spec, "ipFamilies", json!(["IPv4"]));
                    default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if ty == "NodePort" || ty == "LoadBalancer" {
                    default(spec, "externalTrafficPolicy", json!("Cluster"));
                }
            }
            each_mut(obj.pointer_mut("/spec/ports"), |p| {
                let port = p.get("port").cloned();
                if let Some(p) = p.as_object_mut() {
                    default(p, "protocol", json!("TCP"));
                    if let Some(port) = port {
                        default(p, "targetPort", port);
                    }
                }
            });
        }
        "Secret" => {
            if let Some(m) = obj.as_object_mut() {
                default(m, "type", json!("Opaque"));
                // stringData is write-only: it is merged into data (base64) and dropped
                if let Some(Value::Object(plain)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(data) = data.as_object_mut() {
                        for (k, v) in plain {
                            let text = v.as_str().unwrap_or_default();
                            data.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(text)),
                            );
                        }
                    }
                }
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "PersistentVolume" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "HorizontalPodAutoscaler" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default(spec, "minReplicas", json!(1));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_upstream_defaults() {
        let mut p = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}], "readinessProbe": {"httpGet": {"port": 80}}},
            {"name": "b", "image": "registry:5000/busybox:1.36"}]}});
        apply("Pod", &mut p);
        let s = &p["spec"];
        assert_eq!(
            (s["restartPolicy"].as_str(), s["dnsPolicy"].as_str()),
            (Some("Always"), Some("ClusterFirst"))
        );
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        // the ServiceAccount admission plugin names the account (never on mirror pods)
        assert!(s.get("serviceAccountName").is_none());
        assert_eq!(s["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            s["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(s["containers"][0]["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(
            s["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
            "HTTP"
        );
        assert_eq!(qos_class(&p), "BestEffort");
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn nulls_are_unset_fields() {
        let mut p = json!({"metadata": {"name": "p", "labels": null},
            "spec": {"initContainers": null, "containers": [{"name": "c", "image": "i",
                "env": [{"name": "A", "value": null}]}]}});
        apply("Pod", &mut p);
        assert!(p["metadata"].get("labels").is_none());
        assert!(p["spec"].get("initContainers").is_none());
        assert_eq!(p["spec"]["containers"][0]["env"][0], json!({"name": "A"}));
        // raw data is kept as sent
        let mut cr = json!({"data": {"spec": {"template": {"metadata": {"creationTimestamp": null}}}},
            "revision": 1, "metadata": {"labels": null}});
        apply("ControllerRevision", &mut cr);
        assert!(cr["data"]["spec"]["template"]["metadata"]["creationTimestamp"].is_null());
        assert!(
            cr["data"]["spec"]["template"]["metadata"]
                .as_object()
                .unwrap()
                .contains_key("creationTimestamp")
        );
        assert!(cr["metadata"].get("labels").is_none());
    }

    #[test]
    fn a_replication_controller_selects_its_template_by_default() {
        let mut rc = json!({"metadata": {"name": "r"},
            "spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
        apply("ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        // what the user gave is kept
        let mut own = json!({"metadata": {"labels": {"team": "t"}},
            "spec": {"selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "a", "v": "1"}}}}});
        apply("ReplicationController", &mut own);
        assert_eq!(own["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(own["metadata"]["labels"], json!({"team": "t"}));
        // a ReplicaSet's selector is not defaulted (upstream requires it)
        let mut rs = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
        apply("ReplicaSet", &mut rs);
        assert!(rs["spec"].get("selector").is_none());
    }

    #[test]
    fn workloads_and_services_get_upstream_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(
            (
                d["spec"]["revisionHistoryLimit"].as_i64(),
                d["spec"]["progressDeadlineSeconds"].as_i64()
            ),
            (Some(10), Some(600))
        );
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply("Deployment", &mut r);
        assert!(r["spec"]["strategy"].get("rollingUpdate").is_none());
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "y"}});
        apply("Secret", &mut secret);
        assert_eq!(
            secret,
            json!({"type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}})
        );
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply("Service", &mut s);
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(
            (
                s["spec"]["sessionAffinity"].as_str(),
                s["spec"]["externalTrafficPolicy"].as_str()
            ),
            (Some("None"), Some("Cluster"))
        );
    }
}
