//! The flannel-like overlay built into the agent: pods on every node reach pods on
//! every other node. This node announces itself in flannel's Node annotations (public
//! IP, backend, VTEP MAC), follows every other Node, and keeps the kernel's routes,
//! ARP and FDB entries equal to what they announce (`plan.rs`), through netlink
//! (`crate::net::netlink`). Level-triggered: a start, a restart or any Node change
//! reconciles the whole set, so stale entries of departed nodes go.
//!
//! Routes, the VXLAN device and the masquerade table stay when the agent stops, so
//! running pods keep their network while it restarts.

pub mod plan;

use crate::client::ApiClient;
use crate::net::netlink::{Links, VxlanSpec};
use crate::net::{NetError, Nft};
use crate::runtime::informer::Informer;
use plan::{Backend, Desired, Local, Net, Peer};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// Why the overlay cannot run.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{0}")]
    Config(String),
}

/// What the overlay needs to know of its node and cluster.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    pub node: String,
    pub backend: Backend,
    /// `--flannel-iface`: the interface pod traffic leaves by.
    pub iface: Option<String>,
    /// `--node-ip` (the first IPv4 one): the address peers send to.
    pub node_ip: Option<Ipv4Addr>,
    /// `--cluster-cidr` of the server: pod traffic inside it is not masqueraded.
    pub cluster_cidr: Net,
}

/// Said once the node's pod network is usable: its range and the MTU pods get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub pod_cidr: Net,
    pub mtu: u32,
}

