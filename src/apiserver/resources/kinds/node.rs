//! Nodes: a kubelet registers its Node with its status (addresses, capacity,
//! nodeInfo, conditions) in one create, which keeps it, as upstream's node strategy
//! does (only `status.config` goes) — so no client ever sees a registered node
//! without what it is. Later status writes go through `nodes/status`.

use super::Strategy;
use serde_json::{Value, json};

pub struct Node;

impl Strategy for Node {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("configSource");
        }
    }

    fn initial_status(&self, obj: &Value) -> Option<Value> {
        let mut status = obj.get("status").cloned().unwrap_or_else(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            s.remove("config");
        }
        Some(if status.is_object() {
            status
        } else {
            json!({})
        })
    }
}
