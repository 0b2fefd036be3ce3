//! The codec against the types `k8s-pb` generates from upstream's `.proto` files: what
//! this server writes decodes as those types with the fields where upstream puts them,
//! and what they write reads back as the same JSON.

use super::codec::{decode_envelope, encode_envelope, envelope};
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Value, json};

/// The raw bytes inside our envelope.
fn raw_of(bytes: &[u8]) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[4..])
        .expect("an Unknown envelope");
    unknown.raw.expect("raw bytes")
}

/// Encodes with this server's codec, decodes as the generated type, encodes that again
/// with prost and reads it back with this server's codec: the JSON must be unchanged.
fn round_trip<T: Message + Default>(obj: &Value) -> T {
    let ours = encode_envelope(obj)
        .expect("a protobuf kind")
        .expect("encodes");
    let typed = T::decode(raw_of(&ours).as_slice()).expect("decodes as the generated type");
    let again = envelope(
        obj["apiVersion"].as_str().unwrap(),
        obj["kind"].as_str().unwrap(),
        &typed.encode_to_vec(),
    );
    assert_eq!(&decode_envelope(&again, 0).unwrap(), obj);
    typed
}

#[test]
fn a_pod_reads_as_upstreams_pod_and_back() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                     "resourceVersion": "7", "labels": {"app": "web"},
                     "annotations": {"a": "b"},
                     "creationTimestamp": "2026-12-07T10:00:00Z",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-1", "uid": "u0", "controller": true,
                        "blockOwnerDeletion": true}],
                     "finalizers": ["x/y"],
                     "managedFields": [{"manager": "kubectl", "operation": "Apply",
                        "apiVersion": "v1", "time": "2026-12-07T10:00:00Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]},
        "spec": {
            "containers": [{
                "name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["sleep 1"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                              "requests": {"cpu": "100m"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                   "periodSeconds": 5, "failureThreshold": 3},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg", "readOnly": true}]
            }],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420,
                         "items": [{"key": "k", "path": "p"}]}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
                             "tolerationSeconds": 300}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions":
                    [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}}
        },
        "status": {"phase": "Running", "podIP": "10.42.0.5",
                   "podIPs": [{"ip": "10.42.0.5"}],
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-12-07T10:00:01Z"}],
                   "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2,
                        "image": "busybox", "imageID": "sha256:1", "started": true,
                        "state": {"running": {"startedAt": "2026-12-07T10:00:01Z"}}}]}
    });
    let typed: core::Pod = round_trip(&pod);
    let spec = typed.spec.as_ref().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.name.as_deref(), Some("c"));
    assert_eq!(c.ports[0].container_port, Some(8080));
    assert_eq!(
        c.resources.as_ref().unwrap().limits["memory"]
            .string
            .as_deref(),
        Some("64Mi")
    );
    let port = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .handler
        .as_ref()
        .unwrap();
    let port = port.http_get.as_ref().unwrap().port.as_ref().unwrap();
    assert_eq!(
        (port.r#type, port.str_val.as_deref()),
        (Some(1), Some("http"))
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(0));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let meta = typed.metadata.as_ref().unwrap();
    assert_eq!(
        meta.creation_timestamp.as_ref().unwrap().seconds,
        Some(1_796_637_600)
    );
    let fields = meta.managed_fields[0].fields_v1.as_ref().unwrap();
    let fields: Value = serde_json::from_slice(fields.raw.as_deref().unwrap()).unwrap();
    assert_eq!(fields["f:metadata"]["f:labels"]["f:app"], json!({}));
    assert_eq!(
        typed.status.as_ref().unwrap().container_statuses[0].restart_count,
        Some(2)
    );
}

#[test]
fn kubectl_create_clusterrole_aggregation_rule_keeps_its_rule() {
    // what kubectl 1.33 sends for `create clusterrole monitoring --aggregation-rule=…`
    let role = rbac::ClusterRole {
        metadata: Some(meta::ObjectMeta {
            name: Some("monitoring".into()),
            ..Default::default()
        }),
        rules: vec![],
        aggregation_rule: Some(rbac::AggregationRule {
            cluster_role_selectors: vec![meta::LabelSelector {
                match_labels: [(
                    "rbac.example.com/aggregate-to-monitoring".to_string(),
                    "true".to_string(),
                )]
                .into(),
                match_expressions: vec![],
            }],
        }),
    };
    let body = envelope(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        &role.encode_to_vec(),
    );
    let obj = decode_envelope(&body, 0).unwrap();
    assert_eq!(
        obj["aggregationRule"],
        json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-monitoring": "true"}}]})
    );
    assert_eq!(obj["metadata"], json!({"name": "monitoring"}));
    let _: rbac::ClusterRole = round_trip(&obj);
}

