//! Upstream's NodeRestriction admission plugin, for what a node writes: it registers
//! only itself, with labels a kubelet may set; on updates it keeps its taints, owner
//! references and restricted labels; it takes only its own Lease; it creates only
//! mirror pods bound to itself that refer to nothing secret.

use super::{Attributes, Operation, Plugin};
use crate::api::registry::Resource;
use crate::apiserver::auth::{UserInfo, node_of};
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::Store;
use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Map, Value};

pub struct NodeRestriction;

#[async_trait]
impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        _store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if !attrs.subresource.is_empty() {
            return Ok(()); // the Node authorizer decides a node's subresource writes
        }
        match (attrs.operation, attrs.old) {
            (Operation::Create, _) => on_create(attrs.user, attrs.resource, obj),
            (Operation::Update, Some(old)) => on_update(attrs.user, attrs.resource, old, obj),
            _ => Ok(()),
        }
    }
}

/// The annotation that marks a mirror pod (the API copy of a static pod).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn forbidden(res: &Resource, name: &str, message: String) -> ApiStatus {
    ApiStatus::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{} {name:?} is forbidden: {message}",
            qualified(res.plural, res.group)
        ),
    )
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Checks what a node creates (the name is in the body, so the authorizer cannot).
fn on_create(caller: &UserInfo, res: &Resource, obj: &Value) -> Result<(), ApiStatus> {
    let Some(node) = node_of(caller) else {
        return Ok(());
    };
    let name = name_of(obj);
    let refuse = |message: String| Err(forbidden(res, name, message));
    match (res.group, res.plural) {
        ("", "nodes") => {
            if name != node {
                return refuse(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
            let forbidden = forbidden_labels(labels.into_iter().flatten().map(|(k, _)| k));
            if !forbidden.is_empty() {
                return refuse(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                ));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") if name != node => {
            refuse("can only access node lease with the same name as the requesting node".into())
        }
        ("", "pods") => mirror_pod(node, obj).map_err(|m| forbidden(res, name, m.to_string())),
        _ => Ok(()),
    }
}

/// Why a node may not create a pod (upstream's NodeRestriction messages).
#[derive(Debug, thiserror::Error)]
enum MirrorRefusal {
    #[error(
        "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node {0:?} can only create mirror pods"
    )]
    NotMirror(String),
    #[error("node {0:?} can only create pods with spec.nodeName set to itself")]
    Elsewhere(String),
    #[error("node {0:?} can only create pods with an owner reference set to itself")]
    Owner(String),
    #[error("node {0:?} can not create pods that {1}")]
    Refers(String, &'static str),
}

/// Upstream's rules for a pod a node creates: only mirror pods, bound to itself,
/// owned by nothing but its own Node, referring to no service account, secret,
/// config map or claim.
fn mirror_pod(node: &str, pod: &Value) -> Result<(), MirrorRefusal> {
    let node_name = || node.to_string();
    let annotations = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    if !annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return Err(MirrorRefusal::NotMirror(node_name()));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(MirrorRefusal::Elsewhere(node_name()));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    if let Some(owners) = owners.filter(|o| !o.is_empty()) {
        let own_node = owners.len() == 1
            && owners[0]["apiVersion"] == "v1"
            && owners[0]["kind"] == "Node"
            && owners[0]["name"] == node;
        if !own_node {
            return Err(MirrorRefusal::Owner(node_name()));
        }
    }
    use crate::api::pod_refs::{RefKind, pod_refs};
    if let Some((kind, _)) = pod_refs(pod).into_iter().next() {
        let what = match kind {
            RefKind::ServiceAccount => "use service accounts",
            RefKind::Secret => "reference secrets",
            RefKind::ConfigMap => "reference configmaps",
            RefKind::PersistentVolumeClaim => "reference persistentvolumeclaims",
        };
        return Err(MirrorRefusal::Refers(node_name(), what));
    }
    Ok(())
}

/// Checks what a node changes in an object it may update: its own Node keeps its
/// taints, owner references and every label a kubelet may not set.
fn on_update(caller: &UserInfo, res: &Resource, old: &Value, new: &Value) -> Result<(), ApiStatus> {
    let Some(node) = node_of(caller) else {
        return Ok(());
    };
    if (res.group, res.plural) != ("", "nodes") {
        return Ok(());
    }
    let name = name_of(old);
    let refuse = |message: String| Err(forbidden(res, name, message));
    if old.pointer("/spec/taints").filter(|t| !is_empty(t))
        != new.pointer("/spec/taints").filter(|t| !is_empty(t))
    {
        return refuse(format!("node {node:?} is not allowed to modify taints"));
    }
    if old.pointer("/metadata/ownerReferences") != new.pointer("/metadata/ownerReferences") {
        return refuse(format!(
            "node {node:?} is not allowed to modify its own ownerReferences"
        ));
    }
    if old.pointer("/spec/configSource") != new.pointer("/spec/configSource") {
        return refuse(format!(
            "node {node:?} is not allowed to modify its own configSource"
        ));
    }
    let labels = |v: &Value| {
        v.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let forbidden = forbidden_labels(modified(&labels(old), &labels(new)).into_iter());
    if !forbidden.is_empty() {
        return refuse(format!(
            "is not allowed to modify labels: {}",
            forbidden.join(", ")
        ));
    }
    Ok(())
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(Vec::is_empty)
}

/// Keys added, removed or changed between two label maps.
fn modified<'a>(old: &'a Map<String, Value>, new: &'a Map<String, Value>) -> Vec<&'a String> {
    let mut keys: Vec<&String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(new.keys().filter(|k| !old.contains_key(*k)))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Labels a kubelet may set on its Node (upstream's `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];

/// Label namespaces a kubelet may set any label in.
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_namespace(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.ends_with(&format!(".{domain}"))
}

/// The labels among `keys` a node may not set on itself: any
/// `node-restriction.kubernetes.io` label, and `kubernetes.io` / `k8s.io` labels that
/// are not kubelet labels (so no `node-role.kubernetes.io/*`).
fn forbidden_labels<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = keys
        .filter(|key| {
            let Some((namespace, _)) = key.split_once('/') else {
                return false;
            };
            if in_namespace(namespace, "node-restriction.kubernetes.io") {
                return true;
            }
            let kubernetes =
                in_namespace(namespace, "kubernetes.io") || in_namespace(namespace, "k8s.io");
            let kubelet = KUBELET_LABELS.contains(&key.as_str())
                || KUBELET_LABEL_NAMESPACES
                    .iter()
                    .any(|d| in_namespace(namespace, d));
            kubernetes && !kubelet
        })
        .cloned()
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    fn res(plural: &str) -> &'static Resource {
        crate::api::registry::find("", "v1", plural).expect("core resource")
    }

    #[test]
    fn a_node_creates_only_mirror_pods_bound_to_itself_that_need_nothing_secret() {
        let n1 = node("n1");
        let pod = |extra: Value| {
            let mut p = json!({
                "metadata": {"name": "m", "annotations": {MIRROR_ANNOTATION: "x"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}
            });
            crate::api::patch::merge_patch(&mut p, &extra);
            p
        };
        assert!(on_create(&n1, res("pods"), &pod(json!({}))).is_ok());
        let refused = |p: Value, says: &str| {
            let e = on_create(&n1, res("pods"), &p).expect_err(says);
            assert_eq!(e.code, StatusCode::FORBIDDEN);
            assert!(e.message.contains(says), "{}", e.message);
        };
        refused(
            pod(json!({"metadata": {"annotations": {MIRROR_ANNOTATION: null}}})),
            "can only create mirror pods",
        );
        refused(
            pod(json!({"spec": {"nodeName": "server"}})),
            "spec.nodeName set to itself",
        );
        refused(
            pod(json!({"spec": {"serviceAccountName": "admin"}})),
            "use service accounts",
        );
        refused(
            pod(json!({"spec": {"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}})),
            "reference secrets",
        );
        refused(
            pod(
                json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n2"}]}}),
            ),
            "owner reference set to itself",
        );
        // anybody else: not this plugin's business
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        assert!(on_create(&admin, res("pods"), &json!({"spec": {}})).is_ok());
    }

    #[test]
    fn a_node_keeps_its_taints_and_restricted_labels() {
        let n1 = node("n1");
        let old = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
                         "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}});
        let with = |patch: Value| {
            let mut n = old.clone();
            crate::api::patch::merge_patch(&mut n, &patch);
            n
        };
        // what a kubelet does
        for ok in [
            json!({"metadata": {"labels": {"example.com/rack": "r1"}}}),
            json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": "true"}}}),
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "z"}}}),
            json!({"status": {"capacity": {"cpu": "2"}}}),
        ] {
            assert!(
                on_update(&n1, res("nodes"), &old, &with(ok.clone())).is_ok(),
                "{ok}"
            );
        }
        for (bad, says) in [
            (json!({"spec": {"taints": null}}), "modify taints"),
            (
                json!({"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}}),
                "modify taints",
            ),
            (
                json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "true"}}}),
                "modify labels: node-role.kubernetes.io/control-plane",
            ),
            (
                json!({"metadata": {"labels": {"node-restriction.kubernetes.io/trusted": "y"}}}),
                "modify labels: node-restriction.kubernetes.io/trusted",
            ),
            (
                json!({"metadata": {"labels": {"example.node-restriction.kubernetes.io/a": "y"}}}),
                "modify labels",
            ),
            (
                json!({"metadata": {"ownerReferences": [{"kind": "X"}]}}),
                "ownerReferences",
            ),
        ] {
            let e = on_update(&n1, res("nodes"), &old, &with(bad.clone())).expect_err("refused");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
        // removing a restricted label is modifying it too
        let labelled = with(
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "true"}}}),
        );
        assert!(on_update(&n1, res("nodes"), &labelled, &old).is_err());
        // registering: its own name, kubelet labels only
        assert!(on_create(&n1, res("nodes"), &old).is_ok());
        let e = on_create(&n1, res("nodes"), &labelled).expect_err("label");
        assert!(e.message.contains(
            "not allowed to set the following labels: node-role.kubernetes.io/control-plane"
        ));
        assert!(on_create(&n1, res("nodes"), &json!({"metadata": {"name": "n2"}})).is_err());
    }
}
