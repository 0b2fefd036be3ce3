//! `skua bench proxy`: the service proxy's nftables programming at scale, in a network
//! namespace of its own (no packet leaves it): a full sync of N services × E
//! endpoints, and one incremental change (an endpoint added to one service) with all
//! N present. Medians over rounds. The anchors (kube-proxy's nftables mode, KEP-3866)
//! are quoted in BENCHMARKS.md: kube-proxy needs Go, which this machine cannot build.

use crate::net::{ConntrackCli, Netns, NftCli};
use crate::proxy::Proxier;
use crate::proxy::model::{Endpoint, ServicePort};
use clap::Args;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ProxyBenchArgs {
    /// Service counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub services: Vec<usize>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: usize,
    /// Rounds per size; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Service port `i` with `endpoints` endpoints (one more with `extra`); shared with
/// `skua bench net`.
pub(super) fn port(i: usize, endpoints: usize, extra: bool) -> ServicePort {
    let n = endpoints + usize::from(extra);
    ServicePort {
        key: format!("bench/svc{i}/tcp/http"),
        protocol: "tcp",
        cluster_ips: vec![
            format!("10.43.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .unwrap_or([10, 43, 0, 1].into()),
        ],
        port: 80,
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        affinity_seconds: None,
        external_local: false,
        internal_local: false,
        endpoints: (0..n)
            .map(|e| Endpoint {
                ip: [10, 42, (i % 250) as u8, (e + 1) as u8].into(),
                port: 8080 + (i / 250) as u16,
                ready: true,
                serving: true,
                terminating: false,
                local: false,
            })
            .collect(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(a: ProxyBenchArgs) -> anyhow::Result<()> {
    let name = format!("skua-bench-proxy-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()?
        .success();
    anyhow::ensure!(ok, "cannot create network namespace {name} (run as root)");
    let path = std::path::PathBuf::from(format!("/var/run/netns/{name}"));
    let result = (|| -> anyhow::Result<()> {
        println!(
            "services  endpoints  full sync (median)  one change (median)  bytes full / change"
        );
        for &n in &a.services {
            let (mut full, mut change) = (Vec::new(), Vec::new());
            let (mut full_bytes, mut change_bytes) = (0, 0);
            for _ in 0..a.rounds.max(1) {
                let mut p = Proxier::new(
                    Arc::new(NftCli(Netns(Some(path.clone())))),
                    Arc::new(ConntrackCli(Netns(Some(path.clone())))),
                );
                let updates: Vec<_> = (0..n)
                    .map(|i| (format!("bench/svc{i}"), vec![port(i, a.endpoints, false)]))
                    .collect();
                let t = Instant::now();
                let r = p.sync(updates)?;
                full.push(t.elapsed());
                full_bytes = r.bytes;
                let t = Instant::now();
                let r = p.sync(vec![(
                    format!("bench/svc{}", n / 2),
                    vec![port(n / 2, a.endpoints, true)],
                )])?;
                change.push(t.elapsed());
                change_bytes = r.bytes;
                anyhow::ensure!(!r.full, "the change was not incremental");
                p.remove_table()?;
            }
            println!(
                "{n:>8}  {:>9}  {:>18.1?}  {:>19.2?}  {full_bytes} / {change_bytes}",
                a.endpoints,
                median(full),
                median(change)
            );
        }
        Ok(())
    })();
    let _ = Command::new("ip").args(["netns", "delete", &name]).status();
    result
}
