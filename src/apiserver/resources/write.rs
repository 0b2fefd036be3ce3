//! Writes that change an existing object: update (PUT), patch, and the `status` and
//! `scale` subresources. All go through one read-modify-write loop with optimistic
//! concurrency, as upstream's GuaranteedUpdate does.

use super::Writer;
use super::object::{
    conflict, from_store, key, prepare_update, sent_resource_version, set_resource_version,
    to_store,
};
use super::store_error;
use crate::api::managed::{self, Actor, Scope};
use crate::api::meta::now_rfc3339;
use crate::api::patch::{PatchError, json_patch, merge_patch};
use crate::api::registry::Resource;
use crate::apiserver::admission::{Attributes, Chain, Operation};
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::store::{Revision, Store, StoreError};
use http::StatusCode;
use serde_json::{Value, json};

/// How many times a write retries after losing a race it did not ask to lose.
pub(super) const WRITE_RETRIES: usize = 5;

/// The admission a request's write passes inside the update loop (the server's own
/// bookkeeping writes pass none).
pub(super) struct Admit<'a> {
    pub chain: &'a Chain,
    pub user: &'a UserInfo,
    pub operation: Operation,
    pub subresource: &'a str,
}

impl<'a> Admit<'a> {
    /// An update of `subresource` (`""`: the resource itself) by the writer's caller.
    pub fn update(w: &Writer<'a>, subresource: &'a str) -> Admit<'a> {
        Admit {
            chain: w.admission,
            user: w.user,
            operation: Operation::Update,
            subresource,
        }
    }
}

/// What the update loop did.
pub(super) enum Outcome {
    /// The object as now stored (or, when nothing changed, as it was).
    Stored(Value),
    /// The object went: its last stored state (absent if it was unreadable).
    Deleted(Option<Value>),
}

impl Outcome {
    /// The object written, or the one deleted.
    fn object(self, res: &Resource, name: &str) -> Result<Value, ApiStatus> {
        match self {
            Outcome::Stored(obj) | Outcome::Deleted(Some(obj)) => Ok(obj),
            Outcome::Deleted(None) => Err(ApiStatus::not_found(res.group, res.plural, name)),
        }
    }
}

/// One object's read-modify-write.
pub(super) struct Target<'a> {
    pub res: &'a Resource,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// A `resourceVersion` the client sent: a mismatch is a 409, not a retry.
    pub precondition: Option<Revision>,
    pub admit: Option<Admit<'a>>,
    /// For a delete: an unreadable stored object (written before a limit existed,
    /// or damaged) goes as it is, as upstream's unsafe deletion of corrupt objects.
    pub deleting: bool,
}

/// Reads the object, computes its next version with `mutate`, and writes it if nobody
/// wrote in between. With `precondition` (a `resourceVersion` the client sent), a
/// mismatch is a 409 instead of a retry. The server's own writes use this; requests
/// go through [`update_loop`] with their admission.
pub async fn guaranteed_update(
    store: &dyn Store,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    precondition: Option<Revision>,
    mutate: &(dyn Fn(&Value) -> Result<Value, ApiStatus> + Sync),
) -> Result<Value, ApiStatus> {
    let target = Target {
        res,
        namespace,
        name,
        precondition,
        admit: None,
        deleting: false,
    };
    update_loop(store, &target, mutate).await?.object(res, name)
}

