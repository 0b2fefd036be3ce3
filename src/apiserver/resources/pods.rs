//! Pod subresources with their own rules: `binding` (the scheduler assigns a node,
//! once) and `eviction` (a deletion that respects PodDisruptionBudgets, as
//! `kubectl drain` uses it).

use super::object::{from_store, key, prefix};
use super::{Writer, store_error, write};
use crate::api::registry;
use crate::api::selector::LabelSelector;
use crate::apiserver::admission::{Attributes, Operation};
use crate::apiserver::status::ApiStatus;
use http::StatusCode;
use serde_json::{Value, json};

fn pods() -> &'static registry::Resource {
    &crate::api::registry::PODS
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// Admits the create of a pod subresource (`binding`, `eviction`) whose body is `obj`.
async fn admit(
    w: &Writer<'_>,
    subresource: &str,
    namespace: &str,
    pod: &str,
    obj: &mut Value,
) -> Result<(), ApiStatus> {
    let attrs = Attributes {
        operation: Operation::Create,
        resource: pods(),
        subresource,
        namespace: Some(namespace),
        name: pod,
        user: w.user,
        old: None,
    };
    w.admission.run(&attrs, obj, w.store).await
}

/// `POST pods/<name>/binding` (and the `bindings` resource): sets `spec.nodeName` once.
pub async fn bind(
    w: &Writer<'_>,
    namespace: &str,
    pod: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let mut binding: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    admit(w, "binding", namespace, pod, &mut binding).await?;
    let store = w.store;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiStatus::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("Binding \"{pod}\" is invalid: target.name: Required value"),
            )
        })?;
    let now = crate::api::meta::now_rfc3339();
    write::guaranteed_update(store, pods(), Some(namespace), pod, None, &|cur| {
        if let Some(existing) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiStatus::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is already assigned to node \"{existing}\""),
            ));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiStatus::new(StatusCode::CONFLICT, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{pod}\": pod {pod} is being deleted, cannot be assigned to a host")));
        }
        let mut next = cur.clone();
        next["spec"]["nodeName"] = json!(node);
        let conditions = next["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        next["status"]["conditions"] = json!(conditions);
        Ok(next)
    })
    .await?;
    Ok(success())
}

/// `POST pods/<name>/eviction`: refuses (429) when the pod's disruption budget allows
/// no more disruptions, otherwise uses one and deletes the pod.
pub async fn evict(
    w: &Writer<'_>,
    namespace: &str,
    pod: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let mut eviction: Value = serde_json::from_slice(body).map_err(|e| {
        ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    admit(w, "eviction", namespace, pod, &mut eviction).await?;
    let store = w.store;
    let got = store
        .get(&key(pods(), Some(namespace), pod))
        .await
        .map_err(store_error)?;
    let pod_obj = from_store(
        &got.kv
            .ok_or_else(|| ApiStatus::not_found("", "pods", pod))?,
    )?;
    let labels = pod_obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned();
    let pdbs = &crate::api::registry::PODDISRUPTIONBUDGETS;
    let page = store
        .list(&prefix(pdbs, Some(namespace)), Default::default())
        .await
        .map_err(store_error)?;
    let mut matching = Vec::new();
    for kv in &page.kvs {
        let pdb = from_store(kv)?;
        let selector = pdb
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        // a nil selector selects nothing; an empty one everything
        if !selector.is_null()
            && LabelSelector::from_object(&selector)
                .map_err(|e| ApiStatus::bad_request(e.to_string()))?
                .matches(labels.as_ref())
        {
            matching.push(pdb);
        }
    }
    let terminal = matches!(
        pod_obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if matching.len() > 1 {
        return Err(ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    if let (Some(pdb), false) = (matching.first(), terminal) {
        let name = pdb
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let too_many = || {
            ApiStatus::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
                .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {name} needs more healthy pods and has fewer disruptions allowed than required")}]}))
        };
        let generation = pdb
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let observed = pdb
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if observed < generation {
            return Err(ApiStatus::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!(
                    "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} is still being processed by the server."
                ),
            ));
        }
        // use one disruption, recording the pod, before deleting it
        write::guaranteed_update(store, pdbs, Some(namespace), &name, None, &|cur| {
            let allowed = cur
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if allowed < 1 {
                return Err(too_many());
            }
            let mut next = cur.clone();
            next["status"]["disruptionsAllowed"] = json!(allowed - 1);
            next["status"]["disruptedPods"][pod] = json!(crate::api::meta::now_rfc3339());
            Ok(next)
        })
        .await?;
    }
    let options = eviction
        .get("deleteOptions")
        .map(|o| o.to_string())
        .unwrap_or_default();
    // admitted as the eviction
    super::delete::delete_with(w, pods(), Some(namespace), pod, options.as_bytes(), false).await?;
    Ok(success())
}
