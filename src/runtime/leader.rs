//! Leader election on a `coordination.k8s.io/v1` Lease, as upstream's controller
//! manager does: the holder renews the lease; another server takes it over only after
//! it has not been renewed for its duration. Only the leader runs the control loops.

use crate::api::meta::{now_micro, now_secs, parse_rfc3339};
use crate::client::ApiClient;
use serde_json::json;
use std::time::Duration;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";

/// Who holds a lease, and until when.
pub struct Election {
    pub name: String,
    pub identity: String,
    pub duration_secs: i64,
}

impl Election {
    /// Tries once to become (or stay) the holder; true if this process holds it now.
    pub async fn try_acquire(&self, client: &ApiClient) -> bool {
        let path = format!("{PATH}/{}", self.name);
        let now = now_micro();
        match client.get(&path).await {
            Err(e) if e.is_not_found() => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": "kube-system"},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_secs,
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
                });
                client.create(PATH, &lease).await.is_ok()
            }
            Err(_) => false,
            Ok(mut lease) => {
                let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or("");
                let renewed = lease["spec"]["renewTime"]
                    .as_str()
                    .and_then(parse_rfc3339)
                    .unwrap_or(0);
                let duration = lease["spec"]["leaseDurationSeconds"]
                    .as_i64()
                    .unwrap_or(self.duration_secs);
                let mine = holder == self.identity;
                if !mine && !holder.is_empty() && renewed + duration > now_secs() {
                    return false;
                }
                if !mine {
                    let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
                    lease["spec"]["leaseTransitions"] = json!(transitions + 1);
                    lease["spec"]["acquireTime"] = json!(now);
                    lease["spec"]["holderIdentity"] = json!(self.identity);
                }
                lease["spec"]["renewTime"] = json!(now);
                lease["spec"]["leaseDurationSeconds"] = json!(self.duration_secs);
                // the resourceVersion in `lease` makes a racing takeover a 409
                client.update(&path, &lease).await.is_ok()
            }
        }
    }

    /// Waits until this process leads.
    pub async fn acquire(&self, client: &ApiClient) {
        while !self.try_acquire(client).await {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
    }

    /// Renews until a renewal fails for longer than the lease lasts; returns then
    /// (leadership is lost and the caller must stop leading).
    pub async fn keep(&self, client: &ApiClient) {
        let period = Duration::from_secs((self.duration_secs / 3).max(1) as u64);
        let mut last_ok = now_secs();
        loop {
            tokio::time::sleep(period).await;
            if self.try_acquire(client).await {
                last_ok = now_secs();
            } else if now_secs() - last_ok >= self.duration_secs {
                tracing::warn!(lease = %self.name, "lost the lease; stopping the control loops");
                return;
            }
        }
    }
}
