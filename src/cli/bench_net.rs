//! `skua bench net`: the data plane, in network namespaces of its own (no packet
//! leaves them). Two nodes joined by a veth pair, each with one pod behind a veth:
//!
//! - first-packet latency to a service (new TCP connections from the pod on node A to
//!   a cluster IP whose endpoint is the pod on node B) with 100 and with 10 000 other
//!   services × 10 endpoints in A's proxy table, against connecting to the pod directly;
//! - TCP throughput pod → pod across the nodes with the overlay's host-gw and vxlan
//!   programming (the agent's own code: `skua debug overlay-apply`), against node → node
//!   over the bare veth.
//!
//! Helpers run inside the namespaces as `skua debug net-*` children through nsenter.

use crate::net::{ConntrackCli, Netns, NftCli};
use crate::proxy::Proxier;
use crate::proxy::model::{Endpoint, ServicePort};
use clap::Args;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct NetBenchArgs {
    /// Other services in the proxy table for the latency runs.
    #[arg(long, value_delimiter = ',', default_value = "100,10000")]
    pub services: Vec<usize>,
    /// New connections timed per run.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Throughput runs per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// The namespaces of one run, deleted (with every helper in them) when dropped.
struct Lab {
    prefix: String,
    children: Vec<Child>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }
    fn path(&self, n: &str) -> std::path::PathBuf {
        format!("/var/run/netns/{}", self.ns(n)).into()
    }
    fn ip(&self, n: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(self.ns(n))
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.ns(n),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
    fn skua(&self, n: &str, args: &[&str]) -> anyhow::Result<Command> {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path(n).display()))
            .arg("--")
            .arg(std::env::current_exe()?)
            .arg("debug")
            .args(args);
        Ok(c)
    }
    /// Runs a helper to its end and returns what it printed.
    fn run(&self, n: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.skua(n, args)?.stderr(Stdio::inherit()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "skua debug {} in {n} failed",
            args.join(" ")
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
    /// Starts a sink and waits until it listens.
    fn sink(&mut self, n: &str, listen: &str) -> anyhow::Result<()> {
        let mut child = self
            .skua(n, &["net-sink", "--listen", listen])?
            .stdout(Stdio::piped())
            .spawn()?;
        if let Some(out) = child.stdout.as_mut() {
            let mut b = [0u8; 10];
            let _ = std::io::Read::read(out, &mut b);
        }
        self.children.push(child);
        Ok(())
    }
    fn sysctl(&self, n: &str, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let ok = Command::new("nsenter")
            .arg(format!("--net={}", self.path(n).display()))
            .args(["--", "sh", "-c", &format!("echo {value} > {path}")])
            .status()?
            .success();
        anyhow::ensure!(ok, "sysctl {key} in {n}");
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["a", "b", "pa", "pb"] {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.ns(n)])
                .status();
        }
    }
}

fn build(lab: &Lab) -> anyhow::Result<()> {
    for n in ["a", "b", "pa", "pb"] {
        let ok = Command::new("ip")
            .args(["netns", "add", &lab.ns(n)])
            .status()?
            .success();
        anyhow::ensure!(
            ok,
            "cannot create network namespace {} (run as root)",
            lab.ns(n)
        );
        lab.ip(n, &["link", "set", "lo", "up"])?;
    }
    lab.ip(
        "a",
        &[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.ns("b"),
        ],
    )?;
    for (node, addr, pod, gw, pod_addr) in [
        ("a", "10.250.0.1/24", "pa", "10.42.0.1", "10.42.0.2/24"),
        ("b", "10.250.0.2/24", "pb", "10.42.1.1", "10.42.1.2/24"),
    ] {
        lab.ip(node, &["addr", "add", addr, "dev", "eth0"])?;
        lab.ip(node, &["link", "set", "eth0", "up"])?;
        lab.ip(
            node,
            &[
                "link",
                "add",
                "pod0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &lab.ns(pod),
            ],
        )?;
        lab.ip(node, &["addr", "add", &format!("{gw}/24"), "dev", "pod0"])?;
        lab.ip(node, &["link", "set", "pod0", "up"])?;
        lab.ip(pod, &["addr", "add", pod_addr, "dev", "eth0"])?;
        lab.ip(pod, &["link", "set", "eth0", "up"])?;
        lab.ip(pod, &["route", "add", "default", "via", gw])?;
        lab.sysctl(node, "net.ipv4.ip_forward", "1")?;
    }
    Ok(())
}