#[test]
fn delete_options_status_and_lists_have_their_protobuf_forms() {
    // client-go (Helm's release storage) deletes with protobuf DeleteOptions
    let opts = meta::DeleteOptions {
        propagation_policy: Some("Background".into()),
        grace_period_seconds: Some(0),
        dry_run: vec![],
        ..Default::default()
    };
    let obj = decode_envelope(&envelope("v1", "DeleteOptions", &opts.encode_to_vec()), 0).unwrap();
    assert_eq!(
        obj,
        json!({"apiVersion": "v1", "kind": "DeleteOptions",
               "propagationPolicy": "Background", "gracePeriodSeconds": 0})
    );
    let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"}, "code": 404});
    let typed: meta::Status = round_trip(&json!({"apiVersion": "v1", "kind": "Status",
        "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"}, "code": 404}));
    assert_eq!(typed.code, Some(404));
    assert!(encode_envelope(&status).unwrap().is_ok());
    let list = json!({"apiVersion": "v1", "kind": "ConfigMapList",
        "metadata": {"resourceVersion": "12", "continue": "abc"},
        "items": [{"metadata": {"name": "a"}, "data": {"k": "v"},
                   "binaryData": {"b": "AAEC"}}]});
    let typed: core::ConfigMapList = round_trip(&list);
    assert_eq!(typed.items[0].binary_data["b"], vec![0u8, 1, 2]);
}

#[test]
fn workloads_services_and_nodes_read_as_upstreams_types() {
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "generation": 3},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                 "template": {"metadata": {"labels": {"app": "d"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True",
            "lastUpdateTime": "2026-12-07T10:00:00Z", "reason": "MinimumReplicasAvailable"}]}});
    let typed: k8s_pb::api::apps::v1::Deployment = round_trip(&deploy);
    let spec = typed.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge.unwrap().str_val.as_deref(), Some("25%"));
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "NodePort", "selector": {"app": "d"}, "clusterIP": "10.43.0.10",
                 "clusterIPs": ["10.43.0.10"], "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080,
                            "protocol": "TCP"}],
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}});
    let typed: core::Service = round_trip(&svc);
    assert_eq!(typed.spec.unwrap().ports[0].node_port, Some(30080));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"],
                 "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                   "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                   "nodeInfo": {"kubeletVersion": "v1.33.0", "machineID": "m",
                     "systemUUID": "s", "bootID": "b", "kernelVersion": "6", "osImage": "d",
                     "containerRuntimeVersion": "containerd://2", "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": "amd64"},
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
    let mut expected = node.clone();
    // an empty non-pointer string reads as absent, as Go's JSON writes it
    expected["status"]["nodeInfo"]
        .as_object_mut()
        .unwrap()
        .remove("kubeProxyVersion");
    let ours = encode_envelope(&node).unwrap().unwrap();
    let typed = core::Node::decode(raw_of(&ours).as_slice()).unwrap();
    assert_eq!(
        typed
            .status
            .as_ref()
            .unwrap()
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port,
        Some(10250)
    );
    assert_eq!(decode_envelope(&ours, 0).unwrap(), expected);
}

#[test]
fn micro_times_durations_and_custom_resource_definitions_keep_their_json() {
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40,
                 "renewTime": "2026-12-07T10:00:00.123456Z"}});
    let typed: k8s_pb::api::coordination::v1::Lease = round_trip(&lease);
    assert_eq!(
        typed.spec.unwrap().renew_time.unwrap().nanos,
        Some(123_456_000)
    );
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                     "additionalProperties": {"type": "string"},
                                     "required": ["size"],
                                     "properties": {"size": {"type": "integer", "minimum": 1,
                                                             "default": 3,
                                                             "enum": [1, 3, 5]}}},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "strict": {"type": "object", "additionalProperties": false}},
                        "x-kubernetes-validations": [{"rule": "self.spec.size < 10"}]}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer",
                                                  "jsonPath": ".spec.size"}],
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size",
                        "statusReplicasPath": ".status.size"}}}]}});
    let typed: k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        round_trip(&crd);
    let schema = typed.spec.unwrap().versions[0].schema.clone().unwrap();
    let props = schema.open_apiv3_schema.unwrap().properties;
    assert_eq!(
        props["spec"].x_kubernetes_preserve_unknown_fields,
        Some(true)
    );
    let raw = props["spec"].properties["size"]
        .default
        .clone()
        .unwrap()
        .raw
        .unwrap();
    assert_eq!(raw, b"3");
}
