//! Upstream's ClusterRole aggregation controller: a ClusterRole with an
//! `aggregationRule` holds the rules of every ClusterRole its selectors match (so
//! `admin`, `edit` and `view` grow with the `aggregate-to-*` roles CRDs and charts
//! add). Written with server-side apply as `clusterrole-aggregation-controller`, which
//! owns only the rules; what to write is `api::rbac::reconcile::aggregate`.

use super::Context;
use crate::api::rbac::reconcile::aggregate;
use http::Method;
use serde_json::json;
use std::sync::Arc;

const MANAGER: &str = "clusterrole-aggregation-controller";

pub async fn run(cx: Arc<Context>) {
    let roles = cx.informer(&crate::api::registry::CLUSTERROLES);
    let mut changes = roles.subscribe();
    roles.synced().await;
    loop {
        // any change may change any aggregate (chains converge over passes:
        // view, then edit which holds view, then admin which holds edit)
        // the informer's own copies, borrowed: nothing is cloned for a pass
        let held = roles.list(None);
        let all: Vec<&serde_json::Value> = held.iter().map(|r| &**r).collect();
        for role in &all {
            let Some(rules) = aggregate(role, &all) else {
                continue;
            };
            let name = role["metadata"]["name"].as_str().unwrap_or("");
            let body = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name}, "rules": rules,
            });
            let path = format!(
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}?fieldManager={MANAGER}&force=true"
            );
            if let Err(e) = cx
                .client
                .call(
                    Method::PATCH,
                    &path,
                    "application/apply-patch+yaml",
                    Some(&body),
                )
                .await
            {
                if !e.is_not_found() {
                    tracing::debug!(role = name, error = %e, "could not aggregate a ClusterRole");
                }
            }
        }
        if changes.recv().await.is_none() {
            return;
        }
        // one pass serves every change that came meanwhile
        while changes.try_recv().is_ok() {}
    }
}
