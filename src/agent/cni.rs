//! Pod networking on one node: a CNI config for containerd that puts pods on a bridge
//! with addresses from this node's `spec.podCIDR` (Debian's containernetworking-plugins:
//! bridge, host-local, portmap; containerd sets up loopback itself), at the MTU the
//! overlay leaves room for. Written once the overlay (`crate::overlay`) is up; the
//! overlay masquerades pod traffic that leaves the cluster, so the bridge does not
//! (pod-to-pod traffic across nodes keeps its source address).

use serde_json::{Value, json};
use std::path::Path;

/// The file containerd reads (the first in name order wins).
pub const CONFIG_FILE: &str = "10-skua.conflist";

/// The CNI configuration for pods in `pod_cidr` at `mtu`; host-local keeps its leases
/// in `ipam_dir`.
pub fn conflist(pod_cidr: &str, mtu: u32, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "skua",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "skua0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "forceAddress": true,
                "mtu": mtu,
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

/// Writes the CNI config to `conf_dir` (atomically: containerd may read it any time).
pub fn write(conf_dir: &Path, ipam_dir: &Path, pod_cidr: &str, mtu: u32) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&conflist(pod_cidr, mtu, ipam_dir)).unwrap_or_default();
    let tmp = conf_dir.join(format!(".{CONFIG_FILE}.new"));
    std::fs::create_dir_all(conf_dir)?;
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, conf_dir.join(CONFIG_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_addresses_from_the_nodes_range() {
        let c = conflist("10.42.3.0/24", 1450, Path::new("/var/lib/skua/agent/cni"));
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
        assert_eq!(c["plugins"][0]["mtu"], 1450);
        // the overlay masquerades traffic leaving the cluster; pod-to-pod keeps its source
        assert_eq!(c["plugins"][0]["ipMasq"], false);
    }
}
