//! Every namespace has a `default` ServiceAccount (upstream's service account
//! controller) and the `kube-root-ca.crt` ConfigMap with the cluster's CA (upstream's
//! root CA publisher, which pods' service account volumes read): created with the
//! namespace, and again if someone deletes or changes them.

use super::Context;
use serde_json::json;
use std::sync::Arc;

const ROOT_CA: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Creates or corrects `kube-root-ca.crt` in namespace `ns`.
async fn publish_root_ca(cx: &Context, ns: &str, current: Option<&serde_json::Value>, ca: &str) {
    if current.is_some_and(|cm| cm["data"]["ca.crt"] == ca) {
        return;
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA, "namespace": ns, "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
        "data": {"ca.crt": ca}});
    let outcome = match current {
        None => {
            cx.client
                .create(&format!("/api/v1/namespaces/{ns}/configmaps"), &cm)
                .await
        }
        Some(_) => {
            cx.client
                .patch(
                    &format!("/api/v1/namespaces/{ns}/configmaps/{ROOT_CA}"),
                    &json!({"data": {"ca.crt": ca}}),
                )
                .await
        }
    };
    if let Err(e) = outcome {
        if !(e.is_already_exists() || e.code() == 403 || e.is_not_found()) {
            tracing::debug!(namespace = ns, error = %e, "could not publish the root CA");
        }
    }
}

/// `cx` creates the accounts (upstream's service-account-controller), `publisher`
/// the ConfigMaps (its root-ca-cert-publisher).
pub async fn run(cx: Arc<Context>, publisher: Arc<Context>, root_ca: String) {
    let namespaces = cx.informer(&crate::api::registry::NAMESPACES);
    let accounts = cx.informer(&crate::api::registry::SERVICEACCOUNTS);
    // only the published ConfigMaps, not every ConfigMap of the cluster
    let configmaps = cx.selected_informer(
        &crate::api::registry::CONFIGMAPS,
        format!("metadata.name={ROOT_CA}"),
    );
    let mut c = configmaps.subscribe();
    configmaps.synced().await;
    let (mut a, mut b) = (namespaces.subscribe(), accounts.subscribe());
    namespaces.synced().await;
    accounts.synced().await;
    loop {
        for ns in namespaces.list(None) {
            let name = ns["metadata"]["name"].as_str().unwrap_or("");
            if !ns["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            if !root_ca.is_empty() {
                let current = configmaps.get(&format!("{name}/{ROOT_CA}"));
                publish_root_ca(&publisher, name, current.as_deref(), &root_ca).await;
            }
            if accounts.get(&format!("{name}/default")).is_some() {
                continue;
            }
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
            match cx
                .client
                .create(&format!("/api/v1/namespaces/{name}/serviceaccounts"), &sa)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_already_exists() || e.code() == 403 || e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e, "could not create the default service account")
                }
            }
        }
        tokio::select! {
            _ = super::next_pass(&mut a, &mut b) => {}
            Some(_) = c.recv() => {}
        }
    }
}
