//! Deletion as upstream's generic registry does it: preconditions; finalizers (and the
//! `foregroundDeletion` / `orphan` ones that `propagationPolicy` asks for) keep the
//! object with a `deletionTimestamp` until they are removed; pods bound to a node are
//! deleted gracefully (the kubelet finishes); a namespace turns `Terminating` until the
//! namespace controller has emptied it and removed its `kubernetes` finalizer;
//! everything else goes at once.

use super::object::{conflict, from_store, key, set_resource_version, to_store};
use super::{store_error, write};
use crate::api::meta::{now_secs, rfc3339};
use crate::api::registry::Resource;
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::{Store, StoreError};
use http::StatusCode;
use serde_json::{Value, json};

fn precondition_failed(
    res: &Resource,
    name: &str,
    what: &str,
    want: &str,
    have: &str,
) -> ApiStatus {
    ApiStatus::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}",
            qualified(res.plural, res.group)
        ),
    )
}

/// Whether an object being deleted can now go: no finalizers left (for namespaces,
/// neither in `spec.finalizers`) and no grace period still running.
pub fn ready_to_go(obj: &Value) -> bool {
    let none_left = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && none_left("/metadata/finalizers")
        && none_left("/spec/finalizers")
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// Deletes one object (see the module documentation). Returns the Status of an
/// immediate deletion (the deleted object for the kinds upstream returns it for), or
/// the object as it now stands when deletion is pending.
pub async fn delete(
    store: &dyn Store,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiStatus::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let k = key(res, namespace, name);
    for _ in 0..write::WRITE_RETRIES {
        let current = store.get(&k).await.map_err(store_error)?;
        let kv = current
            .kv
            .ok_or_else(|| ApiStatus::not_found(res.group, res.plural, name))?;
        let decoded = match from_store(&kv) {
            Ok(obj) => obj,
            Err(e) => {
                // unreadable (written before the depth limit, or damaged): nothing
                // can be honoured on it, so it goes as it is, as upstream's
                // unsafe deletion of corrupt objects does
                tracing::warn!(key = %k, error = %e.message, "deleting an unreadable stored object without decoding it");
                match store.delete(&k, kv.mod_revision).await {
                    Ok(_) => {
                        return Ok(
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": name, "group": res.group, "kind": res.plural}}),
                        );
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
        };
        let mut obj = crate::api::convert::to_version(decoded, res);
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(want) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            if want != uid {
                return Err(precondition_failed(res, name, "UID", want, &uid));
            }
        }
        if let Some(want) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if want != kv.mod_revision.to_string() {
                return Err(precondition_failed(
                    res,
                    name,
                    "ResourceVersion",
                    want,
                    &kv.mod_revision.to_string(),
                ));
            }
        }
        // finalizers requested by the propagation policy
        let mut finalizers: Vec<Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let wanted = match options.get("propagationPolicy").and_then(Value::as_str) {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            Some("Background") | None => None,
            Some(other) => {
                return Err(ApiStatus::bad_request(format!(
                    "unsupported propagationPolicy {other:?}; use Foreground, Background or Orphan"
                )));
            }
        };
        if options.get("orphanDependents") == Some(&json!(true))
            && !finalizers.contains(&json!("orphan"))
        {
            finalizers.push(json!("orphan"));
        }
        if let Some(f) = wanted {
            if !finalizers.contains(&json!(f)) {
                finalizers.push(json!(f));
            }
        }
        // graceful deletion of pods that a node runs
        let on_node = res.kind == "Pod"
            && obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
        let grace = options
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        let graceful = on_node && grace > 0;
        // a namespace waits for its `kubernetes` finalizer: the namespace controller
        // empties it first (the namespace is Terminating meanwhile)
        let namespace_content = res.kind == "Namespace"
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        if graceful || !finalizers.is_empty() || namespace_content {
            if obj.pointer("/metadata/deletionTimestamp").is_some() && wanted.is_none() {
                return Ok(obj); // already being deleted
            }
            let meta = &mut obj["metadata"];
            meta["finalizers"] = json!(finalizers);
            if meta.get("deletionTimestamp").is_none() {
                let grace = if graceful { grace } else { 0 };
                meta["deletionTimestamp"] = json!(rfc3339(now_secs() + grace));
                meta["deletionGracePeriodSeconds"] = json!(grace);
            }
            if res.kind == "Namespace" {
                obj["status"]["phase"] = json!("Terminating");
            }
            super::object::normalize(res, &mut obj);
            match store.update(&k, to_store(&obj)?, kv.mod_revision).await {
                Ok(revision) => {
                    set_resource_version(&mut obj, revision);
                    return Ok(obj);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        match store.delete(&k, kv.mod_revision).await {
            Ok(_) => {
                if res.kind == "Service" {
                    super::allocate::release(store, &obj).await;
                }
                if res.returns_deleted_object() {
                    // as last stored (upstream decodes the deleted state)
                    set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(obj);
                }
                return Ok(json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid},
                }));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(conflict(res, name))
}