/// The one read-modify-write loop (upstream's GuaranteedUpdate): every write to an
/// existing object, deletes included, goes through it. `mutate` computes the next
/// version; the admission chain (if any) sees it; an object whose deletion is due
/// (marked, no finalizers, no grace left) is removed from the store, and what the
/// kind's strategy reserved for it is released.
pub(super) async fn update_loop(
    store: &dyn Store,
    t: &Target<'_>,
    mutate: &(dyn Fn(&Value) -> Result<Value, ApiStatus> + Sync),
) -> Result<Outcome, ApiStatus> {
    let (res, name) = (t.res, t.name);
    let k = key(res, t.namespace, name);
    let lost = |e: StoreError| match e {
        StoreError::Conflict { .. } if t.precondition.is_none() => None,
        StoreError::Conflict { .. } => Some(conflict(res, name)),
        e => Some(store_error(e)),
    };
    for _ in 0..WRITE_RETRIES {
        let current = store.get(&k).await.map_err(store_error)?;
        let kv = current
            .kv
            .ok_or_else(|| ApiStatus::not_found(res.group, res.plural, name))?;
        if t.precondition.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(conflict(res, name));
        }
        // decoded once: the mutation and the no-op check both read it
        let current = match from_store(&kv) {
            Ok(obj) => crate::api::convert::to_version(obj, res),
            Err(e) if t.deleting => {
                tracing::warn!(key = %k, error = %e.message, "deleting an unreadable stored object without decoding it");
                match store.delete(&k, kv.mod_revision).await {
                    Ok(_) => return Ok(Outcome::Deleted(None)),
                    Err(e) => match lost(e) {
                        None => continue,
                        Some(status) => return Err(status),
                    },
                }
            }
            Err(e) => return Err(e),
        };
        let mut next = mutate(&current)?;
        if let Some(a) = &t.admit {
            let attrs = Attributes {
                operation: a.operation,
                resource: res,
                subresource: a.subresource,
                namespace: t.namespace,
                name,
                user: a.user,
                old: Some(&current),
            };
            if a.operation == Operation::Delete {
                a.chain.run(&attrs, &mut current.clone(), store).await?;
            } else {
                a.chain.run(&attrs, &mut next, store).await?;
            }
        }
        super::object::normalize(res, &mut next);
        if crate::api::lifecycle::ready_to_go(&next) {
            // deleted with nothing left to wait for, or the last finalizer went
            match store.delete(&k, kv.mod_revision).await {
                Ok(_) => {
                    super::kinds::of(res).release(store, &current).await;
                    return Ok(Outcome::Deleted(Some(current)));
                }
                Err(e) => match lost(e) {
                    None => continue,
                    Some(status) => return Err(status),
                },
            }
        }
        if unchanged(&current, &next) {
            // as upstream: a write that changes nothing is not written
            set_resource_version(&mut next, kv.mod_revision);
            return Ok(Outcome::Stored(next));
        }
        match store.update(&k, to_store(&next)?, kv.mod_revision).await {
            Ok(revision) => {
                set_resource_version(&mut next, revision);
                return Ok(Outcome::Stored(next));
            }
            Err(e) => match lost(e) {
                None => continue,
                Some(status) => return Err(status),
            },
        }
    }
    Err(conflict(res, name))
}

/// An update of a request, through its admission.
async fn admitted_update(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    subresource: &str,
    precondition: Option<Revision>,
    mutate: &(dyn Fn(&Value) -> Result<Value, ApiStatus> + Sync),
) -> Result<Value, ApiStatus> {
    let target = Target {
        res,
        namespace,
        name,
        precondition,
        admit: Some(Admit::update(w, subresource)),
        deleting: false,
    };
    update_loop(w.store, &target, mutate)
        .await?
        .object(res, name)
}

/// Writes to `<resource>/finalize` (namespaces' `spec.finalizers`).
pub(super) async fn finalize(
    w: &Writer<'_>,
    res: &Resource,
    name: &str,
    precondition: Option<Revision>,
    mutate: &(dyn Fn(&Value) -> Result<Value, ApiStatus> + Sync),
) -> Result<Value, ApiStatus> {
    admitted_update(w, res, None, name, "finalize", precondition, mutate).await
}

/// Whether two versions of an object are the same apart from `resourceVersion`.
fn unchanged(current: &Value, next: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(current) == strip(next)
}

/// Which fields writes to the main resource may own.
pub(super) fn scope_of(res: &Resource) -> Scope {
    if has_status(res) {
        Scope::NoStatus
    } else {
        Scope::All
    }
}

/// Whether writes to the main resource leave `status` alone (upstream: kinds with a
/// status subresource).
pub(super) fn has_status(res: &Resource) -> bool {
    res.subresources.iter().any(|s| s.name == "status")
}

/// The stored status, whatever the main resource's write sent (an object that had no
/// status keeps having none).
fn keep_status(next: &mut Value, cur: &Value) {
    match (cur.get("status"), next.as_object_mut()) {
        (Some(status), Some(obj)) => {
            obj.insert("status".into(), status.clone());
        }
        (None, Some(obj)) => {
            obj.remove("status");
        }
        _ => {}
    }
}

/// PUT of the whole object.
pub async fn update(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    obj: Value,
    actor: &Actor,
) -> Result<Value, ApiStatus> {
    let sent = sent_resource_version(&obj)?;
    admitted_update(w, res, namespace, name, "", sent, &|cur| {
        let mut next = prepare_update(res, obj.clone(), cur, namespace, name)?;
        if has_status(res) {
            keep_status(&mut next, cur);
        }
        managed::track_update(Some(cur), &mut next, actor, scope_of(res), &now_rfc3339());
        Ok(next)
    })
    .await
}