fn overlay(lab: &Lab, backend: &str, macs: (&str, &str)) -> anyhow::Result<(String, String)> {
    let peer = |name: &str, cidr: &str, ip: &str, mac: &str| {
        if mac.is_empty() {
            format!("{name}={cidr}@{ip}")
        } else {
            format!("{name}={cidr}@{ip}@{mac}")
        }
    };
    let a = lab.run(
        "a",
        &[
            "overlay-apply",
            "--backend",
            backend,
            "--node-ip",
            "10.250.0.1",
            "--pod-cidr",
            "10.42.0.0/24",
            "--peer",
            &peer("b", "10.42.1.0/24", "10.250.0.2", macs.1),
        ],
    )?;
    let b = lab.run(
        "b",
        &[
            "overlay-apply",
            "--backend",
            backend,
            "--node-ip",
            "10.250.0.2",
            "--pod-cidr",
            "10.42.1.0/24",
            "--peer",
            &peer("a", "10.42.0.0/24", "10.250.0.1", macs.0),
        ],
    )?;
    Ok((a, b))
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(a: NetBenchArgs) -> anyhow::Result<()> {
    let mut lab = Lab {
        prefix: format!("skua-bench-net-{}", std::process::id()),
        children: Vec::new(),
    };
    build(&lab)?;
    // the pods reach each other by host-gw for the latency runs
    overlay(&lab, "host-gw", ("", ""))?;
    lab.sink("pb", "10.42.1.2:8080")?;
    println!(
        "first-packet latency, pod on node A -> pod on node B (new TCP connections, {} per run)",
        a.connections
    );
    println!("path                                   services  sync      connect p50  connect p99");
    let connect = |to: &str| {
        let count = a.connections.to_string();
        lab.run("pa", &["net-connect", "--to", to, "--count", &count])
    };
    let direct = connect("10.42.1.2:8080")?;
    let (p50, p99) = direct.split_once(' ').unwrap_or(("?", "?"));
    println!(
        "direct to the pod IP                   {:>8}  {:>8}  {p50:>9} µs  {p99:>9} µs",
        "-", "-"
    );
    let target = ServicePort {
        key: "bench/target/tcp/http".into(),
        cluster_ips: vec![[10, 43, 255, 1].into()],
        endpoints: vec![Endpoint {
            ip: [10, 42, 1, 2].into(),
            port: 8080,
            ready: true,
            serving: true,
            terminating: false,
            local: false,
        }],
        ..super::bench_proxy::port(0, 0, false)
    };
    for &n in &a.services {
        let mut p = Proxier::new(
            Arc::new(NftCli(Netns(Some(lab.path("a"))))),
            Arc::new(ConntrackCli(Netns(Some(lab.path("a"))))),
        );
        let mut updates: Vec<_> = (0..n)
            .map(|i| {
                (
                    format!("bench/svc{i}"),
                    vec![super::bench_proxy::port(i, 10, false)],
                )
            })
            .collect();
        updates.push(("bench/target".into(), vec![target.clone()]));
        let t = Instant::now();
        p.sync(updates)?;
        let sync = t.elapsed();
        let out = connect("10.43.255.1:80")?;
        let (p50, p99) = out.split_once(' ').unwrap_or(("?", "?"));
        println!(
            "cluster IP through the proxy           {n:>8}  {:>8.1?}  {p50:>9} µs  {p99:>9} µs",
            Duration::from_millis(sync.as_millis() as u64)
        );
        p.remove_table()?;
    }
    // throughput: bare veth, then the overlay's host-gw and vxlan
    println!();
    println!(
        "TCP throughput, {} s per run, median of {}",
        a.seconds, a.rounds
    );
    println!("path                                   Gbit/s   vs bare veth");
    lab.sink("b", "10.250.0.2:9000")?;
    lab.sink("pb", "10.42.1.2:9001")?;
    let blast = |lab: &Lab, from: &str, to: &str| -> anyhow::Result<u64> {
        let mut v = Vec::new();
        for _ in 0..a.rounds.max(1) {
            v.push(
                lab.run(
                    from,
                    &["net-blast", "--to", to, "--seconds", &a.seconds.to_string()],
                )?
                .parse::<u64>()?,
            );
        }
        Ok(median_u64(v))
    };
    let raw = blast(&lab, "a", "10.250.0.2:9000")?;
    let line = |name: &str, bps: u64| {
        println!(
            "{name:<38} {:>7.2}   {:>5.2}×",
            bps as f64 / 1e9,
            bps as f64 / raw as f64
        );
    };
    line("node A -> node B, bare veth", raw);
    let hostgw = blast(&lab, "pa", "10.42.1.2:9001")?;
    line("pod -> pod, host-gw", hostgw);
    // vxlan: the devices first (their MACs), then the peers; pods at the device's MTU
    let mac_a = lab.run(
        "a",
        &[
            "overlay-apply",
            "--backend",
            "vxlan",
            "--node-ip",
            "10.250.0.1",
            "--pod-cidr",
            "10.42.0.0/24",
        ],
    )?;
    let mac_b = lab.run(
        "b",
        &[
            "overlay-apply",
            "--backend",
            "vxlan",
            "--node-ip",
            "10.250.0.2",
            "--pod-cidr",
            "10.42.1.0/24",
        ],
    )?;
    overlay(&lab, "vxlan", (&mac_a, &mac_b))?;
    for (node, pod) in [("a", "pa"), ("b", "pb")] {
        lab.ip(node, &["link", "set", "pod0", "mtu", "1450"])?;
        lab.ip(pod, &["link", "set", "eth0", "mtu", "1450"])?;
    }
    let vxlan = blast(&lab, "pa", "10.42.1.2:9001")?;
    line("pod -> pod, vxlan (flannel.1, MTU 1450)", vxlan);
    Ok(())
}
