//! Hidden helpers `skua bench net` runs inside the network namespaces it makes (with
//! `nsenter`): a TCP sink, a connect-latency probe, a throughput source, and the
//! overlay's own device and route programming for static peers (the agent's code path,
//! without a cluster).

use clap::Args;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Address to accept on; every connection is read to its end.
    #[arg(long)]
    pub listen: SocketAddr,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Where to connect.
    #[arg(long)]
    pub to: SocketAddr,
    /// New connections to time.
    #[arg(long, default_value_t = 500)]
    pub count: usize,
}

#[derive(Args, Debug)]
pub struct BlastArgs {
    #[arg(long)]
    pub to: SocketAddr,
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
}

#[derive(Args, Debug)]
pub struct OverlayApplyArgs {
    /// vxlan, host-gw or auto.
    #[arg(long)]
    pub backend: String,
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    #[arg(long)]
    pub pod_cidr: String,
    /// Peers as NAME=POD_CIDR@NODE_IP[@VTEP_MAC].
    #[arg(long)]
    pub peer: Vec<String>,
}

/// Accepts connections forever (until killed), reading each to its end in a thread.
pub fn sink(a: SinkArgs) -> anyhow::Result<()> {
    let l = TcpListener::bind(a.listen)?;
    println!("listening");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

/// Times `count` new connections (SYN to established) and prints the median and
/// 99th percentile in microseconds.
pub fn connect(a: ConnectArgs) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(a.count);
    for _ in 0..a.count {
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&a.to, Duration::from_secs(2))?;
        times.push(t.elapsed());
        drop(s);
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!("{} {}", p(0.5).as_micros(), p(0.99).as_micros());
    Ok(())
}

/// Sends as fast as it can for `seconds`; prints bits per second.
pub fn blast(a: BlastArgs) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&a.to, Duration::from_secs(2))?;
    let buf = vec![0x5au8; 128 * 1024];
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let start = Instant::now();
    let mut sent: u64 = 0;
    while Instant::now() < end {
        s.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{}", (sent as f64 * 8.0 / secs) as u64);
    Ok(())
}

/// Programs this namespace as the agent's overlay would for the given peers; prints
/// the VTEP MAC (empty without a VXLAN device).
pub async fn overlay_apply(a: OverlayApplyArgs) -> anyhow::Result<()> {
    use crate::overlay::plan::{Backend, Net, Peer};
    let backend: Backend = a
        .backend
        .parse()
        .map_err(|e: crate::config::ConfigError| anyhow::anyhow!(e))?;
    let pod_cidr: Net = a
        .pod_cidr
        .parse()
        .map_err(|e: crate::config::ConfigError| anyhow::anyhow!(e))?;
    let links = crate::net::netlink::RtNetlink::connect()?;
    let cluster: Net = "10.42.0.0/16"
        .parse()
        .map_err(|e: crate::config::ConfigError| anyhow::anyhow!(e))?;
    let dev = crate::overlay::setup_device(
        &links,
        "bench",
        backend,
        None,
        Some(a.node_ip),
        pod_cidr,
        cluster,
    )
    .await?;
    let mut peers = Vec::new();
    for p in &a.peer {
        let (name, rest) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--peer {p}: NAME=POD_CIDR@NODE_IP[@MAC]"))?;
        let mut parts = rest.split('@');
        let cidr: Net = parts
            .next()
            .unwrap_or("")
            .parse()
            .map_err(|e: crate::config::ConfigError| anyhow::anyhow!(e))?;
        let ip: Ipv4Addr = parts.next().unwrap_or("").parse()?;
        let mac = parts.next().and_then(crate::net::netlink::parse_mac);
        peers.push(Peer {
            name: name.to_string(),
            pod_cidr: cidr,
            public_ip: ip,
            vtep_mac: mac,
        });
    }
    let want = crate::overlay::plan::desired(&dev.local, &peers);
    anyhow::ensure!(want.problems.is_empty(), "{}", want.problems.join("; "));
    crate::overlay::reconcile(&links, &dev.local, &want).await?;
    println!(
        "{}",
        dev.vxlan
            .map(|v| crate::net::netlink::format_mac(&v.mac))
            .unwrap_or_default()
    );
    Ok(())
}
