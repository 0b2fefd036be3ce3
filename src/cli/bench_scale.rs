//! `skua bench scale`: a real `skua server` process and `skua sim` nodes (separate
//! processes, as kwok would be), then Deployments with many replicas; it reports the
//! time until every pod is running and ready, the scheduler's throughput, the API's
//! p99 latency during the run (from the server's own `/metrics`), and the server's peak
//! resident memory.

use crate::client::{ApiClient, Remote};
use crate::runtime::informer::Informer;
use clap::Args;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ScaleBenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Deployments to create.
    #[arg(long, default_value_t = 30)]
    pub deployments: usize,
    /// Replicas of each.
    #[arg(long, default_value_t = 100)]
    pub replicas: usize,
    /// Scratch directory (default: a new one under the system temp dir), removed after.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// p99 of `apiserver_request_duration_seconds` over the non-watch verbs, from the
/// cumulative histogram buckets of two scrapes (the run's share only).
fn p99(before: &str, after: &str) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let mut by_le: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_duration_seconds_bucket{"))
        {
            if line.contains("verb=\"WATCH\"") || line.contains("verb=\"CONNECT\"") {
                continue;
            }
            let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
                continue;
            };
            let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            *by_le.entry(le.to_string()).or_default() += v;
        }
        let mut out: Vec<(f64, f64)> = by_le
            .into_iter()
            .map(|(le, v)| {
                (
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::INFINITY)
                    },
                    v,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    };
    let (b, a) = (buckets(before), buckets(after));
    let diff: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, v)| {
            (
                *le,
                v - b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1),
            )
        })
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    diff.iter()
        .find(|(_, v)| *v >= total * 0.99)
        .map(|(le, _)| *le)
}

type Startups =
    Arc<std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<Instant>)>>>;

/// When each pod was first seen and first seen running and ready.
fn watch_startups(pods: &Informer) -> Startups {
    let seen: Startups = Arc::default();
    let mut changes = pods.subscribe();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(c) = changes.recv().await {
            let Some(p) = c.new else { continue };
            let now = Instant::now();
            let mut seen = out.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry(c.key).or_insert((now, None));
            if entry.1.is_none() && crate::controllers::replicaset::ready(&p) {
                entry.1 = Some(now);
            }
        }
    });
    seen
}

fn percentiles(mut v: Vec<Duration>) -> Option<(Duration, Duration)> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.5), at(0.99)))
}

fn startup_percentiles(
    seen: &Startups,
    which: impl Fn(&str) -> bool,
) -> Option<(Duration, Duration)> {
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    percentiles(
        seen.iter()
            .filter(|(k, _)| which(k))
            .filter_map(|(_, (first, ready))| ready.map(|r| r - *first))
            .collect(),
    )
}

