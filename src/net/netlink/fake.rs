//! Routing state in memory, for unit tests above the netlink seam.

use super::{Fdb, Iface, Links, Neigh, Route, VxlanLink, VxlanSpec};
use crate::net::NetError;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

/// Routing state in memory, for unit tests of the overlay's reconciliation.
#[derive(Default)]
pub struct FakeLinks {
    pub ifaces: Mutex<Vec<Iface>>,
    pub vxlan: Mutex<Option<(VxlanSpec, VxlanLink)>>,
    pub routes: Mutex<BTreeSet<Route>>,
    pub neighbours: Mutex<BTreeSet<Neigh>>,
    pub fdb: Mutex<BTreeSet<Fdb>>,
    /// Every change made, in order (`+route …`, `-neigh …`), for assertions.
    pub log: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeLinks {
    fn record(&self, s: String) {
        lock(&self.log).push(s);
    }
}

#[async_trait::async_trait]
impl Links for FakeLinks {
    async fn interfaces(&self) -> Result<Vec<Iface>, NetError> {
        Ok(lock(&self.ifaces).clone())
    }
    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanLink, NetError> {
        let mut v = lock(&self.vxlan);
        if let Some((s, l)) = v.as_ref() {
            if s == spec {
                return Ok(l.clone());
            }
        }
        let link = VxlanLink {
            index: 100,
            mac: [0x02, 0, 0, 0, 0, spec.local.octets()[3]],
        };
        *v = Some((spec.clone(), link.clone()));
        self.record(format!("+vxlan {}", spec.name));
        Ok(link)
    }
    async fn delete_link(&self, name: &str) -> Result<(), NetError> {
        let mut v = lock(&self.vxlan);
        if v.as_ref().is_some_and(|(s, _)| s.name == name) {
            *v = None;
            self.record(format!("-link {name}"));
        }
        Ok(())
    }
    async fn ensure_local_address(&self, name: &str, addr: IpAddr) -> Result<(), NetError> {
        self.record(format!("+local {name} {addr}"));
        Ok(())
    }
    async fn routes(&self) -> Result<Vec<Route>, NetError> {
        Ok(lock(&self.routes).iter().cloned().collect())
    }
    async fn replace_route(&self, r: &Route) -> Result<(), NetError> {
        let mut routes = lock(&self.routes);
        routes.retain(|x| (x.dst, x.prefix) != (r.dst, r.prefix));
        routes.insert(r.clone());
        self.record(format!("+route {}/{} via {}", r.dst, r.prefix, r.gateway));
        Ok(())
    }
    async fn delete_route(&self, r: &Route) -> Result<(), NetError> {
        lock(&self.routes).remove(r);
        self.record(format!("-route {}/{}", r.dst, r.prefix));
        Ok(())
    }
    async fn neighbours(&self, dev: u32) -> Result<Vec<Neigh>, NetError> {
        Ok(lock(&self.neighbours)
            .iter()
            .filter(|n| n.dev == dev)
            .cloned()
            .collect())
    }
    async fn replace_neighbour(&self, n: &Neigh) -> Result<(), NetError> {
        let mut all = lock(&self.neighbours);
        all.retain(|x| (x.dev, x.ip) != (n.dev, n.ip));
        all.insert(n.clone());
        self.record(format!("+neigh {}", n.ip));
        Ok(())
    }
    async fn delete_neighbour(&self, n: &Neigh) -> Result<(), NetError> {
        lock(&self.neighbours).remove(n);
        self.record(format!("-neigh {}", n.ip));
        Ok(())
    }
    async fn fdb(&self, dev: u32) -> Result<Vec<Fdb>, NetError> {
        Ok(lock(&self.fdb)
            .iter()
            .filter(|f| f.dev == dev)
            .cloned()
            .collect())
    }
    async fn replace_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        let mut all = lock(&self.fdb);
        all.retain(|x| (x.dev, x.mac) != (f.dev, f.mac));
        all.insert(f.clone());
        self.record(format!("+fdb {}", f.dst));
        Ok(())
    }
    async fn delete_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        lock(&self.fdb).remove(f);
        self.record(format!("-fdb {}", f.dst));
        Ok(())
    }
}
