//! Endpoints and EndpointSlices for Services with a selector: the matching pods with
//! an IP, ready or not (from their Ready condition; `publishNotReadyAddresses` counts
//! them all ready), with each Service port resolved against the pod (named target
//! ports included). Services without a selector keep whatever Endpoints users write;
//! a deleted Service's Endpoints and slices go with it.
//!
//! Endpoints are written as upstream's endpoint-controller, slices as its
//! endpointslice-controller (each its own service account and role).

use super::Context;
use super::replicaset::ready;
use crate::api::selector::LabelSelector;
use crate::client::watch::object_path;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// `cx` writes Endpoints (upstream's endpoint-controller), `slicer` EndpointSlices
/// (its endpointslice-controller): two identities, as upstream's two controllers.
pub async fn run(cx: Arc<Context>, slicer: Arc<Context>) {
    let services = cx.informer(&crate::api::registry::SERVICES);
    let pods = cx.informer(&crate::api::registry::PODS);
    let endpoints = cx.informer(&crate::api::registry::ENDPOINTS);
    let slices = cx.informer(&crate::api::registry::ENDPOINTSLICES);
    let (mut a, mut b) = (services.subscribe(), pods.subscribe());
    for i in [&services, &pods, &endpoints, &slices] {
        i.synced().await;
    }
    loop {
        for svc in services.list(None) {
            if let Err(e) = sync(&cx, &slicer, &svc, &pods, &endpoints, &slices).await {
                tracing::debug!(service = %crate::client::watch::key_of(&svc), error = %e, "endpoints sync failed");
            }
        }
        // what belongs to services that are gone
        for ep in endpoints.list(None) {
            let key = crate::client::watch::key_of(&ep);
            if services.get(&key).is_none()
                && ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"].is_null()
            {
                let path = object_path(
                    endpoints.res,
                    ep["metadata"]["namespace"].as_str(),
                    ep["metadata"]["name"].as_str().unwrap_or(""),
                );
                let _ = cx.client.delete(&path, &json!({})).await;
            }
        }
        for s in slices.list(None) {
            let ns = s["metadata"]["namespace"].as_str().unwrap_or("");
            let Some(owner) = s["metadata"]["labels"][SERVICE_NAME].as_str() else {
                continue;
            };
            if s["metadata"]["labels"][MANAGED_BY] == "endpointslice-controller.k8s.io"
                && services.get(&format!("{ns}/{owner}")).is_none()
            {
                let path = object_path(
                    slices.res,
                    Some(ns),
                    s["metadata"]["name"].as_str().unwrap_or(""),
                );
                let _ = slicer.client.delete(&path, &json!({})).await;
            }
        }
        super::next_pass(&mut a, &mut b).await;
    }
}

/// Ready addresses, not-ready addresses, and the ports they share.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The port a Service port reaches on `pod`, if the pod has it.
fn resolve(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| {
                p["name"] == *name.as_str()
                    && p["protocol"].as_str().unwrap_or("TCP")
                        == port["protocol"].as_str().unwrap_or("TCP")
            })
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

