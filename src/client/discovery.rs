//! Discovery through the API, as client-go's `ServerPreferredNamespacedResources`:
//! what a component that must act on every kind (the namespace deleter, the garbage
//! collector) asks instead of a compiled-in table, so resources added at run time
//! (CustomResourceDefinitions) are included.

use super::{ApiClient, ClientError};
use serde_json::Value;

/// A resource as discovery describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResource {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ApiResource {
    /// The collection path (of one namespace, for a namespaced resource).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        super::watch::path_of(
            &self.group,
            &self.version,
            &self.plural,
            self.namespaced,
            namespace,
        )
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The resources of one `APIResourceList` (subresources left out).
fn resources_of(list: &Value, group: &str, version: &str) -> Vec<ApiResource> {
    list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let plural = r["name"].as_str()?;
            if plural.contains('/') {
                return None;
            }
            Some(ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                plural: plural.to_string(),
                kind: r["kind"].as_str().unwrap_or_default().to_string(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
                verbs: r["verbs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// Every resource at its group's preferred version.
pub async fn preferred_resources(client: &ApiClient) -> Result<Vec<ApiResource>, ClientError> {
    let mut out = resources_of(&client.get("/api/v1").await?, "", "v1");
    let groups = client.get("/apis").await?;
    for g in groups["groups"].as_array().into_iter().flatten() {
        let (Some(name), Some(version)) = (
            g["name"].as_str(),
            g["preferredVersion"]["version"].as_str(),
        ) else {
            continue;
        };
        match client.get(&format!("/apis/{name}/{version}")).await {
            Ok(list) => out.extend(resources_of(&list, name, version)),
            // a group removed between the two calls
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::scripted::{Answer, Scripted};
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test]
    async fn preferred_versions_only_and_no_subresources() {
        let t = Arc::new(Scripted::new(vec![
            Answer::ok(json!({"resources": [
                {"name": "pods", "kind": "Pod", "namespaced": true, "verbs": ["list", "deletecollection"]},
                {"name": "pods/status", "kind": "Pod", "namespaced": true, "verbs": ["get"]},
                {"name": "nodes", "kind": "Node", "namespaced": false, "verbs": ["list"]},
            ]})),
            Answer::ok(json!({"groups": [
                {"name": "autoscaling", "preferredVersion": {"version": "v2"},
                 "versions": [{"version": "v2"}, {"version": "v1"}]},
                {"name": "gone.example.com", "preferredVersion": {"version": "v1"}},
            ]})),
            Answer::ok(json!({"resources": [
                {"name": "horizontalpodautoscalers", "kind": "HorizontalPodAutoscaler", "namespaced": true, "verbs": ["list"]},
            ]})),
            Answer::status(404, "NotFound"),
        ]));
        let client = ApiClient::new(t.clone(), "test");
        let all = preferred_resources(&client).await.unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|r| format!("{}/{}/{}", r.group, r.version, r.plural))
            .collect();
        assert_eq!(
            names,
            [
                "/v1/pods",
                "/v1/nodes",
                "autoscaling/v2/horizontalpodautoscalers"
            ]
        );
        assert_eq!(
            all[0].collection_path(Some("ns")),
            "/api/v1/namespaces/ns/pods"
        );
        assert_eq!(all[1].collection_path(Some("ns")), "/api/v1/nodes");
        assert!(all[0].has_verb("deletecollection") && !all[1].has_verb("deletecollection"));
        assert_eq!(t.asked()[2], "/apis/autoscaling/v2");
    }
}
