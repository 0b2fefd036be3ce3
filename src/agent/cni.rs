//! Pod networking on one node (the overlay across nodes is the networking issue): a
//! CNI config for containerd that puts pods on a bridge with addresses from this
//! node's `spec.podCIDR` (Debian's containernetworking-plugins: bridge, host-local,
//! portmap; containerd sets up loopback itself). Written once node IPAM has given the
//! node its range.

use crate::client::ApiClient;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The file containerd reads (the first in name order wins).
pub const CONFIG_FILE: &str = "10-skua.conflist";

/// The CNI configuration for pods in `pod_cidr`; host-local keeps its leases in
/// `ipam_dir`.
pub fn conflist(pod_cidr: &str, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "skua",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "skua0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "forceAddress": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

/// Waits until the node has its pod range, then writes the CNI config to `conf_dir`.
pub async fn configure(client: ApiClient, node: String, conf_dir: &Path, ipam_dir: &Path) {
    let cidr = loop {
        match client.get(&format!("/api/v1/nodes/{node}")).await {
            Ok(n) => {
                if let Some(c) = n["spec"]["podCIDR"].as_str().filter(|c| !c.is_empty()) {
                    break c.to_string();
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the node for its pod range"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let text = serde_json::to_string_pretty(&conflist(&cidr, ipam_dir)).unwrap_or_default();
    let file = conf_dir.join(CONFIG_FILE);
    let written = std::fs::create_dir_all(conf_dir)
        .and_then(|_| std::fs::write(conf_dir.join(format!(".{CONFIG_FILE}.new")), &text))
        .and_then(|_| std::fs::rename(conf_dir.join(format!(".{CONFIG_FILE}.new")), &file));
    match written {
        Ok(()) => {
            tracing::info!(pod_cidr = %cidr, file = %file.display(), "pod network configured")
        }
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "cannot write the CNI config")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_addresses_from_the_nodes_range() {
        let c = conflist("10.42.3.0/24", Path::new("/var/lib/skua/agent/cni"));
        assert_eq!(c["plugins"][0]["type"], "bridge");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(
            c["plugins"][0]["ipam"]["dataDir"],
            "/var/lib/skua/agent/cni"
        );
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
    }
}
