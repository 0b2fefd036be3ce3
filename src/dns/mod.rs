//! Built-in cluster DNS (no CoreDNS pod or image): every agent answers on the
//! `--cluster-dns` address, which it holds as a local address on a dummy device
//! (`skua-dns`, as node-local DNS caches do), so pods reach the resolver of their own
//! node. Cluster names are answered from the agent's shared informer caches
//! (`records.rs`), everything else is relayed to the node's upstream resolvers (the
//! `nameserver`s of `--resolv-conf`). UDP and TCP, with truncation at the client's size.

pub mod records;
pub mod wire;

use crate::net::netlink::Links;
use crate::runtime::informer::Informer;
use records::{ClusterView, Resolution};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The dummy device that holds the cluster DNS address.
pub const DEVICE: &str = "skua-dns";
/// How long an upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the DNS server listens and what it knows.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    pub listen: IpAddr,
    pub domain: String,
    pub resolv_conf: PathBuf,
}

/// The cluster as the agent's informers hold it.
pub struct InformerView {
    pub services: Arc<Informer>,
    pub slices: Arc<Informer>,
}

impl ClusterView for InformerView {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.services.get(&format!("{namespace}/{name}"))
    }
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<Value>> {
        self.slices
            .list(Some(namespace))
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .collect()
    }
    fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Value>> {
        let ip = ip.to_string();
        self.services.list(None).into_iter().find(|s| {
            s["spec"]["clusterIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c.as_str() == Some(ip.as_str()))
                || s["spec"]["clusterIP"].as_str() == Some(ip.as_str())
        })
    }
}

/// The `nameserver` lines of a resolv.conf, leaving out `own` (a node whose resolv.conf
/// names the cluster DNS would otherwise ask itself in a loop).
pub fn upstreams(resolv_conf: &str, own: IpAddr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|text| {
            let (ip, zone) = match text.split_once('%') {
                Some((ip, zone)) => (ip, Some(zone)),
                None => (text, None),
            };
            let ip: IpAddr = ip.parse().ok()?;
            if ip == own {
                return None;
            }
            Some(match (ip, zone) {
                // a link-local upstream is reached through its interface
                (IpAddr::V6(v6), Some(zone)) => {
                    let index = std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex"))
                        .ok()
                        .and_then(|i| i.trim().parse().ok())
                        .or_else(|| zone.parse().ok())?;
                    SocketAddr::V6(std::net::SocketAddrV6::new(v6, 53, 0, index))
                }
                (ip, _) => SocketAddr::new(ip, 53),
            })
        })
        .collect()
}

/// The server: what answers a query.
pub struct Resolver {
    pub view: Arc<dyn ClusterView + Send + Sync>,
    pub domain: String,
    pub upstreams: Vec<SocketAddr>,
}

