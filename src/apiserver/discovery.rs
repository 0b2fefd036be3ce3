//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, and aggregated
//! discovery (`apidiscovery.k8s.io` v2 and v2beta1) when the Accept header asks for it.

use super::registry::Registry;
use super::status::{Body, json, json_typed};
use crate::api::registry::Resource;
use http::{Response, StatusCode};
use serde_json::{Value, json};

/// Which aggregated-discovery version the client accepts, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let wants = |v: &str| {
        accept.split(',').any(|part| {
            let params: Vec<&str> = part.split(';').map(str::trim).collect();
            params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&format!("v={v}").as_str())
                && params.contains(&"as=APIGroupDiscoveryList")
        })
    };
    if wants("v2") {
        Some("v2")
    } else if wants("v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

fn resource_entries(r: &Resource) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        main["categories"] = json!(r.categories);
    }
    let mut out = vec![main];
    for s in r.subresources {
        let mut entry = json!({
            "name": format!("{}/{}", r.plural, s.name),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": s.response.2,
            "verbs": s.verbs,
        });
        if (s.response.0, s.response.1) != (r.group, r.version) {
            entry["group"] = json!(s.response.0);
            entry["version"] = json!(s.response.1);
        }
        out.push(entry);
    }
    out
}

/// `APIResourceList` of one group version.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Response<Body>> {
    let resources: Vec<Value> = reg
        .resources_of(group, version)
        .into_iter()
        .flat_map(resource_entries)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let versions: Vec<Value> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

/// `/apis/<group>`.
pub fn group(reg: &Registry, group: &str) -> Option<Response<Body>> {
    let mut g = api_group(reg, group)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(json(StatusCode::OK, &g))
}

/// `/api` (legacy core group) or its aggregated form.
pub fn core(reg: &Registry, aggregated: Option<&str>, server_address: &str) -> Response<Body> {
    match aggregated {
        Some(v) => aggregated_list(reg, v, &[("", "v1")]),
        None => json(
            StatusCode::OK,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
            }),
        ),
    }
}

/// `/apis` or its aggregated form.
pub fn groups(reg: &Registry, aggregated: Option<&str>) -> Response<Body> {
    let gvs = reg.group_versions();
    match aggregated {
        Some(v) => aggregated_list(reg, v, &gvs),
        None => {
            let mut names: Vec<&str> = Vec::new();
            for (g, _) in &gvs {
                if !names.contains(g) {
                    names.push(g);
                }
            }
            let groups: Vec<Value> = names.iter().filter_map(|g| api_group(reg, g)).collect();
            json(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
    }
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut out = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        out["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        out["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        out["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.response.0, "version": s.response.1, "kind": s.response.2},
                    "verbs": s.verbs,
                })
            })
            .collect();
    }
    out
}

fn aggregated_list(reg: &Registry, version: &str, gvs: &[(&str, &str)]) -> Response<Body> {
    let mut items: Vec<Value> = Vec::new();
    for (g, v) in gvs {
        let entry = json!({
            "version": v,
            "resources": reg.resources_of(g, v).into_iter().map(aggregated_resource).collect::<Vec<_>>(),
            "freshness": "Current",
        });
        match items.iter_mut().find(|i| i["metadata"]["name"] == *g) {
            Some(item) => item["versions"]
                .as_array_mut()
                .map(|vs| vs.push(entry))
                .unwrap_or(()),
            None => items.push(json!({
                "metadata": if g.is_empty() { json!({}) } else { json!({"name": g}) },
                "versions": [entry],
            })),
        }
    }
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    json_typed(
        StatusCode::OK,
        &json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{version}"),
            "metadata": {},
            "items": items,
        }),
        &content_type,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_is_negotiated_from_accept() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(kubectl), Some("v2"));
        assert_eq!(
            aggregated_version(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList, application/json"
            ),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json, */*"), None);
    }
}
