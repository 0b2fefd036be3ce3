//! The codec's own cases: kinds, round trips, zero values, hostile bodies.
use super::*;

#[test]
fn kinds_find_their_messages_in_their_group_version_then_in_meta() {
    assert_eq!(message_of("v1", "Pod"), Some("io.k8s.api.core.v1.Pod"));
    assert_eq!(
        message_of("apiregistration.k8s.io/v1", "APIService"),
        Some("io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService")
    );
    assert_eq!(
        message_of("apps/v1", "DeleteOptions"),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
    );
    assert_eq!(
        message_of("v1", "Status"),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.Status")
    );
    assert_eq!(message_of("example.com/v1", "Widget"), None);
    assert_eq!(message_of("v1", "Nothing"), None);
}

#[test]
fn objects_survive_the_round_trip_and_zero_values_read_as_go_writes_them() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"},
                     "creationTimestamp": "2026-12-07T10:00:00Z",
                     "deletionGracePeriodSeconds": 0},
        "spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "100m"}},
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5}}],
                 "automountServiceAccountToken": false,
                 "terminationGracePeriodSeconds": 0},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-07T10:00:01Z"}]}
    });
    let bytes = encode_envelope(&pod).unwrap().unwrap();
    assert!(bytes.starts_with(super::super::MAGIC));
    assert_eq!(decode_envelope(&bytes, 0).unwrap(), pod);
    // a zero non-pointer field on the wire reads as absent
    let mut container = Vec::new();
    len_field(&mut container, 1, b"c");
    key(&mut container, 16, 0); // stdin = false
    container.push(0);
    let c = decode_message("io.k8s.api.core.v1.Container", &container, 0).unwrap();
    assert_eq!(c, json!({"name": "c"}));
    // a time written as an empty message reads as absent
    let mut meta = Vec::new();
    len_field(&mut meta, 1, b"m");
    len_field(&mut meta, 8, b"");
    let m = decode_message("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", &meta, 0).unwrap();
    assert_eq!(m, json!({"name": "m"}));
}

#[test]
fn hostile_bodies_are_errors_not_panics() {
    let deep = {
        // JSONSchemaProps nested through `not` far beyond the limit
        let mut b = Vec::new();
        for _ in 0..200 {
            let mut outer = Vec::new();
            len_field(&mut outer, 28, &b);
            b = outer;
        }
        b
    };
    let name = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps";
    assert!(matches!(
        decode_message(name, &deep, 0),
        Err(crate::apiserver::protobuf::ProtobufError::TooDeep(
            "messages"
        ))
    ));
    assert!(decode_envelope(b"k8s\0\x0a\xff", 0).is_err());
    assert!(decode_message("io.k8s.api.core.v1.Pod", &[0x0a, 0x05, 1], 0).is_err());
    assert!(decode_message("io.k8s.api.core.v1.Pod", &[0x00], 0).is_err());
}
