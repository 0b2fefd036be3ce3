//! The overlay's pure part: which routes, ARP and FDB entries this node wants, given
//! the other nodes as their Node objects describe them (flannel's annotations), and
//! the smallest set of changes from what the kernel holds to that. No I/O.

use crate::net::netlink::{Fdb, Neigh, Route, format_mac, parse_mac};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Flannel's node annotations (peers read them; k3s users and their tools know them).
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// The VXLAN device, network identifier and UDP port (flannel's defaults).
pub const VXLAN_DEVICE: &str = "flannel.1";
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN encapsulation costs per packet (outer IPv4 + UDP + VXLAN + Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;

pub use crate::config::{FlannelBackend as Backend, Ipv4Net as Net};

/// Another node, as its Node object announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Net,
    pub public_ip: Ipv4Addr,
    /// Its VXLAN device's MAC, when it runs one.
    pub vtep_mac: Option<[u8; 6]>,
}

/// A peer from its Node object; `None` until it has a pod range and has announced its
/// address (a node whose agent has not started its overlay yet).
pub fn peer_of(node: &Value) -> Option<Peer> {
    let name = node["metadata"]["name"].as_str()?.to_string();
    let pod_cidr: Net = node["spec"]["podCIDR"].as_str()?.parse().ok()?;
    let ann = &node["metadata"]["annotations"];
    let public_ip: Ipv4Addr = ann[PUBLIC_IP].as_str()?.parse().ok()?;
    let vtep_mac = ann[BACKEND_DATA]
        .as_str()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|d| d["VtepMAC"].as_str().and_then(parse_mac));
    Some(Peer {
        name,
        pod_cidr,
        public_ip,
        vtep_mac,
    })
}

/// The annotations this node publishes for its peers.
pub fn annotations(backend: Backend, public_ip: Ipv4Addr, vtep_mac: Option<[u8; 6]>) -> Value {
    let (kind, data) = match (backend.uses_vxlan(), vtep_mac) {
        (true, Some(mac)) => (
            "vxlan",
            json!({"VNI": VXLAN_VNI, "VtepMAC": format_mac(&mac)}).to_string(),
        ),
        _ => ("host-gw", "null".to_string()),
    };
    json!({
        BACKEND_TYPE: kind,
        BACKEND_DATA: data,
        PUBLIC_IP: public_ip.to_string(),
        SUBNET_MANAGER: "true",
    })
}

/// This node, as the plan needs it.
#[derive(Clone, Debug)]
pub struct Local {
    pub name: String,
    pub backend: Backend,
    /// The subnet of the interface pod traffic leaves by (`--flannel-iface`).
    pub subnet: Net,
    pub iface: u32,
    /// This node's address peers send to.
    pub public_ip: Ipv4Addr,
    /// The VXLAN device's index, when there is one.
    pub vxlan: Option<u32>,
    /// The cluster's pod network (`--cluster-cidr`): every peer's range lies inside it.
    pub cluster: Net,
    /// This node's own pod range.
    pub pod_cidr: Net,
}

/// What the kernel should hold for the overlay; `problems` are peers that cannot be
/// reached with this backend (said in words an operator can act on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeSet<Route>,
    pub neighbours: BTreeSet<Neigh>,
    pub fdb: BTreeSet<Fdb>,
    pub problems: Vec<String>,
}

