//! The kernel's routing tables over rtnetlink: the seam the overlay programs its
//! routes, its VXLAN device, ARP and FDB entries through. The real implementation
//! speaks netlink directly (the `rtnetlink` crate), the fake records state for unit
//! tests. Only what skua made is ever read back or removed: routes carry skua's own
//! route protocol number, and neighbour/FDB entries are only listed on skua's device.

use super::NetError;
use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    AddressFamily,
    address::AddressAttribute,
    link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteProtocol, RouteScope},
};
use std::net::{IpAddr, Ipv4Addr};

#[cfg(test)]
mod fake;
#[cfg(test)]
pub use fake::FakeLinks;

/// The route protocol number skua's routes carry (`proto 66` in `ip route`), so a
/// restarted agent finds exactly its own routes and never touches anyone else's.
pub const ROUTE_PROTOCOL: u8 = 66;

/// A network interface with its IPv4 addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// An IPv4 route to `dst/prefix` through `gateway` out of interface `dev`; `onlink`
/// says the gateway is reached on that device without a route of its own (VXLAN).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dev: u32,
    pub onlink: bool,
}

/// A permanent ARP entry on `dev`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub dev: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// A permanent forwarding entry of a VXLAN device: frames for `mac` go to `dst`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub dev: u32,
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// The VXLAN device the overlay wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub parent: u32,
    pub mtu: u32,
    /// The device's own address (`<node's pod network>/32`, as flannel gives it).
    pub addr: Ipv4Addr,
}

/// The device as it is: its index and MAC (the VTEP MAC peers are told).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanLink {
    pub index: u32,
    pub mac: [u8; 6],
}

/// Routing state, through netlink.
#[async_trait::async_trait]
pub trait Links: Send + Sync {
    /// Every interface with its IPv4 addresses.
    async fn interfaces(&self) -> Result<Vec<Iface>, NetError>;
    /// Creates the VXLAN device (or keeps the one there when it already matches, so
    /// its MAC stays what peers know), sets its MTU and address, and brings it up.
    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanLink, NetError>;
    /// Deletes a device by name; absent is fine.
    async fn delete_link(&self, name: &str) -> Result<(), NetError>;
    /// A dummy device `name`, up, holding `addr` as a host address (/32 or /128): a
    /// local address for a service this node answers itself (cluster DNS). On a
    /// kernel without dummy devices the address goes on loopback instead.
    async fn ensure_local_address(&self, name: &str, addr: IpAddr) -> Result<(), NetError>;
    /// The IPv4 routes of the main table that carry [`ROUTE_PROTOCOL`].
    async fn routes(&self) -> Result<Vec<Route>, NetError>;
    /// Adds or replaces a route (tagged with [`ROUTE_PROTOCOL`]).
    async fn replace_route(&self, r: &Route) -> Result<(), NetError>;
    async fn delete_route(&self, r: &Route) -> Result<(), NetError>;
    /// The permanent IPv4 neighbours of `dev`.
    async fn neighbours(&self, dev: u32) -> Result<Vec<Neigh>, NetError>;
    async fn replace_neighbour(&self, n: &Neigh) -> Result<(), NetError>;
    async fn delete_neighbour(&self, n: &Neigh) -> Result<(), NetError>;
    /// The permanent forwarding entries of `dev` that have a destination.
    async fn fdb(&self, dev: u32) -> Result<Vec<Fdb>, NetError>;
    async fn replace_fdb(&self, f: &Fdb) -> Result<(), NetError>;
    async fn delete_fdb(&self, f: &Fdb) -> Result<(), NetError>;
}

fn refused(what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Refused {
        tool: "netlink",
        message: format!("{what}: {e}"),
    }
}

/// The kernel, over an rtnetlink socket in this process's network namespace.
pub struct RtNetlink {
    handle: rtnetlink::Handle,
    /// One dump at a time: the kernel answers a second dump on a socket whose first is
    /// still running with EBUSY (`netlink_dump_start`), which failed agent start-ups
    /// when the overlay and the node's address lookup listed links together.
    dumps: tokio::sync::Mutex<()>,
}

impl RtNetlink {
    /// Opens the socket; its connection task runs on the current tokio runtime.
    pub fn connect() -> Result<RtNetlink, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetError::Spawn {
            tool: "netlink",
            package: "the kernel's rtnetlink",
            source,
        })?;
        tokio::spawn(conn);
        Ok(RtNetlink {
            handle,
            dumps: tokio::sync::Mutex::new(()),
        })
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        let _dump = self.dumps.lock().await;
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            // ENODEV: no such device
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -19 => Ok(None),
            Err(e) => Err(refused(&format!("reading link {name}"), e)),
        }
    }
}

