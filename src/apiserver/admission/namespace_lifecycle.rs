//! Upstream's NamespaceLifecycle plugin: nothing is created in a namespace that does
//! not exist (404) or is being terminated (403), and the namespaces every cluster
//! needs (`default`, `kube-system`, `kube-public`) cannot be deleted.

use super::{Attributes, Operation, Plugin};
use crate::apiserver::resources::object::{from_store, key};
use crate::apiserver::resources::store_error;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use async_trait::async_trait;
use serde_json::Value;

/// Namespaces that may not be deleted.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle;

#[async_trait]
impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        _obj: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if attrs.operation == Operation::Delete
            && attrs.is("", "namespaces")
            && IMMORTAL.contains(&attrs.name)
        {
            return Err(attrs.forbidden("this namespace may not be deleted"));
        }
        let (Operation::Create, Some(ns)) = (attrs.operation, attrs.namespace) else {
            return Ok(()); // deletes always pass; the other verbs find no object
        };
        if attrs.resource.group == "authorization.k8s.io" {
            return Ok(()); // access reviews must not tell whether a namespace exists
        }
        let found = store
            .get(&key(&crate::api::registry::NAMESPACES, None, ns))
            .await
            .map_err(store_error)?;
        let namespace = found
            .kv
            .ok_or_else(|| ApiStatus::not_found("", "namespaces", ns))?;
        let namespace = from_store(&namespace)?;
        if namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(attrs.forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }
}