/// The overlay state for `peers`. This node itself is left out, and so is a node
/// announcing this node's own address: it shares this machine's network (agents
/// side by side in one network namespace), so its pods are reached locally.
pub fn desired(local: &Local, peers: &[Peer]) -> Desired {
    let mut d = Desired::default();
    let mut taken = vec![local.pod_cidr];
    for p in peers
        .iter()
        .filter(|p| p.name != local.name && p.public_ip != local.public_ip)
    {
        // a Node object is not trusted blindly: a range outside the cluster's (or one
        // that overlaps another) would replace this machine's own routes, and an
        // address that is no host's would send tunnel traffic nowhere sensible
        if let Some(why) = implausible(local, &taken, p) {
            d.problems
                .push(format!("node {} is ignored: {why}", p.name));
            continue;
        }
        taken.push(p.pod_cidr);
        let same_subnet = local.subnet.contains(p.public_ip);
        let direct = match local.backend {
            Backend::HostGw => {
                if !same_subnet {
                    d.problems.push(format!(
                        "node {} ({}) is not on this node's subnet {}: the host-gw backend needs every node on one L2 network; use --flannel-backend vxlan or auto",
                        p.name, p.public_ip, local.subnet
                    ));
                    continue;
                }
                true
            }
            Backend::Auto => same_subnet,
            Backend::Vxlan => false,
            Backend::None => continue,
        };
        if direct {
            d.routes.insert(Route {
                dst: p.pod_cidr.addr,
                prefix: p.pod_cidr.prefix,
                gateway: p.public_ip,
                dev: local.iface,
                onlink: false,
            });
            continue;
        }
        let (Some(dev), Some(mac)) = (local.vxlan, p.vtep_mac) else {
            d.problems.push(format!(
                "node {} announces no VXLAN endpoint (its backend is not vxlan or auto): its pods cannot be reached",
                p.name
            ));
            continue;
        };
        d.routes.insert(Route {
            dst: p.pod_cidr.addr,
            prefix: p.pod_cidr.prefix,
            gateway: p.pod_cidr.addr,
            dev,
            onlink: true,
        });
        d.neighbours.insert(Neigh {
            dev,
            ip: p.pod_cidr.addr,
            mac,
        });
        d.fdb.insert(Fdb {
            dev,
            mac,
            dst: p.public_ip,
        });
    }
    d
}

fn overlaps(a: Net, b: Net) -> bool {
    let p = a.prefix.min(b.prefix);
    Net::new(a.addr, p) == Net::new(b.addr, p)
}

/// Why a peer's announcement cannot be routed, if it cannot.
fn implausible(local: &Local, taken: &[Net], p: &Peer) -> Option<String> {
    let cidr = p.pod_cidr;
    if !local.cluster.contains(cidr.addr) || cidr.prefix <= local.cluster.prefix {
        return Some(format!(
            "its pod range {cidr} is not a part of the cluster's {}",
            local.cluster
        ));
    }
    if let Some(t) = taken.iter().find(|t| overlaps(**t, cidr)) {
        return Some(format!("its pod range {cidr} overlaps {t}, already routed"));
    }
    let ip = p.public_ip;
    if ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || local.cluster.contains(ip)
    {
        return Some(format!("its address {ip} is not a node's address"));
    }
    None
}

/// The changes from `current` to `wanted`: what to add or replace, and what to remove.
/// Entries with the same key (`key`) are replaced in place, not removed first, so a
/// changed peer never loses its route for a moment.
pub fn changes<T: Ord + Clone, K: PartialEq>(
    current: &BTreeSet<T>,
    wanted: &BTreeSet<T>,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Vec<T>) {
    let add: Vec<T> = wanted.difference(current).cloned().collect();
    let remove: Vec<T> = current
        .difference(wanted)
        .filter(|c| !add.iter().any(|a| key(a) == key(c)))
        .cloned()
        .collect();
    (add, remove)
}

