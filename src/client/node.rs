//! What every node does through the API, hollow (`skua sim`) or real (the agent's
//! kubelet): register its Node (status through `nodes/status`, as a kubelet writes it)
//! and renew its Lease in `kube-node-lease`.

use super::{ApiClient, ClientError};
use crate::api::meta::now_micro;
use serde_json::{Value, json};

/// A node's four kubelet conditions as of `now`: memory and disk pressure as given, no
/// PID pressure, and Ready as `(status, reason, message)` says.
pub fn conditions(now: &str, ready: (&str, &str, &str), memory: bool, disk: bool) -> Value {
    let cond = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        if memory {
            cond(
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if disk {
            cond(
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        cond("Ready", ready.0, ready.1, ready.2),
    ])
}

/// Creates `node` (or finds it registered) and writes its status.
pub async fn register(client: &ApiClient, node: &Value) -> Result<(), ClientError> {
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    match client.create("/api/v1/nodes", node).await {
        Ok(_) => {}
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(e),
    }
    // status is the kubelet's to write, through nodes/status
    let live = client.get(&format!("/api/v1/nodes/{name}")).await?;
    let mut next = live.clone();
    next["status"] = node["status"].clone();
    client
        .update(&format!("/api/v1/nodes/{name}/status"), &next)
        .await?;
    Ok(())
}

/// Renews `name`'s Lease: one update of the copy from the last renewal (as the
/// kubelet does), or a read first when there is none or it is stale. Returns the
/// stored lease.
pub async fn renew_lease(
    client: &ApiClient,
    name: &str,
    last: Option<Value>,
) -> Result<Value, ClientError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    let now = now_micro();
    if let Some(mut lease) = last {
        lease["spec"]["renewTime"] = json!(now);
        match client.update(&path, &lease).await {
            Ok(stored) => return Ok(stored),
            Err(e) if e.code() == 409 || e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    match client.get(&path).await {
        Ok(mut lease) => {
            lease["spec"]["renewTime"] = json!(now);
            lease["spec"]["holderIdentity"] = json!(name);
            client.update(&path, &lease).await
        }
        Err(e) if e.is_not_found() => {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
            });
            client
                .create(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                    &lease,
                )
                .await
        }
        Err(e) => Err(e),
    }
}
