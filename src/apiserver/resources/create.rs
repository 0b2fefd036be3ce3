//! The create verb, in upstream's order: metadata and defaults, the admission
//! chain's mutating phase, the kind's `PrepareForCreate` and initial status (what a
//! client sent as status is dropped before quota sees it), validation, the validating
//! phase, reservations held outside the object's key (a Service's addresses), and
//! the store's create-if-absent.

use super::kinds;
use super::object::{self, key, prepare_create, to_store};
use super::{Writer, store_error};
use crate::api::managed::Actor;
use crate::api::registry::Resource;
use crate::apiserver::admission::{Attributes, Operation};
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::StoreError;
use http::StatusCode;
use serde_json::{Value, json};

/// Creates an object (the create verb, server-side apply of a new object, and the
/// server's own bootstrap objects).
pub async fn create(
    w: &Writer<'_>,
    res: &Resource,
    namespace: Option<&str>,
    obj: Value,
    actor: Option<&Actor>,
) -> Result<Value, ApiStatus> {
    let strategy = kinds::of(res);
    // admission names an object by what the client sent: its name, or generateName
    let shown = ["name", "generateName"]
        .iter()
        .find_map(|k| obj["metadata"][*k].as_str().filter(|n| !n.is_empty()))
        .unwrap_or("")
        .to_string();
    let (mut obj, name) = prepare_create(res, obj, namespace)?;
    let attrs = Attributes {
        operation: Operation::Create,
        resource: res,
        subresource: "",
        namespace,
        name: &shown,
        user: w.user,
        old: None,
    };
    w.admission.admit(&attrs, &mut obj, w.store).await?;
    strategy.prepare_for_create(&mut obj);
    if super::write::has_status(res) {
        // status is written by controllers through <resource>/status, as upstream
        match (strategy.initial_status(&obj), obj.as_object_mut()) {
            (Some(status), Some(o)) => {
                o.insert("status".into(), status);
            }
            (None, Some(o)) => {
                o.remove("status");
            }
            _ => {}
        }
    }
    object::check_values(res, &name, &strategy.validate(res, &obj, None))?;
    w.admission.validate(&attrs, &obj, w.store).await?;
    if let Some(actor) = actor {
        crate::api::managed::track_update(
            None,
            &mut obj,
            actor,
            super::write::scope_of(res),
            &crate::api::meta::now_rfc3339(),
        );
    }
    strategy.reserve(w.store, w.ranges, &mut obj).await?;
    object::normalize(res, &mut obj);
    let created = match to_store(&obj) {
        Ok(bytes) => w.store.create(&key(res, namespace, &name), bytes).await,
        Err(e) => {
            strategy.release(w.store, &obj).await;
            return Err(e);
        }
    };
    if created.is_err() {
        strategy.release(w.store, &obj).await;
    }
    match created {
        Ok(revision) => {
            object::set_resource_version(&mut obj, revision);
            Ok(obj)
        }
        Err(StoreError::AlreadyExists { .. }) => Err(ApiStatus::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                qualified(res.plural, res.group)
            ),
        )
        .with_details(json!({"name": name, "group": res.group, "kind": res.plural}))),
        Err(e) => Err(store_error(e)),
    }
}