async fn sync(
    cx: &Context,
    slicer: &Context,
    svc: &Value,
    pods: &crate::runtime::informer::Informer,
    endpoints: &crate::runtime::informer::Informer,
    slices: &crate::runtime::informer::Informer,
) -> Result<(), crate::client::ClientError> {
    let Some(selector) = svc["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    let Ok(selector) = LabelSelector::from_object(&json!({"matchLabels": selector})) else {
        return Ok(());
    };
    let ns = svc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let all_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    // addresses grouped by the ports they resolve to
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    let mut slice_endpoints = Vec::new();
    let mut slice_ports: Option<Vec<Value>> = None;
    // only now that the service selects pods: a scan of the namespace's pods per
    // selector-less service (`kubernetes`) is a waste in a namespace of thousands
    let pods = pods.list(Some(&ns));
    let mut matched: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| selector.matches(p["metadata"]["labels"].as_object()))
        .filter(|p| {
            p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .collect();
    matched.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
    for pod in matched {
        let resolved: Vec<Value> = ports
            .iter()
            .filter_map(|p| {
                resolve(p, pod).map(|n| {
                    let mut out =
                        json!({"port": n, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(pn) = p["name"].as_str().filter(|n| !n.is_empty()) {
                        out["name"] = json!(pn);
                    }
                    out
                })
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
        let is_ready = all_ready || (ready(pod) && !terminating);
        let ip = pod["status"]["podIP"].as_str().unwrap_or("").to_string();
        let target = json!({"kind": "Pod", "name": pod["metadata"]["name"], "namespace": ns, "uid": pod["metadata"]["uid"]});
        let mut address = json!({"ip": ip, "targetRef": target});
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            address["nodeName"] = json!(node);
        }
        if terminating && !all_ready {
            // upstream drops terminating pods from Endpoints (slices keep them)
        } else {
            let entry = subsets
                .entry(serde_json::to_string(&resolved).unwrap_or_default())
                .or_insert_with(|| (Vec::new(), Vec::new(), resolved.clone()));
            if is_ready {
                entry.0.push(address.clone());
            } else {
                entry.1.push(address.clone());
            }
        }
        let mut ep = json!({
            "addresses": [ip],
            "conditions": {"ready": is_ready, "serving": ready(pod) || all_ready, "terminating": terminating},
            "targetRef": target,
        });
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            ep["nodeName"] = json!(node);
        }
        // a pod's hostname names its endpoint only under the service its subdomain
        // names (upstream's rule: how StatefulSet pods get their DNS names)
        if let Some(h) = pod["spec"]["hostname"].as_str() {
            if pod["spec"]["subdomain"].as_str() == Some(name.as_str()) {
                ep["hostname"] = json!(h);
            }
        }
        slice_endpoints.push(ep);
        slice_ports.get_or_insert(resolved);
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(addresses, not_ready, ports)| {
            let mut s = json!({"ports": ports});
            if !addresses.is_empty() {
                s["addresses"] = json!(addresses);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    // Endpoints
    let key = format!("{ns}/{name}");
    let labels = svc["metadata"]["labels"].clone();
    match endpoints.get(&key) {
        None => {
            let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}});
            if labels.is_object() {
                ep["metadata"]["labels"] = labels.clone();
            }
            if !subsets.is_empty() {
                ep["subsets"] = json!(subsets);
            }
            match cx
                .client
                .create(&format!("/api/v1/namespaces/{ns}/endpoints"), &ep)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Some(cur) => {
            let have = cur["subsets"].as_array().cloned().unwrap_or_default();
            if have != subsets {
                let mut next = (*cur).clone();
                if subsets.is_empty() {
                    next.as_object_mut().map(|m| m.remove("subsets"));
                } else {
                    next["subsets"] = json!(subsets);
                }
                cx.client
                    .update(&object_path(endpoints.res, Some(&ns), &name), &next)
                    .await?;
            }
        }
    }
    // EndpointSlice (one per service here)
    let family = svc["spec"]["ipFamilies"][0].as_str().unwrap_or("IPv4");
    let slice_ports = slice_ports.unwrap_or_default();
    let existing = slices.list(Some(&ns)).into_iter().find(|s| {
        s["metadata"]["labels"][SERVICE_NAME] == *name.as_str()
            && s["metadata"]["labels"][MANAGED_BY] == "endpointslice-controller.k8s.io"
    });
    match existing {
        None => {
            let mut slice_labels = if labels.is_object() {
                labels.clone()
            } else {
                json!({})
            };
            slice_labels[SERVICE_NAME] = json!(name);
            slice_labels[MANAGED_BY] = json!("endpointslice-controller.k8s.io");
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": slice_labels,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
                "addressType": family,
                "endpoints": slice_endpoints,
                "ports": slice_ports,
            });
            slicer
                .client
                .create(
                    &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
                    &slice,
                )
                .await?;
        }
        Some(cur) => {
            if cur["endpoints"].as_array().cloned().unwrap_or_default() != slice_endpoints
                || cur["ports"].as_array().cloned().unwrap_or_default() != slice_ports
            {
                let mut next = (*cur).clone();
                next["endpoints"] = json!(slice_endpoints);
                next["ports"] = json!(slice_ports);
                let path = object_path(
                    slices.res,
                    Some(&ns),
                    cur["metadata"]["name"].as_str().unwrap_or(""),
                );
                slicer.client.update(&path, &next).await?;
            }
        }
    }
    Ok(())
}
