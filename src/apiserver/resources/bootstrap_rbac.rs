//! The default RBAC policy, reconciled at every start (upstream's post-start hook
//! `rbac/bootstrap-roles`): missing roles and bindings are created, missing rules and
//! subjects added; an object marked `rbac.authorization.kubernetes.io/autoupdate:
//! "false"` is left as its owner made it. What to write is computed in
//! `api::rbac::reconcile`; this is the thin applier over the store.

use super::object::{from_store, key};
use super::{Writer, create, delete, store_error, write};
use crate::api::rbac::reconcile::{self, Operation, Reconciled};
use crate::api::registry::{self, Resource};
use crate::apiserver::admission::Chain;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use http::StatusCode;
use serde_json::Value;

/// How often one object is tried again when another server writes it meanwhile.
const ATTEMPTS: usize = 3;

/// Reconciles every object of the default policy; an object that cannot be is logged
/// and the rest go on (as upstream), a policy that cannot be read is an error.
pub async fn bootstrap_rbac(store: &dyn Store) -> Result<(), ApiStatus> {
    let policy = reconcile::policy().map_err(|e| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    })?;
    let (chain, user) = (Chain::builtin(), UserInfo::apiserver());
    let w = Writer {
        store,
        ranges: None,
        admission: &chain,
        user: &user,
    };
    for expected in &policy {
        let (res, is_role) = match expected["kind"].as_str() {
            Some("ClusterRole") => (&registry::CLUSTERROLES, true),
            Some("Role") => (&registry::ROLES, true),
            Some("ClusterRoleBinding") => (&registry::CLUSTERROLEBINDINGS, false),
            _ => (&registry::ROLEBINDINGS, false),
        };
        if let Err(e) = one(&w, res, is_role, expected).await {
            tracing::warn!(
                kind = res.kind,
                name = %expected["metadata"]["name"],
                error = %e.message,
                "unable to reconcile a default RBAC object"
            );
        }
    }
    Ok(())
}

async fn current(
    store: &dyn Store,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, ApiStatus> {
    let got = store
        .get(&key(res, namespace, name))
        .await
        .map_err(store_error)?;
    got.kv.map(|kv| from_store(&kv)).transpose()
}

fn plan(is_role: bool, existing: Option<&Value>, expected: &Value) -> Reconciled {
    if is_role {
        reconcile::role(existing, expected)
    } else {
        reconcile::binding(existing, expected)
    }
}

/// One object: read, compute, write; again when someone else wrote it meanwhile.
async fn one(
    w: &Writer<'_>,
    res: &Resource,
    is_role: bool,
    expected: &Value,
) -> Result<(), ApiStatus> {
    let name = expected["metadata"]["name"].as_str().unwrap_or("");
    let namespace = expected["metadata"]["namespace"].as_str();
    for _ in 0..ATTEMPTS {
        let existing = current(w.store, res, namespace, name).await?;
        let r = plan(is_role, existing.as_ref(), expected);
        if r.protected {
            if r.operation != Operation::None {
                tracing::warn!(kind = res.kind, name, "skipped reconcile-protected object");
            }
            return Ok(());
        }
        let outcome = match r.operation {
            Operation::None => return Ok(()),
            Operation::Create => create(w, res, namespace, expected.clone(), None)
                .await
                .map(|_| ()),
            Operation::Update => {
                let expected = expected.clone();
                write::guaranteed_update(w.store, res, namespace, name, None, &move |cur| {
                    let r = plan(is_role, Some(cur), &expected);
                    Ok(if r.protected { cur.clone() } else { r.object })
                })
                .await
                .map(|_| ())
            }
            Operation::Recreate => {
                match delete(w, res, namespace, name, b"").await {
                    Ok(_) => {}
                    Err(e) if e.code == StatusCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
                create(w, res, namespace, expected.clone(), None)
                    .await
                    .map(|_| ())
            }
        };
        match outcome {
            Ok(()) => {
                if !r.missing_rules.is_empty() || !r.missing_subjects.is_empty() {
                    tracing::info!(kind = res.kind, name, "updated a default RBAC object");
                }
                return Ok(());
            }
            // another server got there first: look again
            Err(e)
                if e.reason == "AlreadyExists"
                    || e.code == StatusCode::NOT_FOUND
                    || e.code == StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
    }
    Err(ApiStatus::new(
        StatusCode::CONFLICT,
        "Conflict",
        format!("exceeded maximum attempts reconciling {} {name}", res.kind),
    ))
}
