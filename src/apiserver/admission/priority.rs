//! Upstream's Priority admission plugin, for pods created.

use super::{Attributes, Operation, Plugin};
use crate::apiserver::resources::object::{from_store, key, prefix};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::{ListOptions, Store};
use async_trait::async_trait;
use serde_json::{Value, json};

pub struct Priority;

#[async_trait]
impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        pod: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if attrs.operation != Operation::Create || !attrs.is("", "pods") {
            return Ok(());
        }
        prioritise(store, pod)
            .await?
            .map_err(|m| attrs.forbidden(m))
    }
}

/// Upstream's Priority admission: `spec.priority` (and `preemptionPolicy`) from the
/// pod's PriorityClass, or the global default class, or 0.
/// The outer error is the store's; the inner one is the refusal.
async fn prioritise(store: &dyn Store, pod: &mut Value) -> Result<Result<(), String>, ApiStatus> {
    let res = &crate::api::registry::PRIORITYCLASSES;
    let wanted = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let class: Option<Value> = match &wanted {
        Some(name) => {
            let got = store
                .get(&key(res, None, name))
                .await
                .map_err(store_error)?;
            match got.kv {
                Some(kv) => Some(from_store(&kv)?),
                None => return Ok(Err(format!("no PriorityClass with name {name} was found"))),
            }
        }
        // the global default class, if there is one (the lowest, if several)
        None => store
            .list(&prefix(res, None), ListOptions::default())
            .await
            .map_err(store_error)?
            .kvs
            .iter()
            .filter_map(|kv| from_store(kv).ok())
            .filter(|c| c["globalDefault"] == true)
            .min_by_key(|c| c["value"].as_i64().unwrap_or(0)),
    };
    let value = class
        .as_ref()
        .and_then(|c| c["value"].as_i64())
        .unwrap_or(0);
    if let Some(given) = pod["spec"]["priority"].as_i64() {
        if given != value {
            return Ok(Err(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    pod["spec"]["priority"] = json!(value);
    if let Some(c) = &class {
        if wanted.is_none() {
            pod["spec"]["priorityClassName"] = c["metadata"]["name"].clone();
        }
        if let Some(policy) = c["preemptionPolicy"].as_str() {
            pod["spec"]["preemptionPolicy"] = json!(policy);
        }
    }
    Ok(Ok(()))
}