impl Resolver {
    /// The answer to one message (`udp`: over UDP, so at most the client's size).
    pub async fn handle(&self, msg: &[u8], udp: bool) -> Option<Vec<u8>> {
        let q = match wire::parse_query(msg) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(error = %e, "dns: a query that cannot be read");
                return wire::error_reply(msg, wire::RCODE_FORMERR);
            }
        };
        if q.opcode != 0 {
            return Some(wire::Answer::bare(&q, wire::RCODE_NOTIMP).encode(q.udp_size));
        }
        let resolution = if q.qclass == wire::CLASS_IN {
            records::resolve(self.view.as_ref(), &self.domain, &q.name, q.qtype)
        } else {
            Resolution::Forward
        };
        match resolution {
            Resolution::Answer {
                rcode,
                answers,
                additional,
                negative,
            } => {
                let authority = if negative {
                    vec![records::soa(&self.domain)]
                } else {
                    vec![]
                };
                let a = wire::Answer {
                    query: &q,
                    rcode,
                    authoritative: true,
                    answers,
                    authority,
                    additional,
                };
                Some(a.encode(if udp { q.udp_size } else { 65535 }))
            }
            Resolution::Forward => match self.forward(msg, udp).await {
                Some(reply) => Some(reply),
                None => Some(wire::Answer::bare(&q, wire::RCODE_SERVFAIL).encode(q.udp_size)),
            },
        }
    }

    /// Relays a query to the upstream resolvers in turn; the first answer wins.
    async fn forward(&self, msg: &[u8], udp: bool) -> Option<Vec<u8>> {
        for up in &self.upstreams {
            let attempt = async {
                if udp {
                    let local: SocketAddr = if up.is_ipv4() {
                        ([0, 0, 0, 0], 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let sock = UdpSocket::bind(local).await.ok()?;
                    sock.connect(up).await.ok()?;
                    sock.send(msg).await.ok()?;
                    // the upstream answers within the size the query carries
                    let mut buf = vec![0u8; 4096 + 512];
                    loop {
                        let n = sock.recv(&mut buf).await.ok()?;
                        // only the answer to this query (same id)
                        if n >= 2 && buf[..2] == msg[..2] {
                            buf.truncate(n);
                            return Some(buf);
                        }
                    }
                } else {
                    let mut s = TcpStream::connect(up).await.ok()?;
                    s.write_all(&(msg.len() as u16).to_be_bytes()).await.ok()?;
                    s.write_all(msg).await.ok()?;
                    let len = s.read_u16().await.ok()? as usize;
                    let mut buf = vec![0u8; len];
                    s.read_exact(&mut buf).await.ok()?;
                    Some(buf)
                }
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Some(reply)) => return Some(reply),
                _ => tracing::debug!(upstream = %up, "dns: upstream did not answer"),
            }
        }
        None
    }
}