/// The nftables table that masquerades pod traffic leaving the cluster network;
/// pod-to-pod traffic keeps its addresses. Replaced whole in one transaction.
pub fn masquerade_table(cluster: Net) -> String {
    format!(
        "add table ip skua-overlay\n\
         delete table ip skua-overlay\n\
         table ip skua-overlay {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat + 10; policy accept;\n\
         \t\tip saddr {cluster} ip daddr {cluster} return\n\
         \t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str, mac: Option<&str>) -> Value {
        let data = match mac {
            Some(m) => json!({"VNI": 1, "VtepMAC": m}).to_string(),
            None => "null".into(),
        };
        json!({"metadata": {"name": name, "annotations": {
            PUBLIC_IP: ip, BACKEND_DATA: data, BACKEND_TYPE: if mac.is_some() {"vxlan"} else {"host-gw"},
        }}, "spec": {"podCIDR": cidr}})
    }

    fn local(backend: Backend) -> Local {
        Local {
            name: "n1".into(),
            backend,
            subnet: "10.250.0.0/24".parse().unwrap(),
            iface: 2,
            public_ip: "10.250.0.11".parse().unwrap(),
            vxlan: backend.uses_vxlan().then_some(9),
            cluster: "10.42.0.0/16".parse().unwrap(),
            pod_cidr: "10.42.0.0/24".parse().unwrap(),
        }
    }

    fn peers() -> Vec<Peer> {
        [
            node(
                "n1",
                "10.42.0.0/24",
                "10.250.0.11",
                Some("02:00:00:00:00:0b"),
            ),
            node(
                "n2",
                "10.42.1.0/24",
                "10.250.0.12",
                Some("02:00:00:00:00:0c"),
            ),
            node(
                "n3",
                "10.42.2.0/24",
                "10.251.0.13",
                Some("02:00:00:00:00:0d"),
            ),
        ]
        .iter()
        .map(|n| peer_of(n).unwrap())
        .collect()
    }

    #[test]
    fn peers_come_from_flannel_annotations() {
        let p = peer_of(&node(
            "n2",
            "10.42.1.0/24",
            "10.250.0.12",
            Some("02:aa:bb:cc:dd:ee"),
        ))
        .unwrap();
        assert_eq!(p.pod_cidr.to_string(), "10.42.1.0/24");
        assert_eq!(p.vtep_mac, Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        // no announced address yet, or no range: not a peer yet
        assert!(
            peer_of(&json!({"metadata": {"name": "x"}, "spec": {"podCIDR": "10.42.5.0/24"}}))
                .is_none()
        );
        assert!(peer_of(&json!({"metadata": {"name": "x", "annotations": {PUBLIC_IP: "10.0.0.1"}}, "spec": {}})).is_none());
        let a = annotations(
            Backend::Vxlan,
            "10.250.0.11".parse().unwrap(),
            Some([2, 0, 0, 0, 0, 0xb]),
        );
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}"#
        );
        let a = annotations(Backend::HostGw, "10.250.0.11".parse().unwrap(), None);
        assert_eq!(
            (a[BACKEND_TYPE].as_str(), a[BACKEND_DATA].as_str()),
            (Some("host-gw"), Some("null"))
        );
    }

    #[test]
    fn vxlan_routes_every_peer_through_the_device() {
        let d = desired(&local(Backend::Vxlan), &peers());
        assert!(d.problems.is_empty());
        assert_eq!(d.routes.len(), 2, "itself left out");
        let r = d.routes.iter().find(|r| r.dst.octets()[2] == 2).unwrap();
        assert_eq!(
            (r.gateway, r.dev, r.onlink),
            ("10.42.2.0".parse().unwrap(), 9, true)
        );
        assert!(d.neighbours.contains(&Neigh {
            dev: 9,
            ip: "10.42.1.0".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 0xc]
        }));
        assert!(d.fdb.contains(&Fdb {
            dev: 9,
            mac: [2, 0, 0, 0, 0, 0xd],
            dst: "10.251.0.13".parse().unwrap()
        }));
    }

    #[test]
    fn host_gw_routes_via_node_addresses_and_names_peers_off_the_subnet() {
        let d = desired(&local(Backend::HostGw), &peers());
        assert_eq!(d.routes.len(), 1);
        let r = d.routes.iter().next().unwrap();
        assert_eq!(
            (r.dst, r.gateway, r.dev, r.onlink),
            (
                "10.42.1.0".parse().unwrap(),
                "10.250.0.12".parse().unwrap(),
                2,
                false
            )
        );
        assert!(d.neighbours.is_empty() && d.fdb.is_empty());
        assert_eq!(d.problems.len(), 1);
        assert!(
            d.problems[0].contains("n3") && d.problems[0].contains("vxlan or auto"),
            "{}",
            d.problems[0]
        );
    }

    #[test]
    fn a_node_on_this_nodes_own_address_is_local() {
        let mut p = peers();
        p[1].public_ip = "10.250.0.11".parse().unwrap();
        let d = desired(&local(Backend::Vxlan), &p);
        assert_eq!(d.routes.len(), 1);
        assert!(d.routes.iter().all(|r| r.dst.octets()[2] == 2));
    }

    #[test]
    fn implausible_announcements_are_ignored_not_routed() {
        let mut p = peers();
        // a range that would replace the default route, one overlapping ours, one
        // outside the cluster, and an address that is no host's
        p[1].pod_cidr = "0.0.0.0/0".parse().unwrap();
        p[2].pod_cidr = "10.42.0.128/25".parse().unwrap();
        let mut outside = p[2].clone();
        outside.name = "n4".into();
        outside.pod_cidr = "192.168.0.0/24".parse().unwrap();
        let mut bad_ip = p[2].clone();
        bad_ip.name = "n5".into();
        bad_ip.pod_cidr = "10.42.9.0/24".parse().unwrap();
        bad_ip.public_ip = "127.0.0.1".parse().unwrap();
        let mut fine = p[2].clone();
        fine.name = "n6".into();
        fine.pod_cidr = "10.42.8.0/24".parse().unwrap();
        let mut twin = fine.clone();
        twin.name = "n7".into();
        twin.public_ip = "10.250.0.77".parse().unwrap();
        p.extend([outside, bad_ip, fine, twin]);
        let d = desired(&local(Backend::Vxlan), &p);
        let routed: Vec<String> = d
            .routes
            .iter()
            .map(|r| format!("{}/{}", r.dst, r.prefix))
            .collect();
        assert_eq!(routed, ["10.42.8.0/24"], "{:?}", d.problems);
        assert_eq!(d.problems.len(), 5, "{:?}", d.problems);
        assert!(
            d.problems
                .iter()
                .any(|m| m.contains("n2") && m.contains("0.0.0.0/0"))
        );
        assert!(
            d.problems
                .iter()
                .any(|m| m.contains("n7") && m.contains("overlaps"))
        );
    }

    #[test]
    fn auto_goes_direct_on_the_subnet_and_vxlan_beyond() {
        let d = desired(&local(Backend::Auto), &peers());
        assert!(d.problems.is_empty());
        let by_dst = |o: u8| {
            d.routes
                .iter()
                .find(|r| r.dst.octets()[2] == o)
                .unwrap()
                .clone()
        };
        assert_eq!(
            (by_dst(1).dev, by_dst(1).gateway),
            (2, "10.250.0.12".parse().unwrap())
        );
        assert_eq!((by_dst(2).dev, by_dst(2).onlink), (9, true));
        assert_eq!(d.fdb.len(), 1);
        assert_eq!(d.neighbours.len(), 1);
    }

    #[test]
    fn changes_replace_in_place_and_remove_what_went() {
        let mut p = peers();
        let before = desired(&local(Backend::Vxlan), &p).routes;
        // n2 moves to another address, n3 leaves
        p[1].public_ip = "10.250.0.99".parse().unwrap();
        p.pop();
        let after = desired(&local(Backend::HostGw), &p).routes;
        let (add, remove) = changes(&before, &after, |r| (r.dst, r.prefix));
        assert_eq!(add.len(), 1);
        assert_eq!(add[0].gateway, "10.250.0.99".parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            remove.len(),
            1,
            "n2's old route is replaced, not removed: {remove:?}"
        );
        assert_eq!(remove[0].dst, "10.42.2.0".parse::<Ipv4Addr>().unwrap());
        let (add, remove) = changes(&after, &after, |r| (r.dst, r.prefix));
        assert!(add.is_empty() && remove.is_empty());
    }

    #[test]
    fn cidrs_and_backends_parse_with_clear_errors() {
        let n: Net = "10.42.7.9/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.42.0.0/16");
        assert!(n.contains("10.42.200.1".parse().unwrap()));
        assert!(!n.contains("10.43.0.1".parse().unwrap()));
        assert!(
            "10.42.0.0"
                .parse::<Net>()
                .unwrap_err()
                .to_string()
                .contains("CIDR")
        );
        assert!("10.42.0.0/40".parse::<Net>().is_err());
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert!(
            "wireguard"
                .parse::<Backend>()
                .unwrap_err()
                .to_string()
                .contains("vxlan, host-gw, auto or none")
        );
        let t = masquerade_table("10.42.0.0/16".parse().unwrap());
        assert!(t.contains("ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return"));
        assert!(t.contains("masquerade"));
    }
}