async fn metrics(client: &ApiClient) -> String {
    match client
        .send(http::Method::GET, "/metrics", "text/plain", None)
        .await
    {
        Ok(resp) => {
            use http_body_util::BodyExt;
            resp.into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Killed> {
    let out = std::fs::File::create(log)?;
    Ok(Killed(
        Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?,
    ))
}

pub async fn run(a: ScaleBenchArgs) -> anyhow::Result<()> {
    let scratch = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("skua-bench-scale-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let kubeconfig = scratch.join("kubeconfig.yaml");
    let config = scratch.join("config.yaml");
    std::fs::write(&config, "")?;
    let s = |p: &Path| p.display().to_string();
    let server = spawn(
        &[
            "server",
            "--config",
            &s(&config),
            "--data-dir",
            &s(&scratch.join("data")),
            "--write-kubeconfig",
            &s(&kubeconfig),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port,
            "--disable-agent",
            // a /24 per node: 4,096 of them (the default /16 has 256)
            "--cluster-cidr",
            "10.128.0.0/12",
        ],
        &scratch.join("server.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not start; see {}",
            scratch.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = ApiClient::remote(
        Arc::new(Remote::from_kubeconfig(&kubeconfig)?),
        "skua-bench",
    );
    let _sim = spawn(
        &[
            "sim",
            "--kubeconfig",
            &s(&kubeconfig),
            "--nodes",
            &a.nodes.to_string(),
            "--pods-per-node",
            "110",
            "--cpu",
            "32",
            "--memory",
            "256Gi",
        ],
        &scratch.join("sim.log"),
    )?;
    let nodes = Informer::start(client.clone(), &crate::api::registry::NODES, None);
    nodes.synced().await;
    let started = Instant::now();
    while nodes.list(None).len() < a.nodes {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(a.timeout),
            "the nodes did not register"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let registered = started.elapsed();
    let pods = Informer::start(client.clone(), &crate::api::registry::PODS, None);
    pods.synced().await;
    let seen = watch_startups(&pods);
    let before = metrics(&client).await;
    let total = a.deployments * a.replicas;
    let t0 = Instant::now();
    for i in 0..a.deployments {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("load-{i}"), "namespace": "default"},
            "spec": {"replicas": a.replicas, "selector": {"matchLabels": {"app": format!("load-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("load-{i}")}},
                                  "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
        });
        client
            .create("/apis/apps/v1/namespaces/default/deployments", &d)
            .await?;
    }
    let (mut first_bound, mut last_bound) = (None, None);
    let mut bound_seen = 0usize;
    let all_ready = loop {
        let list = pods.list(Some("default"));
        let bound = list
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            })
            .count();
        if bound > 0 && first_bound.is_none() {
            first_bound = Some(t0.elapsed());
        }
        if bound > bound_seen {
            bound_seen = bound;
            last_bound = Some(t0.elapsed());
        }
        let ready = list
            .iter()
            .filter(|p| {
                crate::controllers::replicaset::ready(p)
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .count();
        if ready >= total {
            break t0.elapsed();
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(a.timeout),
            "only {ready} of {total} pods became ready in {} s",
            a.timeout
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let after = metrics(&client).await;
    let saturation = startup_percentiles(&seen, |k| k.starts_with("default/load-"));
    // then, as upstream's density test, pods created one at a time into the loaded
    // cluster: their start-up latency is the SLO's measure
    let latency_pods = 100;
    let mut created = Vec::new();
    for i in 0..latency_pods {
        let name = format!("latency-{i}");
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
        let at = Instant::now();
        client.create("/api/v1/namespaces/default/pods", &p).await?;
        created.push((format!("default/{name}"), at));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let latencies = loop {
        let got: Vec<Duration> = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            created
                .iter()
                .filter_map(|(k, at)| seen.get(k).and_then(|(_, r)| *r).map(|r| r - *at))
                .collect()
        };
        if got.len() == created.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rss = peak_rss_mib(server.0.id());
    let bind_span = last_bound
        .unwrap_or(all_ready)
        .saturating_sub(first_bound.unwrap_or_default());
    let throughput = total as f64 / bind_span.as_secs_f64().max(0.001);
    println!(
        "skua bench scale: {} simulated nodes, {} Deployments × {} replicas = {total} pods (server and sim are separate processes on this machine)\n",
        a.nodes, a.deployments, a.replicas
    );
    println!("| measure | value |\n|---|---:|");
    println!(
        "| nodes registered and seen | {:.1} s |",
        registered.as_secs_f64()
    );
    println!(
        "| all {total} pods running and ready | {:.1} s |",
        all_ready.as_secs_f64()
    );
    println!("| scheduler throughput (pods bound / s) | {throughput:.0} |");
    match p99(&before, &after) {
        Some(p) => println!(
            "| API p99 during the run (all verbs but WATCH; histogram bucket) | ≤ {:.0} ms |",
            p * 1000.0
        ),
        None => println!("| API p99 during the run | n/a |"),
    }
    if let Some((p50, p99)) = saturation {
        println!(
            "| pod start-up, the {total} pods created at once: p50 / p99 (seen created → seen running and ready) | {:.1} s / {:.1} s |",
            p50.as_secs_f64(),
            p99.as_secs_f64()
        );
    }
    match percentiles(latencies.clone()) {
        Some((p50, p99)) if latencies.len() == latency_pods => println!(
            "| pod start-up, {latency_pods} pods created one by one (5/s) afterwards: p50 / p99 | {:.0} ms / {:.0} ms |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        ),
        _ => println!(
            "| pod start-up of pods created one by one | only {} of {latency_pods} started within 120 s |",
            latencies.len()
        ),
    }
    println!("| server peak RSS (VmHWM) | {rss:.0} MiB |");
    drop(server);
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}
