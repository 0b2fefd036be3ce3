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
        prioritise(store, pod).await.map_err(|e| match e {
            Refusal::Store(status) => status,
            refusal => attrs.forbidden(refusal.to_string()),
        })
    }
}

/// Why a pod's priority cannot be set (upstream's messages; a 403).
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The store did not answer (its own status, passed on).
    #[error("{}", .0.message)]
    Store(ApiStatus),
    /// The pod names a PriorityClass that does not exist.
    #[error("no PriorityClass with name {0} was found")]
    NoClass(String),
    /// The pod gives a priority other than its class's.
    #[error(
        "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
    )]
    Given { given: i64, computed: i64 },
}

impl From<ApiStatus> for Refusal {
    fn from(status: ApiStatus) -> Refusal {
        Refusal::Store(status)
    }
}

/// Upstream's Priority admission: `spec.priority` (and `preemptionPolicy`) from the
/// pod's PriorityClass, or the global default class, or 0.
async fn prioritise(store: &dyn Store, pod: &mut Value) -> Result<(), Refusal> {
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
                None => return Err(Refusal::NoClass(name.clone())),
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
            return Err(Refusal::Given {
                given,
                computed: value,
            });
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
    Ok(())
}
