//! Every namespace has a `default` ServiceAccount (upstream's service account
//! controller): created with the namespace, and again if someone deletes it.

use super::Context;
use serde_json::json;
use std::sync::Arc;

pub async fn run(cx: Arc<Context>) {
    let namespaces = cx.informer("", "namespaces");
    let accounts = cx.informer("", "serviceaccounts");
    let (mut a, mut b) = (namespaces.subscribe(), accounts.subscribe());
    namespaces.synced().await;
    accounts.synced().await;
    loop {
        for ns in namespaces.list(None) {
            let name = ns["metadata"]["name"].as_str().unwrap_or("");
            if !ns["metadata"]["deletionTimestamp"].is_null()
                || accounts.get(&format!("{name}/default")).is_some()
            {
                continue;
            }
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
            match cx
                .client
                .create(&format!("/api/v1/namespaces/{name}/serviceaccounts"), &sa)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_already_exists() || e.code == 403 || e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e, "could not create the default service account")
                }
            }
        }
        super::next_pass(&mut a, &mut b).await;
    }
}
