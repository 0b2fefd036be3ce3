//! `skua bench pods`: pod start latency on a real node (created → Running, image
//! present) for one pod at a time and for bursts created at once, and the agent's
//! memory idle and with a burst running. Runs a server and an agent with its own
//! containerd inside a network namespace it creates (and deletes), so no packet leaves
//! the machine. Needs root, containerd, runc, the CNI plugins and the test images
//! (`scripts/build-images.sh`).

use crate::client::ApiClient;
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct PodsBenchArgs {
    /// Folder with pause.tar and busybox.tar (made by scripts/build-images.sh).
    #[arg(long, default_value = "target/images")]
    pub images: PathBuf,
    /// Scratch directory (default: a new one under the system temp dir), removed after.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Pods started one at a time.
    #[arg(long, default_value_t = 10)]
    pub singles: usize,
    /// Pods created at once in each burst.
    #[arg(long, default_value_t = 30)]
    pub burst: usize,
    /// Bursts.
    #[arg(long, default_value_t = 3)]
    pub bursts: usize,
    /// Set by the bench itself: the network namespace it runs in.
    #[arg(long, hide = true)]
    pub inside: Option<String>,
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Resident memory of a process now, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The pid of the process whose command line contains `marker`.
fn pid_of(marker: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(marker) && !cmd.contains("bench pods") {
            return Some(pid);
        }
    }
    None
}

pub async fn run(a: PodsBenchArgs) -> anyhow::Result<()> {
    let images = std::fs::canonicalize(&a.images).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; build the test images first (scripts/build-images.sh)",
            a.images.display()
        )
    })?;
    if let Some(ns) = &a.inside {
        return inside(&a, &images, ns).await;
    }
    let scratch = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("skua-bench-pods-{}", std::process::id())),
    };
    std::fs::create_dir_all(&scratch)?;
    let ns = format!("skua-bench-{}", std::process::id());
    sh(Command::new("ip").args(["netns", "add", &ns]))?;
    let result = (|| -> anyhow::Result<()> {
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "add", "node0", "type", "bridge"],
            &["addr", "add", "10.250.0.1/24", "dev", "node0"],
            &["link", "set", "node0", "up"],
        ] {
            sh(Command::new("ip").args(["-n", &ns]).args(args))?;
        }
        let status = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("--")
            .arg(std::env::current_exe()?)
            .args(["bench", "pods", "--inside", &ns])
            .arg("--images")
            .arg(&images)
            .arg("--dir")
            .arg(&scratch)
            .args(["--singles", &a.singles.to_string()])
            .args(["--burst", &a.burst.to_string()])
            .args(["--bursts", &a.bursts.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "the bench failed ({status})");
        Ok(())
    })();
    // whatever is left: shims, containers, mounts, the namespace
    crate::agent::containerd::remove_leftovers(&scratch);
    let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start(scratch: &Path, name: &str, args: &[String]) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(scratch.join(format!("{name}.log")))?;
    Ok(Proc(
        Command::new(std::env::current_exe()?)
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?,
    ))
}

fn pod(name: &str, burst: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": burst}},
        "spec": {"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "docker.io/library/busybox:latest",
                "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}})
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5).as_secs_f64(), at(0.99).as_secs_f64())
}

async fn phase(client: &ApiClient, name: &str) -> String {
    client
        .get(&format!("/api/v1/namespaces/default/pods/{name}"))
        .await
        .ok()
        .and_then(|p| p["status"]["phase"].as_str().map(String::from))
        .unwrap_or_default()
}