impl RtNetlink {
    /// The permanent entries of `dev` in a neighbour table (`Inet`: ARP; `Bridge`: the
    /// forwarding database) that have an IPv4 address and a MAC.
    async fn permanent(
        &self,
        dev: u32,
        family: AddressFamily,
        what: &str,
    ) -> Result<Vec<(Ipv4Addr, [u8; 6])>, NetError> {
        let mut out = Vec::new();
        let _dump = self.dumps.lock().await;
        let mut req = self.handle.neighbours().get();
        req.message_mut().header.family = family;
        req.message_mut().header.ifindex = dev;
        let mut entries = req.execute();
        while let Some(n) = entries.try_next().await.map_err(|e| refused(what, e))? {
            if n.header.ifindex != dev || n.header.state != NeighbourState::Permanent {
                continue;
            }
            // in a bridge-family message the address comes as raw bytes
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
                _ => None,
            });
            if let (Some(ip), Some(mac)) = (ip, neighbour_mac(&n.attributes)) {
                out.push((ip, mac));
            }
        }
        Ok(out)
    }
}

fn link_mac(l: &LinkMessage) -> [u8; 6] {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) if m.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(m);
                Some(mac)
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Whether an existing link is a VXLAN device with the wanted VNI, port, local address
/// and parent.
fn vxlan_matches(l: &LinkMessage, spec: &VxlanSpec) -> bool {
    let info = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    });
    let Some(info) = info else { return false };
    let kind = info
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
    let data = info.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
        _ => None,
    });
    let Some(data) = data else { return false };
    kind && data.contains(&InfoVxlan::Id(spec.vni))
        && data.contains(&InfoVxlan::Local(spec.local))
        && data.contains(&InfoVxlan::Port(spec.port))
        && data.contains(&InfoVxlan::Link(spec.parent))
}

/// The link-layer address of a neighbour or forwarding entry.
fn neighbour_mac(attrs: &[NeighbourAttribute]) -> Option<[u8; 6]> {
    attrs.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(m);
            Some(mac)
        }
        _ => None,
    })
}

