//! The objects every cluster starts with: the system namespaces, upstream's two
//! system PriorityClasses, and the `kubernetes` Service with its endpoints.

use super::object::key;
use super::{Writer, create, store_error, write};
use crate::api::managed::{Actor, Operation};
use crate::apiserver::admission::Chain;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use http::StatusCode;
use serde_json::json;

/// The namespaces every cluster starts with.
pub async fn bootstrap(store: &dyn Store) -> Result<(), ApiStatus> {
    let (chain, user) = (Chain::builtin(), UserInfo::apiserver());
    let w = Writer {
        store,
        ranges: None,
        admission: &chain,
        user: &user,
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        match create(
            &w,
            &crate::api::registry::NAMESPACES,
            None,
            json!({"metadata": {"name": ns}}),
            Some(&Actor {
                manager: "skua".into(),
                operation: Operation::Update,
                subresource: String::new(),
                api_version: "v1".into(),
            }),
        )
        .await
        {
            Ok(_) => tracing::info!(namespace = ns, "created namespace"),
            Err(s) if s.reason == "AlreadyExists" => {}
            Err(s) => return Err(s),
        }
    }
    // upstream's two system priority classes (k3s manifests name them)
    let classes = &crate::api::registry::PRIORITYCLASSES;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        let class = json!({"metadata": {"name": name}, "value": value, "description": description,
                           "preemptionPolicy": "PreemptLowerPriority"});
        match create(&w, classes, None, class, None).await {
            Ok(_) => tracing::info!(priority_class = name, "created priority class"),
            Err(s) if s.reason == "AlreadyExists" => {}
            Err(s) => return Err(s),
        }
    }
    Ok(())
}

/// Who writes the bootstrap objects (their managedFields say "skua").
fn system_actor() -> Actor {
    Actor {
        manager: "skua".into(),
        operation: Operation::Update,
        subresource: String::new(),
        api_version: "v1".into(),
    }
}

/// The `kubernetes` Service in `default` (the first service IP, port 443) and its
/// Endpoints and EndpointSlice, pointing at this API server (as kube-apiserver keeps
/// them).
pub async fn bootstrap_kubernetes_service(
    store: &dyn Store,
    ranges: &super::allocate::ServiceRanges,
    endpoint: std::net::IpAddr,
    port: u16,
) -> Result<(), ApiStatus> {
    let actor = system_actor();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ranges.first().to_string(), "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    let family = if endpoint.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": endpoint.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "skua"}},
        "addressType": family,
        "endpoints": [{"addresses": [endpoint.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (res, obj) in [
        (&crate::api::registry::SERVICES, service),
        (&crate::api::registry::ENDPOINTS, endpoints),
        (&crate::api::registry::ENDPOINTSLICES, slice),
    ] {
        let exists = store
            .get(&key(res, Some("default"), "kubernetes"))
            .await
            .map_err(store_error)?
            .kv
            .is_some();
        let made = if exists {
            Err(ApiStatus::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                "exists",
            ))
        } else {
            create(
                &Writer {
                    store,
                    ranges: Some(ranges),
                    admission: &Chain::builtin(),
                    user: &UserInfo::apiserver(),
                },
                res,
                Some("default"),
                obj.clone(),
                Some(&actor),
            )
            .await
        };
        match made {
            Ok(_) => {}
            Err(s) if s.reason == "AlreadyExists" && res.kind != "Service" => {
                // the address or port may have changed since the last start
                let fresh = obj.clone();
                write::guaranteed_update(store, res, Some("default"), "kubernetes", None, &|cur| {
                    let mut next = cur.clone();
                    for f in ["subsets", "endpoints", "ports", "addressType"] {
                        if let Some(v) = fresh.get(f) {
                            next[f] = v.clone();
                        }
                    }
                    Ok(next)
                })
                .await?;
            }
            Err(s) if s.reason == "AlreadyExists" => {}
            Err(s) => return Err(s),
        }
    }
    Ok(())
}

/// The `kube-dns` Service in `kube-system` on the cluster DNS address (as k3s ships
/// it), so that address is held in the service range and `kubectl get svc -n
/// kube-system` shows it. No selector: every node's agent answers it itself.
pub async fn bootstrap_dns_service(
    store: &dyn Store,
    ranges: &super::allocate::ServiceRanges,
    cluster_dns: std::net::IpAddr,
) -> Result<(), ApiStatus> {
    let actor = system_actor();
    let res = &crate::api::registry::SERVICES;
    if store
        .get(&key(res, Some("kube-system"), "kube-dns"))
        .await
        .map_err(store_error)?
        .kv
        .is_some()
    {
        return Ok(());
    }
    let family = if cluster_dns.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "skua-dns"}},
        "spec": {"clusterIP": cluster_dns.to_string(), "clusterIPs": [cluster_dns.to_string()],
                 "ipFamilies": [family], "ipFamilyPolicy": "SingleStack",
                 "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    });
    let (chain, user) = (Chain::builtin(), UserInfo::apiserver());
    let w = Writer {
        store,
        ranges: Some(ranges),
        admission: &chain,
        user: &user,
    };
    match create(&w, res, Some("kube-system"), service, Some(&actor)).await {
        Ok(_) => Ok(()),
        Err(s) if s.reason == "AlreadyExists" => Ok(()),
        Err(s) => Err(s),
    }
}
