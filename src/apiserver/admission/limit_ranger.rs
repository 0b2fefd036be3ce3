//! Upstream's LimitRanger plugin, for pods created: the namespace's LimitRanges set
//! defaults (mutating phase; the pod is annotated with what was set) and bound what
//! the pod asks for (validating phase).

use super::{Attributes, Operation, Plugin};
use crate::api::quota;
use crate::apiserver::resources::object::{from_store, prefix};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::{ListOptions, Store};
use async_trait::async_trait;
use serde_json::{Value, json};

pub struct LimitRanger;

/// The LimitRanges of the namespace a pod is created in (none for other requests).
async fn ranges(attrs: &Attributes<'_>, store: &dyn Store) -> Result<Vec<Value>, ApiStatus> {
    let (Operation::Create, Some(ns)) = (attrs.operation, attrs.namespace) else {
        return Ok(Vec::new());
    };
    if !attrs.is("", "pods") {
        return Ok(Vec::new());
    }
    let listed = store
        .list(
            &prefix(&crate::api::registry::LIMITRANGES, Some(ns)),
            ListOptions::default(),
        )
        .await
        .map_err(store_error)?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| from_store(kv).ok())
        .collect())
}

#[async_trait]
impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        pod: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let ranges = ranges(attrs, store).await?;
        if !ranges.is_empty() {
            if let Some(said) = quota::apply_defaults(pod, &ranges) {
                pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] = json!(said);
            }
        }
        Ok(())
    }

    async fn validate(
        &self,
        attrs: &Attributes<'_>,
        pod: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        let ranges = ranges(attrs, store).await?;
        let wrong = quota::violations(pod, &ranges);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(attrs.forbidden(quota::aggregate(&wrong)))
        }
    }
}
