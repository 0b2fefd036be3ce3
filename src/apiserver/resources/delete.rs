//! Deletion as upstream's generic registry does it, through the one update loop:
//! the preconditions are checked, the object is marked (`api::lifecycle`) with the
//! grace period its kind's strategy gives (pods a node runs: the kubelet finishes)
//! and the finalizers the propagation policy asks for, and the loop removes it from
//! the store once nothing holds it. A namespace stays `Terminating` until the
//! namespace controller has emptied it and removed its `kubernetes` finalizer.

use super::Writer;
use super::kinds;
use super::write::{Admit, Outcome, Target, update_loop};
use crate::api::lifecycle::{mark_deleted, propagation_finalizer, ready_to_go};
use crate::api::meta::now_secs;
use crate::api::registry::Resource;
use crate::apiserver::admission::Operation;
use crate::apiserver::status::{ApiStatus, qualified};
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

/// The `preconditions` of a `DeleteOptions`, checked against the current object.
fn check_preconditions(
    res: &Resource,
    name: &str,
    options: &Value,
    cur: &Value,
) -> Result<(), ApiStatus> {
    for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let Some(want) = options
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let have = cur
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if want != have {
            return Err(precondition_failed(res, name, what, want, have));
        }
    }
    Ok(())
}

/// Deletes one object for a request (see the module documentation). Returns the
/// Status of an immediate deletion (the deleted object for the kinds upstream
/// returns it for), or the object as it now stands when deletion is pending.
pub async fn delete(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiStatus> {
    delete_with(w, res, namespace, name, body, true).await
}

/// [`delete`], with or without the request's admission (an eviction's deletion was
/// admitted as the eviction).
pub(super) async fn delete_with(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    admitted: bool,
) -> Result<Value, ApiStatus> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiStatus::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let finalizer =
        propagation_finalizer(&options).map_err(|e| ApiStatus::bad_request(e.to_string()))?;
    let strategy = kinds::of(res);
    let now = now_secs();
    let target = Target {
        res,
        namespace,
        name,
        precondition: None,
        admit: admitted.then_some(Admit {
            chain: w.admission,
            user: w.user,
            operation: Operation::Delete,
            subresource: "",
        }),
        deleting: true,
    };
    let outcome = update_loop(w.store, &target, &|cur| {
        check_preconditions(res, name, &options, cur)?;
        let grace = strategy.grace_period(cur, &options);
        let mut next = mark_deleted(cur, finalizer, grace, now);
        if !ready_to_go(&next) {
            strategy.on_terminating(&mut next);
        }
        Ok(next)
    })
    .await?;
    Ok(match outcome {
        Outcome::Stored(pending) => pending,
        // as last stored (upstream decodes the deleted state)
        Outcome::Deleted(Some(last)) if res.returns_deleted_object() => last,
        Outcome::Deleted(last) => {
            let mut details = json!({"name": name, "group": res.group, "kind": res.plural});
            if let Some(uid) = last.as_ref().and_then(|l| l.pointer("/metadata/uid")) {
                details["uid"] = uid.clone();
            }
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": details})
        }
    })
}
