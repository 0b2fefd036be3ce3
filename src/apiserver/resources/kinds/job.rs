//! Jobs: without `manualSelector`, a Job gets a selector on its own uid and its pod
//! template the matching labels (upstream's job strategy does this on create).

use super::Strategy;
use serde_json::{Value, json};

pub struct Job;

impl Strategy for Job {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.successful"]
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
            return;
        }
        let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
        let name = obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = json!({
            "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
            "controller-uid": uid, "job-name": name,
        });
        if obj.pointer("/spec/template/metadata").is_none() {
            obj["spec"]["template"]["metadata"] = json!({});
        }
        let meta = &mut obj["spec"]["template"]["metadata"];
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        if let (Some(target), Some(add)) = (meta["labels"].as_object_mut(), labels.as_object()) {
            for (k, v) in add {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}
