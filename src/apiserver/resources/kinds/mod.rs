//! Per-kind behaviour of the generic verbs, as upstream's registry strategies: what a
//! create or update prepares, how an object is validated, what status it starts
//! with, how it is deleted, what it holds outside its own key (a Service's cluster
//! IPs and node ports) and what fields it can be selected by. The verbs in
//! `resources` ask the kind's [`Strategy`]; they never name a kind.

mod custom;
mod job;
mod namespace;
mod node;
mod pod;
mod service;

use super::allocate::ServiceRanges;
use crate::api::registry::Resource;
use crate::api::validation::Cause;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use async_trait::async_trait;
use serde_json::{Value, json};

/// One kind's behaviour. Every method defaults to what a plain kind does.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// The fields besides `metadata.name` and `metadata.namespace` that lists and
    /// watches can select by (upstream's field label conversions).
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Upstream's `PrepareForCreate`: after metadata and defaulting, before
    /// admission and validation.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// The status a new object of a kind with a status subresource starts with
    /// (what the client sent is dropped: controllers write it); `None`: no status.
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({}))
    }

    /// Upstream's `PrepareForUpdate` for writes to the main resource: keeps what
    /// they may not change.
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// Validation of a new object (`old` absent) or of an update.
    fn validate(&self, res: &Resource, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        crate::api::validation::validate(res.kind, obj, old)
    }

    /// The grace period a deletion with `options` gets (upstream's
    /// `CheckGracefulDelete`): 0 deletes at once.
    fn grace_period(&self, _obj: &Value, _options: &Value) -> i64 {
        0
    }

    /// What an object whose deletion is pending shows.
    fn on_terminating(&self, _obj: &mut Value) {}

    /// Takes what the object holds outside its own key, just before it is stored.
    async fn reserve(
        &self,
        _store: &dyn Store,
        _ranges: Option<&ServiceRanges>,
        _obj: &mut Value,
    ) -> Result<(), ApiStatus> {
        Ok(())
    }

    /// Gives back what [`Strategy::reserve`] took: after a failed create, and after
    /// the object is deleted.
    async fn release(&self, _store: &dyn Store, _obj: &Value) {}
}

/// A kind with no behaviour of its own.
struct Plain;
impl Strategy for Plain {}

/// A kind that only adds selectable fields.
struct Fields(&'static [&'static str]);
impl Strategy for Fields {
    fn selectable_fields(&self) -> &'static [&'static str] {
        self.0
    }
}

const EVENT_FIELDS: Fields = Fields(&[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
]);

/// The strategy of a resource: the registration of each kind's behaviour.
pub fn of(res: &Resource) -> &'static dyn Strategy {
    match (res.group, res.plural) {
        ("", "pods") => &pod::Pod,
        ("", "services") => &service::Service,
        ("", "namespaces") => &namespace::Namespace,
        ("batch", "jobs") => &job::Job,
        ("", "events") | ("events.k8s.io", "events") => &EVENT_FIELDS,
        ("", "secrets") => &Fields(&["type"]),
        ("", "nodes") => &node::Node,
        ("", "replicationcontrollers") | ("apps", "replicasets") => &Fields(&["status.replicas"]),
        _ if crate::api::registry::find(res.group, res.version, res.plural).is_none() => {
            &custom::CustomResource
        }
        _ => &Plain,
    }
}

/// Every field a list of `res` can be selected by.
pub fn selectable_fields(res: &Resource) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name", "metadata.namespace"];
    fields.extend(of(res).selectable_fields());
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry;

    #[test]
    fn each_kind_selects_by_upstreams_fields() {
        let pods = selectable_fields(&registry::PODS);
        assert!(pods.contains(&"spec.nodeName") && pods.contains(&"metadata.name"));
        assert_eq!(
            selectable_fields(&registry::CONFIGMAPS),
            ["metadata.name", "metadata.namespace"]
        );
        assert!(selectable_fields(&registry::EVENTS).contains(&"involvedObject.uid"));
        assert!(selectable_fields(&registry::REPLICASETS).contains(&"status.replicas"));
    }

    #[test]
    fn deletion_is_graceful_only_for_pods_a_node_runs() {
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 7}});
        let pods = of(&registry::PODS);
        assert_eq!(pods.grace_period(&bound, &json!({})), 7);
        assert_eq!(
            pods.grace_period(&bound, &json!({"gracePeriodSeconds": 0})),
            0
        );
        assert_eq!(pods.grace_period(&json!({"spec": {}}), &json!({})), 0);
        assert_eq!(
            of(&registry::CONFIGMAPS).grace_period(&bound, &json!({})),
            0
        );
    }

    #[test]
    fn a_node_is_registered_with_its_status() {
        let node = of(&registry::NODES);
        let sent = json!({"spec": {"configSource": {"x": 1}},
            "status": {"nodeInfo": {"kubeletVersion": "v1"}, "config": {"active": {}}}});
        let mut created = sent.clone();
        node.prepare_for_create(&mut created);
        assert!(created["spec"].get("configSource").is_none());
        let status = node.initial_status(&created).unwrap();
        assert_eq!(status["nodeInfo"]["kubeletVersion"], "v1");
        assert!(status.get("config").is_none());
        assert_eq!(node.initial_status(&json!({})), Some(json!({})));
        // other kinds start empty: their controllers write status
        assert_eq!(
            of(&registry::DEPLOYMENTS).initial_status(&sent),
            Some(json!({}))
        );
    }

    #[test]
    fn a_namespace_keeps_its_spec_and_status_on_update() {
        let ns = of(&registry::NAMESPACES);
        let mut created = json!({"metadata": {"name": "a"}});
        ns.prepare_for_create(&mut created);
        assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(
            created["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "a"
        );
        assert_eq!(ns.initial_status(&created).unwrap()["phase"], "Active");
        let old = json!({"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let mut new = json!({"spec": {"finalizers": []}, "status": {"phase": "Terminating"}});
        ns.prepare_for_update(&mut new, &old);
        assert_eq!(new, old);
        let mut terminating = old.clone();
        ns.on_terminating(&mut terminating);
        assert_eq!(terminating["status"]["phase"], "Terminating");
    }
}