async fn inside(a: &PodsBenchArgs, images: &Path, _ns: &str) -> anyhow::Result<()> {
    let scratch = a
        .dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--dir is set by the bench"))?;
    let s = |p: &Path| p.display().to_string();
    std::fs::write(scratch.join("none.yaml"), "")?;
    let kubeconfig = scratch.join("kubeconfig.yaml");
    let _server = start(
        &scratch,
        "server",
        &[
            "server".into(),
            "--disable-agent".into(),
            "--config".into(),
            s(&scratch.join("none.yaml")),
            "--data-dir".into(),
            s(&scratch.join("server")),
            "--write-kubeconfig".into(),
            s(&kubeconfig),
            "--node-ip".into(),
            "10.250.0.1".into(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() || !scratch.join("server/server/node-token").exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not start; see {}",
            scratch.join("server.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node = scratch.join("node");
    std::fs::create_dir_all(node.join("agent/images"))?;
    for f in ["pause.tar", "busybox.tar"] {
        std::fs::copy(images.join(f), node.join("agent/images").join(f))?;
    }
    let token = std::fs::read_to_string(scratch.join("server/server/node-token"))?;
    // cluster DNS relays only to the bench's own namespace, never the machine's resolver
    std::fs::write(scratch.join("resolv.conf"), "nameserver 10.250.0.1\n")?;
    let agent = start(
        &scratch,
        "agent",
        &[
            "agent".into(),
            "--server".into(),
            "https://127.0.0.1:6443".into(),
            "--token".into(),
            token.trim().into(),
            "--node-name".into(),
            "bench".into(),
            "--node-ip".into(),
            "10.250.0.1".into(),
            "--config".into(),
            s(&scratch.join("none.yaml")),
            "--data-dir".into(),
            s(&node),
            "--node-password-file".into(),
            s(&node.join("password")),
            "--pod-log-dir".into(),
            s(&node.join("log/pods")),
            "--container-log-dir".into(),
            s(&node.join("log/containers")),
            "--private-registry".into(),
            s(&node.join("registries.yaml")),
            "--resolv-conf".into(),
            s(&scratch.join("resolv.conf")),
        ],
    )?;
    let client = ApiClient::remote(
        std::sync::Arc::new(crate::client::Remote::from_kubeconfig(&kubeconfig)?),
        "skua-bench",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get("/api/v1/nodes/bench")
            .await
            .ok()
            .and_then(|n| {
                n["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .map(|c| c["status"] == "True")
            })
            .unwrap_or(false);
        let default_sa = client
            .get("/api/v1/namespaces/default/serviceaccounts/default")
            .await
            .is_ok();
        if ready && default_sa {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node did not become Ready; see {}",
            scratch.join("agent.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent_pid = agent.0.id();
    let containerd = pid_of(&format!("{}/agent/containerd/config.toml", node.display()));
    // the images are imported in the background: wait for busybox
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(scratch.join("agent.log"))?.contains("busybox") {
        anyhow::ensure!(Instant::now() < deadline, "busybox was not imported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = rss_mib(agent_pid);
    let idle_containerd = containerd.map_or(0.0, rss_mib);
    println!(
        "skua bench pods: busybox image present, pods created through the API, Running observed by polling every 20 ms"
    );
    // one at a time
    let mut singles = Vec::new();
    for i in 0..a.singles {
        let name = format!("single-{i}");
        let t0 = Instant::now();
        client
            .create("/api/v1/namespaces/default/pods", &pod(&name, "single"))
            .await?;
        loop {
            if phase(&client, &name).await == "Running" {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "pod {name} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        singles.push(t0.elapsed());
        client
            .delete(
                &format!("/api/v1/namespaces/default/pods/{name}"),
                &json!({"gracePeriodSeconds": 0}),
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // bursts
    let mut burst_times = Vec::new();
    let mut loaded: f64 = 0.0;
    for b in 0..a.bursts {
        let label = format!("burst-{b}");
        let t0 = Instant::now();
        let mut creates = tokio::task::JoinSet::new();
        for i in 0..a.burst {
            let (client, body) = (client.clone(), pod(&format!("b{b}-{i}"), &label));
            creates.spawn(async move {
                client
                    .create("/api/v1/namespaces/default/pods", &body)
                    .await
            });
        }
        while let Some(r) = creates.join_next().await {
            r??;
        }
        let mut started: std::collections::HashMap<String, Duration> = Default::default();
        while started.len() < a.burst {
            let list = client
                .get(&format!(
                    "/api/v1/namespaces/default/pods?labelSelector=bench%3D{label}"
                ))
                .await?;
            for p in list["items"].as_array().into_iter().flatten() {
                if p["status"]["phase"] == "Running" {
                    let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                    started.entry(name).or_insert_with(|| t0.elapsed());
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(300),
                "burst {b} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        burst_times.extend(started.into_values());
        tokio::time::sleep(Duration::from_secs(5)).await;
        loaded = loaded.max(rss_mib(agent_pid));
        let loaded_containerd = containerd.map_or(0.0, rss_mib);
        println!(
            "  burst {b}: {} pods running; agent RSS {:.1} MiB, containerd {:.1} MiB",
            a.burst,
            rss_mib(agent_pid),
            loaded_containerd
        );
        client
            .call(
                http::Method::DELETE,
                &format!("/api/v1/namespaces/default/pods?labelSelector=bench%3D{label}"),
                "application/json",
                Some(&json!({"gracePeriodSeconds": 0})),
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let (s50, s99) = percentiles(singles);
    let (b50, b99) = percentiles(burst_times);
    println!("| measure | skua | anchor |");
    println!("|---|---:|---|");
    println!(
        "| pod start, one at a time ({} pods): p50 / p99 | {s50:.2} s / {s99:.2} s | SLO p99 ≤ 5 s |",
        a.singles
    );
    println!(
        "| pod start, {} at once ({} bursts): p50 / p99 | {b50:.2} s / {b99:.2} s | SLO p99 ≤ 5 s |",
        a.burst, a.bursts
    );
    println!("| agent RSS, idle (containerd not counted) | {idle:.1} MiB | k3s agent ≈ 275 MB |");
    println!(
        "| agent RSS, {} pods running | {loaded:.1} MiB | k3s agent ≈ 275 MB |",
        a.burst
    );
    println!("| containerd RSS, idle | {idle_containerd:.1} MiB | — |");
    drop(agent);
    Ok(())
}