#[async_trait::async_trait]
impl Links for RtNetlink {
    async fn interfaces(&self) -> Result<Vec<Iface>, NetError> {
        let mut out = Vec::new();
        let _dump = self.dumps.lock().await;
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links
            .try_next()
            .await
            .map_err(|e| refused("listing links", e))?
        {
            let mut iface = Iface {
                index: l.header.index,
                name: String::new(),
                mtu: 1500,
                addrs: Vec::new(),
            };
            for a in &l.attributes {
                match a {
                    LinkAttribute::IfName(n) => iface.name = n.clone(),
                    LinkAttribute::Mtu(m) => iface.mtu = *m,
                    _ => {}
                }
            }
            out.push(iface);
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| refused("listing addresses", e))?
        {
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let (Some(ip), Some(i)) = (ip, out.iter_mut().find(|i| i.index == a.header.index)) {
                i.addrs.push((ip, a.header.prefix_len));
            }
        }
        Ok(out)
    }

    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanLink, NetError> {
        let existing = self.link_by_name(&spec.name).await?;
        let link = match existing {
            Some(l) if vxlan_matches(&l, spec) => l,
            other => {
                if let Some(l) = other {
                    // a device of that name with other settings (the node's address
                    // changed): made again, as flannel does
                    tracing::info!(device = %spec.name, "overlay: replacing a VXLAN device whose settings changed");
                    self.handle
                        .link()
                        .del(l.header.index)
                        .execute()
                        .await
                        .map_err(|e| refused(&format!("deleting {}", spec.name), e))?;
                }
                let msg = rtnetlink::LinkVxlan::new(&spec.name, spec.vni)
                    .dev(spec.parent)
                    .local(spec.local)
                    .port(spec.port)
                    .learning(false)
                    .build();
                self.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(|e| refused(&format!("creating VXLAN device {}", spec.name), e))?;
                self.link_by_name(&spec.name).await?.ok_or_else(|| {
                    refused(
                        &format!("VXLAN device {}", spec.name),
                        "gone after creation",
                    )
                })?
            }
        };
        let index = link.header.index;
        let set = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(spec.mtu)
            .up()
            .build();
        self.handle
            .link()
            .set(set)
            .execute()
            .await
            .map_err(|e| refused(&format!("bringing up {}", spec.name), e))?;
        // its address: only the wanted /32 stays
        let _dump = self.dumps.lock().await;
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut has = false;
        let mut stale = Vec::new();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| refused("listing addresses", e))?
        {
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if ip == Some(spec.addr) && a.header.prefix_len == 32 {
                has = true;
            } else if ip.is_some() {
                stale.push(a);
            }
        }
        for a in stale {
            let _ = self.handle.address().del(a).execute().await;
        }
        if !has {
            self.handle
                .address()
                .add(index, IpAddr::V4(spec.addr), 32)
                .execute()
                .await
                .map_err(|e| refused(&format!("addressing {}", spec.name), e))?;
        }
        Ok(VxlanLink {
            index,
            mac: link_mac(&link),
        })
    }

    async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        if let Some(l) = self.link_by_name(name).await? {
            self.handle
                .link()
                .del(l.header.index)
                .execute()
                .await
                .map_err(|e| refused(&format!("deleting {name}"), e))?;
        }
        Ok(())
    }

    async fn ensure_local_address(&self, name: &str, addr: IpAddr) -> Result<(), NetError> {
        let link = match self.link_by_name(name).await? {
            Some(l) => l,
            None => {
                let msg = rtnetlink::LinkDummy::new(name).up().build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => self
                        .link_by_name(name)
                        .await?
                        .ok_or_else(|| refused(&format!("device {name}"), "gone after creation"))?,
                    // EOPNOTSUPP: a kernel without dummy devices; loopback holds it
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -95 => {
                        tracing::debug!(
                            device = name,
                            "no dummy devices in this kernel: the address goes on lo"
                        );
                        self.link_by_name("lo")
                            .await?
                            .ok_or_else(|| refused("device lo", "absent"))?
                    }
                    Err(e) => return Err(refused(&format!("creating device {name}"), e)),
                }
            }
        };
        let index = link.header.index;
        let up = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(up)
            .execute()
            .await
            .map_err(|e| refused(&format!("bringing up {name}"), e))?;
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let _dump = self.dumps.lock().await;
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| refused("listing addresses", e))?
        {
            if a.attributes.contains(&AddressAttribute::Address(addr)) {
                return Ok(());
            }
        }
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            // EEXIST: another agent on this machine added it a moment ago
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -17 => Ok(()),
            Err(e) => Err(refused(&format!("adding {addr} to {name}"), e)),
        }
    }

    async fn routes(&self) -> Result<Vec<Route>, NetError> {
        let mut out = Vec::new();
        let req = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        let _dump = self.dumps.lock().await;
        let mut routes = self.handle.route().get(req).execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(|e| refused("listing routes", e))?
        {
            if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                || r.header.address_family != AddressFamily::Inet
            {
                continue;
            }
            let mut route = Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: r.header.destination_prefix_length,
                gateway: Ipv4Addr::UNSPECIFIED,
                dev: 0,
                onlink: r.header.flags.contains(RouteFlags::Onlink),
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = *ip,
                    RouteAttribute::Oif(i) => route.dev = *i,
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }

    async fn replace_route(&self, r: &Route) -> Result<(), NetError> {
        let mut b = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst, r.prefix)
            .gateway(r.gateway)
            .output_interface(r.dev)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Universe);
        if r.onlink {
            b = b.onlink();
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| refused(&format!("route to {}/{}", r.dst, r.prefix), e))
    }

    async fn delete_route(&self, r: &Route) -> Result<(), NetError> {
        let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst, r.prefix)
            .gateway(r.gateway)
            .output_interface(r.dev)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            // ESRCH: already gone
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -3 => Ok(()),
            Err(e) => Err(refused(
                &format!("deleting the route to {}/{}", r.dst, r.prefix),
                e,
            )),
        }
    }

    async fn neighbours(&self, dev: u32) -> Result<Vec<Neigh>, NetError> {
        Ok(self
            .permanent(dev, AddressFamily::Inet, "listing neighbours")
            .await?
            .into_iter()
            .map(|(ip, mac)| Neigh { dev, ip, mac })
            .collect())
    }

    async fn replace_neighbour(&self, n: &Neigh) -> Result<(), NetError> {
        self.handle
            .neighbours()
            .add(n.dev, IpAddr::V4(n.ip))
            .link_layer_address(&n.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| refused(&format!("ARP entry for {}", n.ip), e))
    }

    async fn delete_neighbour(&self, n: &Neigh) -> Result<(), NetError> {
        let mut req = self.handle.neighbours().add(n.dev, IpAddr::V4(n.ip));
        let msg = req.message_mut().clone();
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -2 => Ok(()),
            Err(e) => Err(refused(&format!("deleting the ARP entry {}", n.ip), e)),
        }
    }

    async fn fdb(&self, dev: u32) -> Result<Vec<Fdb>, NetError> {
        Ok(self
            .permanent(dev, AddressFamily::Bridge, "listing forwarding entries")
            .await?
            .into_iter()
            .map(|(dst, mac)| Fdb { dev, mac, dst })
            .collect())
    }

    async fn replace_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        self.handle
            .neighbours()
            .add_bridge(f.dev, &f.mac)
            .destination(IpAddr::V4(f.dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| refused(&format!("forwarding entry to {}", f.dst), e))
    }

    async fn delete_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        let mut req = self
            .handle
            .neighbours()
            .add_bridge(f.dev, &f.mac)
            .destination(IpAddr::V4(f.dst))
            .flags(NeighbourFlags::Own);
        let msg = req.message_mut().clone();
        match self.handle.neighbours().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -2 => Ok(()),
            Err(e) => Err(refused(
                &format!("deleting the forwarding entry {}", f.dst),
                e,
            )),
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}
