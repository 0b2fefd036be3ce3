//! Namespaces: created `Active` with the `kubernetes` finalizer and their
//! `kubernetes.io/metadata.name` label; writes to the main resource change neither
//! spec nor status (those go through `finalize` and `status`); a namespace being
//! deleted is `Terminating` until the namespace controller has emptied it.

use super::Strategy;
use serde_json::{Value, json};

pub struct Namespace;

impl Strategy for Namespace {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        // as upstream: the client's finalizers stay, `kubernetes` is added
        let mut finalizers: Vec<Value> = obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !finalizers.contains(&json!("kubernetes")) {
            finalizers.push(json!("kubernetes"));
        }
        obj["spec"] = json!({"finalizers": finalizers});
        let name = obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        if !obj
            .pointer("/metadata/labels")
            .is_some_and(Value::is_object)
        {
            obj["metadata"]["labels"] = json!({});
        }
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        new["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
        new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
    }

    fn on_terminating(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }
}
