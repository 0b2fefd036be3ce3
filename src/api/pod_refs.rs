//! What a pod refers to by name, as upstream's Node authorizer graph reads a pod
//! (`plugin/pkg/auth/authorizer/node/graph_populator.go` and
//! `pkg/api/v1/pod.VisitPodSecretNames` / `VisitPodConfigmapNames`): the objects a
//! node may read because a pod bound to it needs them.

use serde_json::Value;

/// A kind of object a pod can refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    ServiceAccount,
}

impl RefKind {
    /// The resource (plural) the kind is served as, in the core group.
    pub fn from_resource(resource: &str) -> Option<RefKind> {
        Some(match resource {
            "secrets" => RefKind::Secret,
            "configmaps" => RefKind::ConfigMap,
            "persistentvolumeclaims" => RefKind::PersistentVolumeClaim,
            "serviceaccounts" => RefKind::ServiceAccount,
            _ => return None,
        })
    }
}

/// Every object `pod` refers to, in its own namespace, without repeats.
pub fn pod_refs(pod: &Value) -> Vec<(RefKind, String)> {
    let mut out = Vec::new();
    let spec = &pod["spec"];
    let mut add = |kind: RefKind, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            out.push((kind, n.to_string()));
        }
    };
    let sa = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str());
    add(RefKind::ServiceAccount, sa);
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(RefKind::Secret, s["name"].as_str());
    }
    for c in containers(spec) {
        for from in c["envFrom"].as_array().into_iter().flatten() {
            add(RefKind::ConfigMap, from["configMapRef"]["name"].as_str());
            add(RefKind::Secret, from["secretRef"]["name"].as_str());
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let from = &e["valueFrom"];
            add(RefKind::ConfigMap, from["configMapKeyRef"]["name"].as_str());
            add(RefKind::Secret, from["secretKeyRef"]["name"].as_str());
        }
    }
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(RefKind::Secret, v["secret"]["secretName"].as_str());
        add(RefKind::ConfigMap, v["configMap"]["name"].as_str());
        add(
            RefKind::PersistentVolumeClaim,
            v["persistentVolumeClaim"]["claimName"].as_str(),
        );
        if v["ephemeral"].is_object() {
            // the PVC an ephemeral volume gets is named <pod>-<volume>
            let vol = v["name"].as_str().unwrap_or("");
            let claim = format!("{pod_name}-{vol}");
            add(
                RefKind::PersistentVolumeClaim,
                Some(claim.as_str()).filter(|_| !vol.is_empty()),
            );
        }
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(RefKind::Secret, src["secret"]["name"].as_str());
            add(RefKind::ConfigMap, src["configMap"]["name"].as_str());
        }
        // volume plugins that name a secret for their credentials
        for plugin in [
            "azureFile",
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
            "csi",
        ] {
            let p = &v[plugin];
            add(RefKind::Secret, p["secretName"].as_str());
            add(RefKind::Secret, p["secretRef"]["name"].as_str());
            add(RefKind::Secret, p["nodePublishSecretRef"]["name"].as_str());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Containers, init containers and ephemeral containers.
pub fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_place_a_pod_names_an_object_is_found() {
        let pod = json!({
            "metadata": {"name": "web"},
            "spec": {
                "serviceAccountName": "runner",
                "imagePullSecrets": [{"name": "pull"}],
                "initContainers": [{"envFrom": [{"configMapRef": {"name": "init-env"}}]}],
                "containers": [{"env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c-env", "key": "k"}}},
                    {"name": "C", "value": "plain"}
                ]}],
                "ephemeralContainers": [{"envFrom": [{"secretRef": {"name": "debug"}}]}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "s-vol"}},
                    {"name": "b", "configMap": {"name": "c-vol"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "ephemeral": {"volumeClaimTemplate": {}}},
                    {"name": "e", "projected": {"sources": [
                        {"secret": {"name": "s-proj"}}, {"configMap": {"name": "c-proj"}},
                        {"serviceAccountToken": {"path": "token"}}
                    ]}},
                    {"name": "f", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi"}}},
                    {"name": "g", "emptyDir": {}}
                ]
            }
        });
        let got = pod_refs(&pod);
        let names = |k: RefKind| -> Vec<&str> {
            got.iter()
                .filter(|(kind, _)| *kind == k)
                .map(|(_, n)| n.as_str())
                .collect()
        };
        assert_eq!(
            names(RefKind::Secret),
            ["csi", "debug", "pull", "s-env", "s-proj", "s-vol"]
        );
        assert_eq!(
            names(RefKind::ConfigMap),
            ["c-env", "c-proj", "c-vol", "init-env"]
        );
        assert_eq!(names(RefKind::PersistentVolumeClaim), ["data", "web-d"]);
        assert_eq!(names(RefKind::ServiceAccount), ["runner"]);
        assert!(pod_refs(&json!({})).is_empty());
    }
}