/// Applies a patch document of media type `media` to `target`. A patch can cost
/// CPU in proportion to the request (3 MiB), so on the multi-threaded runtime it runs
/// with `block_in_place`: the worker's other tasks move to another worker meanwhile.
pub fn apply_patch(target: &Value, media: &str, doc: &Value) -> Result<Value, ApiStatus> {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(|| patch_now(target, media, doc))
    } else {
        patch_now(target, media, doc)
    }
}

fn patch_now(target: &Value, media: &str, doc: &Value) -> Result<Value, ApiStatus> {
    match media {
        "application/json-patch+json" => json_patch(target, doc),
        "application/merge-patch+json" => {
            let mut out = target.clone();
            merge_patch(&mut out, doc);
            Ok(out)
        }
        _ => crate::api::strategic::apply(target, doc)
            .map_err(|e| PatchError::Malformed(e.to_string()))
            .and_then(|o| {
                o.ok_or_else(|| {
                    PatchError::Unapplicable("the patch deletes the whole object".into())
                })
            }),
    }
    .map_err(|e| match e {
        PatchError::Malformed(m) => ApiStatus::bad_request(m),
        PatchError::Unapplicable(m) => {
            ApiStatus::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m)
        }
        PatchError::TooLarge(m) => {
            ApiStatus::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", m)
        }
    })
}

fn decode_patch(body: &[u8]) -> Result<Value, ApiStatus> {
    serde_json::from_slice(body)
        .map_err(|e| ApiStatus::bad_request(format!("error decoding patch: {e}")))
}

/// PATCH of the main resource; `check` applies field validation to the result.
#[allow(clippy::too_many_arguments)]
pub async fn patch(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    media: &str,
    body: &[u8],
    check: &(dyn Fn(&Value) -> Result<Vec<String>, ApiStatus> + Sync),
    actor: &Actor,
) -> Result<(Value, Vec<String>), ApiStatus> {
    let doc = decode_patch(body)?;
    let warnings = std::sync::Mutex::new(Vec::new());
    let pinned = doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok());
    let out = admitted_update(w, res, namespace, name, "", pinned, &|cur| {
        let patched = apply_patch(cur, media, &doc)?;
        *warnings.lock().unwrap_or_else(|e| e.into_inner()) = check(&patched)?;
        let mut next = prepare_update(res, patched, cur, namespace, name)?;
        if has_status(res) {
            keep_status(&mut next, cur);
        }
        managed::track_update(Some(cur), &mut next, actor, scope_of(res), &now_rfc3339());
        Ok(next)
    })
    .await?;
    Ok((
        out,
        warnings.into_inner().unwrap_or_else(|e| e.into_inner()),
    ))
}

