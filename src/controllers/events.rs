//! Events (core/v1), as `kubectl describe` and `kubectl get events` show them.

use crate::api::meta::now_rfc3339;
use crate::client::ApiClient;
use serde_json::{Value, json};

/// Records an event about `object` (`kind`/`apiVersion` must be set); failures are
/// logged, never fatal: events are a courtesy.
pub async fn record(
    client: &ApiClient,
    object: &Value,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let suffix: String = crate::api::meta::new_uid().replace('-', "")[..16].to_string();
    let now = now_rfc3339();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{suffix}"), "namespace": ns},
        "involvedObject": {
            "apiVersion": object["apiVersion"], "kind": object["kind"], "namespace": object["metadata"]["namespace"],
            "name": name, "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
        },
        "reason": reason, "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": "",
        "firstTimestamp": now, "lastTimestamp": now, "eventTime": Value::Null, "count": 1,
    });

    if let Err(e) = client
        .create(&format!("/api/v1/namespaces/{ns}/events"), &event)
        .await
    {
        tracing::debug!(reason, error = %e, "could not record an event");
    }
}
