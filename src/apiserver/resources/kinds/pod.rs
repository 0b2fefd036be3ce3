//! Pods: they start `Pending` with their QoS class, and a pod a node runs is deleted
//! gracefully (the kubelet stops its containers, then finishes the deletion).

use super::Strategy;
use serde_json::{Value, json};

pub struct Pod;

/// A pod's grace period when neither it nor the deletion names one (upstream's).
const DEFAULT_GRACE: i64 = 30;

impl Strategy for Pod {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }

    fn initial_status(&self, pod: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "qosClass": crate::api::defaults::qos_class(pod)}))
    }

    fn grace_period(&self, pod: &Value, options: &Value) -> i64 {
        let on_node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !on_node {
            return 0; // nothing runs it: nothing to wait for
        }
        options
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(DEFAULT_GRACE)
            .max(0)
    }
}