/// Writes to `<resource>/status`: only `status` changes (and metadata as upstream
/// allows); `body` is a whole object (PUT) or a patch (`media` set).
pub async fn status(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    media: Option<&str>,
    body: &[u8],
    actor: &Actor,
) -> Result<Value, ApiStatus> {
    let (doc, sent) = match media {
        Some(_) => (decode_patch(body)?, None),
        None => {
            let obj: Value = serde_json::from_slice(body).map_err(|e| {
                ApiStatus::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?;
            let sent = sent_resource_version(&obj)?;
            (obj, sent)
        }
    };
    admitted_update(w, res, namespace, name, "status", sent, &|cur| {
        let wanted = match media {
            Some(m) => apply_patch(cur, m, &doc)?,
            None => doc.clone(),
        };
        let mut next = cur.clone();
        next["status"] = wanted.get("status").cloned().unwrap_or(Value::Null);
        managed::track_update(
            Some(cur),
            &mut next,
            actor,
            Scope::StatusOnly,
            &now_rfc3339(),
        );
        Ok(next)
    })
    .await
}

/// The `autoscaling/v1` Scale of a scalable object.
pub fn scale_of(obj: &Value) -> Value {
    let labels = obj
        .pointer("/spec/selector/matchLabels")
        .or_else(|| {
            obj.pointer("/spec/selector")
                .filter(|s| s.get("matchLabels").is_none() && s.get("matchExpressions").is_none())
        })
        .and_then(Value::as_object)
        .map(|m| {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            parts.sort();
            parts.join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": labels},
    })
}

/// Writes to `<resource>/scale`: a Scale (PUT) or a patch of one; only
/// `spec.replicas` of the object changes.
pub async fn scale(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    media: Option<&str>,
    body: &[u8],
    actor: &Actor,
) -> Result<Value, ApiStatus> {
    let doc = decode_patch(body)?;
    let sent = match media {
        None => sent_resource_version(&doc)?,
        Some(_) => None,
    };
    let written = admitted_update(w, res, namespace, name, "scale", sent, &|cur| {
        let mut current_scale = scale_of(cur);
        if let Some(rv) = cur.pointer("/metadata/resourceVersion") {
            current_scale["metadata"]["resourceVersion"] = rv.clone();
        }
        let wanted = match media {
            Some(m) => apply_patch(&current_scale, m, &doc)?,
            None => doc.clone(),
        };
        let replicas = wanted.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        if replicas < 0 {
            return Err(ApiStatus::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut next = cur.clone();
        next["spec"]["replicas"] = json!(replicas);
        let generation = cur.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        if cur.pointer("/spec/replicas") != Some(&json!(replicas)) {
            next["metadata"]["generation"] = json!(generation + 1);
        }
        managed::track_update(Some(cur), &mut next, actor, scope_of(res), &now_rfc3339());
        Ok(next)
    })
    .await?;
    Ok(scale_of(&written))
}

/// Reads a server-side apply body (YAML or JSON): a partial object of `res`'s kind
/// named `name`, without `managedFields`.
fn decode_apply(res: &Resource, name: &str, body: &[u8]) -> Result<Value, ApiStatus> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiStatus::bad_request("the apply configuration is not UTF-8"))?;
    let mut config: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiStatus::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiStatus::bad_request(
            "the apply configuration must be an object with apiVersion, kind and metadata.name",
        ));
    }
    let short: String = text.chars().take(200).collect();
    for (field, want) in [
        ("apiVersion", res.group_version()),
        ("kind", res.kind.to_string()),
    ] {
        match config.get(field).and_then(Value::as_str) {
            None | Some("") => {
                let label = if field == "kind" {
                    "Kind"
                } else {
                    "apiVersion"
                };
                return Err(ApiStatus::bad_request(format!(
                    "Object '{label}' is missing in '{short}'"
                )));
            }
            Some(v) if v != want => {
                return Err(ApiStatus::bad_request(format!(
                    "the {field} of the applied object ({v}) does not match the {field} of the resource ({want})"
                )));
            }
            _ => {}
        }
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiStatus::bad_request("metadata.managedFields must be nil"));
    }
    if !config.get("metadata").is_some_and(Value::is_object) {
        config["metadata"] = json!({});
    }
    match config.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => Err(ApiStatus::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => {
            config["metadata"]["name"] = json!(name);
            Ok(config)
        }
    }
}

/// 409 for apply conflicts, with one `FieldManagerConflict` cause per field.
fn apply_conflict(conflicts: &[managed::Conflict]) -> ApiStatus {
    ApiStatus::new(
        StatusCode::CONFLICT,
        "Conflict",
        managed::conflict_message(conflicts),
    )
    .with_details(json!({
        "causes": conflicts.iter().map(|c| json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with {}", c.manager),
            "field": c.path,
        })).collect::<Vec<_>>(),
    }))
}

/// Server-side apply (`application/apply-patch+yaml`): creates the object if it does
/// not exist. Returns the object, warnings, and whether it was created.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    check: &(dyn Fn(&Value) -> Result<Vec<String>, ApiStatus> + Sync),
    actor: &Actor,
    force: bool,
) -> Result<(Value, Vec<String>, bool), ApiStatus> {
    let config = decode_apply(res, name, body)?;
    let warnings = check(&config)?;
    let pinned = sent_resource_version(&config)?;
    let scope = scope_of(res);
    let k = key(res, namespace, name);
    for _ in 0..WRITE_RETRIES {
        let exists = w.store.get(&k).await.map_err(store_error)?.kv.is_some();
        if !exists {
            let obj = managed::apply(None, &config, actor, force, scope, &now_rfc3339())
                .map_err(|c| apply_conflict(&c))?;
            match super::create(w, res, namespace, obj, None).await {
                Ok(created) => return Ok((created, warnings, true)),
                Err(s) if s.reason == "AlreadyExists" => continue,
                Err(s) => return Err(s),
            }
        }
        let written = admitted_update(w, res, namespace, name, "", pinned, &|cur| {
            let merged = managed::apply(Some(cur), &config, actor, force, scope, &now_rfc3339())
                .map_err(|c| apply_conflict(&c))?;
            let mut next = prepare_update(res, merged, cur, namespace, name)?;
            if has_status(res) {
                keep_status(&mut next, cur);
            }
            Ok(next)
        })
        .await;
        match written {
            Err(s) if s.code == StatusCode::NOT_FOUND => continue, // deleted meanwhile
            other => return other.map(|o| (o, warnings, false)),
        }
    }
    Err(conflict(res, name))
}