/// The interface pod traffic leaves by and this node's address on it.
fn pick_interface(
    ifaces: &[crate::net::netlink::Iface],
    by_name: Option<&str>,
    node_ip: Option<Ipv4Addr>,
) -> Result<(crate::net::netlink::Iface, Ipv4Addr, Net), OverlayError> {
    let chosen = match (by_name, node_ip) {
        (Some(name), _) => ifaces.iter().find(|i| i.name == name).ok_or_else(|| {
            OverlayError::Config(format!(
                "--flannel-iface {name}: no such interface on this node (it has {})",
                ifaces
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        (None, Some(ip)) => ifaces
            .iter()
            .find(|i| i.addrs.iter().any(|(a, _)| *a == ip))
            .ok_or_else(|| {
                OverlayError::Config(format!(
                    "no interface holds the node IP {ip}: check --node-ip, or name the interface with --flannel-iface"
                ))
            })?,
        (None, None) => ifaces
            .iter()
            .find(|i| i.name != "lo" && !i.addrs.is_empty())
            .ok_or_else(|| {
                OverlayError::Config(
                    "no interface with an IPv4 address for pod traffic: set --node-ip or --flannel-iface".into(),
                )
            })?,
    };
    let (ip, prefix) = node_ip
        .and_then(|ip| chosen.addrs.iter().find(|(a, _)| *a == ip).copied())
        .or_else(|| chosen.addrs.first().copied())
        .ok_or_else(|| {
            OverlayError::Config(format!(
                "interface {} has no IPv4 address for pod traffic",
                chosen.name
            ))
        })?;
    Ok((chosen.clone(), ip, Net::new(ip, prefix)))
}

/// This node's side of the overlay once its device is set up.
pub struct Device {
    pub local: Local,
    pub mtu: u32,
    pub public_ip: Ipv4Addr,
    pub iface: crate::net::netlink::Iface,
    pub vxlan: Option<crate::net::netlink::VxlanLink>,
}

/// Picks the interface and, for vxlan and auto, makes the VXLAN device (a device left
/// by an earlier backend goes otherwise).
pub async fn setup_device(
    links: &dyn Links,
    node: &str,
    backend: Backend,
    iface: Option<&str>,
    node_ip: Option<Ipv4Addr>,
    pod_cidr: Net,
    cluster: Net,
) -> Result<Device, OverlayError> {
    let ifaces = links.interfaces().await?;
    let (iface, public_ip, subnet) = pick_interface(&ifaces, iface, node_ip)?;
    let (vxlan, mtu) = if backend.uses_vxlan() {
        let link = links
            .ensure_vxlan(&VxlanSpec {
                name: plan::VXLAN_DEVICE.into(),
                vni: plan::VXLAN_VNI,
                port: plan::VXLAN_PORT,
                local: public_ip,
                parent: iface.index,
                mtu: iface.mtu.saturating_sub(plan::VXLAN_OVERHEAD),
                addr: pod_cidr.addr,
            })
            .await?;
        (Some(link), iface.mtu.saturating_sub(plan::VXLAN_OVERHEAD))
    } else {
        links.delete_link(plan::VXLAN_DEVICE).await?;
        (None, iface.mtu)
    };
    let local = Local {
        name: node.to_string(),
        backend,
        subnet,
        iface: iface.index,
        public_ip,
        vxlan: vxlan.as_ref().map(|l| l.index),
        cluster,
        pod_cidr,
    };
    Ok(Device {
        local,
        mtu,
        public_ip,
        iface,
        vxlan,
    })
}

/// Waits for node IPAM to give this node its pod range.
async fn pod_cidr(client: &ApiClient, node: &str) -> Net {
    loop {
        match client.get(&format!("/api/v1/nodes/{node}")).await {
            Ok(n) => {
                if let Some(c) = n["spec"]["podCIDR"].as_str().and_then(|c| c.parse().ok()) {
                    return c;
                }
            }
            Err(e) => tracing::debug!(error = %e, "overlay: reading the node for its pod range"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sets the node up for the overlay, says `ready`, then follows the other nodes until
/// `stop`. Refuses to start (an error) when the backend cannot reach a node that is
/// already there (host-gw across subnets).
pub async fn run(
    client: ApiClient,
    cfg: OverlayConfig,
    links: Arc<dyn Links>,
    nft: Arc<dyn Nft>,
    ready: tokio::sync::oneshot::Sender<Ready>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), OverlayError> {
    let pod_cidr = tokio::select! {
        c = pod_cidr(&client, &cfg.node) => c,
        _ = stop.changed() => return Ok(()),
    };
    let dev = setup_device(
        links.as_ref(),
        &cfg.node,
        cfg.backend,
        cfg.iface.as_deref(),
        cfg.node_ip,
        pod_cidr,
        cfg.cluster_cidr,
    )
    .await?;
    let (local, mtu, public_ip) = (dev.local.clone(), dev.mtu, dev.public_ip);
    let (iface, vxlan) = (dev.iface, dev.vxlan);
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        // packets between pods on one bridge pass conntrack (service DNAT is undone)
        ("net.bridge.bridge-nf-call-iptables", "1"),
    ] {
        if let Err(e) = crate::net::sysctl(key, value) {
            tracing::warn!(sysctl = key, error = %e, "overlay: cannot set sysctl");
        }
    }
    nft.apply(&plan::masquerade_table(cfg.cluster_cidr))?;
    // the node tells its peers how to reach it
    let annotations = plan::annotations(cfg.backend, public_ip, vxlan.as_ref().map(|l| l.mac));
    let mut backoff = Duration::from_millis(200);
    loop {
        match client
            .patch(
                &format!("/api/v1/nodes/{}", cfg.node),
                &json!({"metadata": {"annotations": annotations}}),
            )
            .await
        {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "overlay: cannot announce this node's address yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let nodes = Informer::start(client, &crate::api::registry::NODES, None);
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    let peers = announced(&nodes);
    let first = plan::desired(&local, &peers);
    if cfg.backend == Backend::HostGw && !first.problems.is_empty() {
        return Err(OverlayError::Config(format!(
            "the host-gw backend cannot reach every node: {}",
            first.problems.join("; ")
        )));
    }
    let mut pending = false;
    if let Err(e) = reconcile(links.as_ref(), &local, &first).await {
        tracing::error!(error = %e, "overlay: cannot program every route; retrying");
        pending = true;
    }
    for p in &first.problems {
        tracing::error!(problem = %p, "overlay: a node cannot be reached");
    }
    tracing::info!(
        backend = cfg.backend.name(),
        interface = %iface.name,
        public_ip = %public_ip,
        pod_cidr = %pod_cidr,
        mtu,
        peers = peers.len().saturating_sub(1),
        "overlay: up"
    );
    let _ = ready.send(Ready { pod_cidr, mtu });
    let mut last = if pending {
        (Vec::new(), first.problems)
    } else {
        (peers, first.problems)
    };
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    resync.tick().await;
    loop {
        let forced = tokio::select! {
            Some(_) = changes.recv() => false,
            _ = resync.tick() => true,
            _ = stop.changed() => return Ok(()),
        };
        while changes.try_recv().is_ok() {}
        let peers = announced(&nodes);
        if !forced && peers == last.0 {
            continue;
        }
        let want = plan::desired(&local, &peers);
        if want.problems != last.1 {
            for p in &want.problems {
                tracing::error!(problem = %p, "overlay: a node cannot be reached");
            }
        }
        if let Err(e) = reconcile(links.as_ref(), &local, &want).await {
            tracing::error!(error = %e, "overlay: cannot program routes; retrying");
            last = (Vec::new(), Vec::new());
            continue;
        }
        last = (peers, want.problems);
    }
}

/// Every node that has announced itself, in name order.
fn announced(nodes: &Informer) -> Vec<Peer> {
    let mut p: Vec<Peer> = nodes
        .list(None)
        .iter()
        .filter_map(|n| plan::peer_of(n))
        .collect();
    p.sort_by(|a, b| a.name.cmp(&b.name));
    p
}

/// Makes the kernel hold exactly `want`: forwarding and ARP entries before the routes
/// that need them; what no longer belongs goes last.
pub async fn reconcile(links: &dyn Links, local: &Local, want: &Desired) -> Result<(), NetError> {
    let routes: BTreeSet<_> = links.routes().await?.into_iter().collect();
    let (add_routes, del_routes) = plan::changes(&routes, &want.routes, |r| (r.dst, r.prefix));
    let (mut add_n, mut del_n, mut add_f, mut del_f) = (vec![], vec![], vec![], vec![]);
    if let Some(dev) = local.vxlan {
        let neighbours: BTreeSet<_> = links.neighbours(dev).await?.into_iter().collect();
        (add_n, del_n) = plan::changes(&neighbours, &want.neighbours, |n| (n.dev, n.ip));
        let fdb: BTreeSet<_> = links.fdb(dev).await?.into_iter().collect();
        (add_f, del_f) = plan::changes(&fdb, &want.fdb, |f| (f.dev, f.mac));
    }
    // each entry on its own: one the kernel refuses does not hold up the others
    let mut failed: Vec<String> = Vec::new();
    let mut note = |r: Result<(), NetError>| {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    };
    for f in &add_f {
        note(links.replace_fdb(f).await);
    }
    for n in &add_n {
        note(links.replace_neighbour(n).await);
    }
    for r in &add_routes {
        note(links.replace_route(r).await);
    }
    for r in &del_routes {
        note(links.delete_route(r).await);
    }
    for n in &del_n {
        note(links.delete_neighbour(n).await);
    }
    for f in &del_f {
        note(links.delete_fdb(f).await);
    }
    if !failed.is_empty() {
        return Err(NetError::Refused {
            tool: "netlink",
            message: failed.join("; "),
        });
    }
    let changed =
        add_routes.len() + del_routes.len() + add_n.len() + del_n.len() + add_f.len() + del_f.len();
    if changed > 0 {
        tracing::info!(
            routes = want.routes.len(),
            added = add_routes.len(),
            removed = del_routes.len(),
            "overlay: routes reconciled"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::netlink::{FakeLinks, Iface, Route};

    fn ifaces() -> Vec<Iface> {
        vec![
            Iface {
                index: 1,
                name: "lo".into(),
                mtu: 65536,
                addrs: vec![("127.0.0.1".parse().unwrap(), 8)],
            },
            Iface {
                index: 2,
                name: "eth0".into(),
                mtu: 1500,
                addrs: vec![("10.250.0.11".parse().unwrap(), 24)],
            },
            Iface {
                index: 3,
                name: "eth1".into(),
                mtu: 9000,
                addrs: vec![("192.0.2.5".parse().unwrap(), 28)],
            },
        ]
    }

    #[test]
    fn the_interface_is_the_named_one_or_the_node_ips() {
        let i = ifaces();
        let (iface, ip, subnet) =
            pick_interface(&i, None, Some("10.250.0.11".parse().unwrap())).unwrap();
        assert_eq!(
            (iface.name.as_str(), ip.to_string(), subnet.to_string()),
            ("eth0", "10.250.0.11".into(), "10.250.0.0/24".into())
        );
        let (iface, ip, _) = pick_interface(&i, Some("eth1"), None).unwrap();
        assert_eq!(
            (iface.name.as_str(), iface.mtu, ip.to_string()),
            ("eth1", 9000, "192.0.2.5".into())
        );
        let e = pick_interface(&i, Some("wlan0"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--flannel-iface wlan0") && e.contains("eth0"),
            "{e}"
        );
        let e = pick_interface(&i, None, Some("10.9.9.9".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.9.9.9") && e.contains("--node-ip"), "{e}");
        let (iface, _, _) = pick_interface(&i, None, None).unwrap();
        assert_eq!(
            iface.name, "eth0",
            "loopback is never the overlay's interface"
        );
    }

    #[tokio::test]
    async fn reconcile_converges_and_removes_stale_entries() {
        let links = FakeLinks::default();
        let local = Local {
            name: "n1".into(),
            backend: Backend::Vxlan,
            subnet: "10.250.0.0/24".parse().unwrap(),
            iface: 2,
            public_ip: "10.250.0.11".parse().unwrap(),
            vxlan: Some(9),
            cluster: "10.42.0.0/16".parse().unwrap(),
            pod_cidr: "10.42.0.0/24".parse().unwrap(),
        };
        // a route left by a node that went while the agent was down
        links.routes.lock().unwrap().insert(Route {
            dst: "10.42.9.0".parse().unwrap(),
            prefix: 24,
            gateway: "10.42.9.0".parse().unwrap(),
            dev: 9,
            onlink: true,
        });
        let peer = |n: &str, c: &str, ip: &str, mac: u8| Peer {
            name: n.into(),
            pod_cidr: c.parse().unwrap(),
            public_ip: ip.parse().unwrap(),
            vtep_mac: Some([2, 0, 0, 0, 0, mac]),
        };
        let want = plan::desired(&local, &[peer("n2", "10.42.1.0/24", "10.250.0.12", 12)]);
        reconcile(&links, &local, &want).await.unwrap();
        let routes: Vec<_> = links
            .routes
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.dst.to_string())
            .collect();
        assert_eq!(routes, ["10.42.1.0"]);
        assert_eq!(links.fdb.lock().unwrap().len(), 1);
        assert_eq!(links.neighbours.lock().unwrap().len(), 1);
        // the FDB and ARP entries came before the route that needs them
        let log = links.log.lock().unwrap().clone();
        let pos = |p: &str| log.iter().position(|l| l.starts_with(p)).unwrap();
        assert!(
            pos("+fdb") < pos("+route") && pos("+neigh") < pos("+route"),
            "{log:?}"
        );
        // again: nothing to do
        links.log.lock().unwrap().clear();
        reconcile(&links, &local, &want).await.unwrap();
        assert!(links.log.lock().unwrap().is_empty());
        // the peer leaves: everything of it goes
        reconcile(&links, &local, &plan::desired(&local, &[]))
            .await
            .unwrap();
        assert!(links.routes.lock().unwrap().is_empty());
        assert!(links.fdb.lock().unwrap().is_empty());
        assert!(links.neighbours.lock().unwrap().is_empty());
    }
}