/// Serves cluster DNS until `stop`. A node that cannot hold the address or bind the
/// port (another agent on this machine already serves it) says so and leaves it to
/// that one.
pub async fn run(
    cfg: DnsConfig,
    view: Arc<dyn ClusterView + Send + Sync>,
    links: Arc<dyn Links>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let addr = SocketAddr::new(cfg.listen, 53);
    // the address and the port, retried until they can be had (another agent on this
    // machine may hold them; a resolver of the machine may hold port 53 on all
    // addresses for a while)
    let mut backoff = Duration::from_secs(1);
    let mut said = false;
    let (udp, tcp) = loop {
        let attempt = async {
            links
                .ensure_local_address(DEVICE, cfg.listen)
                .await
                .map_err(|e| e.to_string())?;
            let udp = UdpSocket::bind(addr).await.map_err(|e| e.to_string())?;
            let tcp = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((Arc::new(udp), tcp))
        };
        match attempt.await {
            Ok(sockets) => break sockets,
            Err(e) => {
                if !said {
                    tracing::warn!(address = %addr, error = %e, "dns: cannot serve the cluster DNS address yet (another agent on this machine serves it?); retrying");
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
    let resolv = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let upstreams = upstreams(&resolv, cfg.listen);
    if upstreams.is_empty() {
        tracing::warn!(resolv_conf = %cfg.resolv_conf.display(), "dns: no upstream nameserver; names outside the cluster will fail");
    }
    tracing::info!(address = %addr, domain = %domain, upstreams = ?upstreams, "dns: serving cluster DNS");
    let resolver = Arc::new(Resolver {
        view,
        domain,
        upstreams,
    });
    // bounded work: queries beyond these wait in the socket or are dropped (resolvers
    // ask again), so a flood cannot take the agent's memory
    let udp_slots = Arc::new(tokio::sync::Semaphore::new(256));
    let tcp_slots = Arc::new(tokio::sync::Semaphore::new(64));
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                let Ok(permit) = udp_slots.clone().try_acquire_owned() else { continue };
                let msg = buf[..n].to_vec();
                let (resolver, udp) = (resolver.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(reply) = resolver.handle(&msg, true).await {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                    drop(permit);
                });
            }
            r = tcp.accept() => {
                let Ok((stream, _)) = r else { continue };
                let Ok(permit) = tcp_slots.clone().try_acquire_owned() else { continue };
                let resolver = resolver.clone();
                tokio::spawn(async move {
                    serve_tcp(stream, resolver).await;
                    drop(permit);
                });
            }
            _ = stop.changed() => break,
        }
    }
}

/// DNS over TCP: length-prefixed messages until the client closes or idles.
async fn serve_tcp(mut s: TcpStream, resolver: Arc<Resolver>) {
    loop {
        // a whole message within the idle time, or the connection goes
        let read = async {
            let len = s.read_u16().await? as usize;
            let mut msg = vec![0u8; len];
            s.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(msg)
        };
        let msg = match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(m)) => m,
            _ => return,
        };
        let Some(reply) = resolver.handle(&msg, false).await else {
            return;
        };
        if s.write_all(&(reply.len() as u16).to_be_bytes())
            .await
            .is_err()
            || s.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl ClusterView for Empty {
        fn service(&self, _: &str, _: &str) -> Option<Arc<Value>> {
            None
        }
        fn slices(&self, _: &str, _: &str) -> Vec<Arc<Value>> {
            vec![]
        }
        fn service_by_ip(&self, _: IpAddr) -> Option<Arc<Value>> {
            None
        }
    }

    #[test]
    fn upstreams_come_from_resolv_conf_without_ourselves() {
        let conf = "# comment\nnameserver 10.43.0.10\nnameserver 192.0.2.53\nsearch example.org\nnameserver fe80::1%eth0\n";
        let up = upstreams(conf, "10.43.0.10".parse().unwrap());
        assert_eq!(up[0], "192.0.2.53:53".parse::<SocketAddr>().unwrap());
        assert_eq!(
            up.len(),
            1 + usize::from(std::path::Path::new("/sys/class/net/eth0").exists())
        );
        // a link-local upstream keeps its interface (lo here: every machine has one)
        let up = upstreams("nameserver fe80::1%lo\n", "10.43.0.10".parse().unwrap());
        match up.as_slice() {
            [SocketAddr::V6(v6)] => assert!(v6.scope_id() > 0, "{v6}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn cluster_misses_are_authoritative_and_bad_queries_get_formerr() {
        let r = Resolver {
            view: Arc::new(Empty),
            domain: "cluster.local".into(),
            upstreams: vec![],
        };
        let q = wire::tests::query(5, "nope.default.svc.cluster.local", wire::TYPE_A, None);
        let reply = r.handle(&q, true).await.unwrap();
        let (rcode, flags, answers) = wire::tests::decode(&reply);
        assert_eq!((rcode, answers.len()), (wire::RCODE_NXDOMAIN, 0));
        assert!(flags & 0x0400 != 0);
        // the SOA rides in the authority section
        assert_eq!(u16::from_be_bytes([reply[8], reply[9]]), 1);
        let reply = r
            .handle(&[0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0], true)
            .await
            .unwrap();
        assert_eq!(reply[3] & 0xf, wire::RCODE_FORMERR);
        // outside the cluster with no upstream: SERVFAIL, at once
        let q = wire::tests::query(6, "example.org", wire::TYPE_A, None);
        let reply = r.handle(&q, true).await.unwrap();
        assert_eq!(reply[3] & 0xf, wire::RCODE_SERVFAIL);
    }

    #[tokio::test]
    async fn names_outside_the_cluster_are_relayed_upstream() {
        // an upstream on loopback that answers every query with its id and 192.0.2.1
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, peer) = up.recv_from(&mut buf).await.unwrap();
            let q = wire::parse_query(&buf[..n]).unwrap();
            let a = wire::Answer {
                query: &q,
                rcode: 0,
                authoritative: false,
                answers: vec![wire::Record {
                    name: q.name.clone(),
                    ttl: 60,
                    data: wire::RData::A("192.0.2.1".parse().unwrap()),
                }],
                authority: vec![],
                additional: vec![],
            };
            up.send_to(&a.encode(512), peer).await.unwrap();
        });
        let r = Resolver {
            view: Arc::new(Empty),
            domain: "cluster.local".into(),
            upstreams: vec![addr],
        };
        let reply = r
            .handle(
                &wire::tests::query(77, "example.org", wire::TYPE_A, None),
                true,
            )
            .await
            .unwrap();
        let (rcode, _, answers) = wire::tests::decode(&reply);
        assert_eq!((reply[0], reply[1], rcode), (0, 77, 0));
        assert_eq!(answers[0].2, vec![192, 0, 2, 1]);
    }
}
