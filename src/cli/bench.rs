//! `skua bench store`: the same workload against sled and against a local etcd in one
//! run, on the same disk, with medians over rounds and the sled/etcd ratio.

use crate::store::etcd_local::LocalEtcd;
use crate::store::sled::{SledOptions, SledStore};
use crate::store::{ListOptions, Store, WatchMessage};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Datastore: durable creates (1 and 64 writers), get, list of 10k, watch latency.
    Store(StoreBenchArgs),
    /// API server: create/get/list/update at 1, 16 and 64 clients; watch fan-out.
    Api(super::bench_api::ApiBenchArgs),
    /// Control plane at scale: simulated nodes and many replicas until all run.
    Scale(super::bench_scale::ScaleBenchArgs),
    /// A real node: pod start latency (one at a time and in bursts) and agent memory.
    Pods(super::bench_pods::PodsBenchArgs),
    /// Service proxy: nftables full sync at 1k/5k/10k services, one incremental change.
    Proxy(super::bench_proxy::ProxyBenchArgs),
    /// Data plane: first-packet latency to a service at 100 vs 10k services; pod-to-pod
    /// throughput over host-gw and vxlan against the bare veth.
    Net(super::bench_net::NetBenchArgs),
    /// RBAC: authorization decisions from the in-memory index (10 000 RoleBindings,
    /// 1 000 ClusterRoles): decisions per second and the latency of one.
    Rbac(super::bench_rbac::RbacBenchArgs),
}

#[derive(Args, Debug)]
pub struct StoreBenchArgs {
    /// etcd binary to start on 127.0.0.1 for the side-by-side run.
    #[arg(long, default_value = "etcd")]
    pub etcd_binary: String,
    /// Scratch directory (default: a new one under the system temp dir), removed after.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rounds per backend; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Creates per round with one writer.
    #[arg(long, default_value_t = 500)]
    pub creates: usize,
    /// Items in the listed prefix.
    #[arg(long, default_value_t = 10_000)]
    pub list_size: usize,
    /// Value size in bytes (a typical small Kubernetes object).
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
}

/// A table row: its label and how to read its figure.
type Row<T> = (&'static str, fn(&Figures) -> T);

/// One round's figures for one backend.
#[derive(Clone, Debug, Default)]
struct Figures {
    create_1: f64,
    create_64: f64,
    get_p50: Duration,
    get_p99: Duration,
    list_p50: Duration,
    list_p99: Duration,
    watch_p50: Duration,
    watch_p99: Duration,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Store(a) => store(a).await,
        BenchCommand::Api(a) => super::bench_api::run(a).await,
        BenchCommand::Scale(a) => super::bench_scale::run(a).await,
        BenchCommand::Pods(a) => super::bench_pods::run(a).await,
        BenchCommand::Proxy(a) => super::bench_proxy::run(a).await,
        BenchCommand::Net(a) => super::bench_net::run(a).await,
        BenchCommand::Rbac(a) => super::bench_rbac::run(a).await,
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(idx).copied().unwrap_or_default()
}

async fn round(store: Arc<dyn Store>, a: &StoreBenchArgs, tag: &str) -> anyhow::Result<Figures> {
    let value = vec![b'v'; a.value_size];
    let mut f = Figures::default();

    let t = Instant::now();
    for i in 0..a.creates {
        store
            .create(&format!("/bench/{tag}/one/{i:08}"), value.clone())
            .await?;
    }
    f.create_1 = a.creates as f64 / t.elapsed().as_secs_f64();

    // 64 writers fill the list prefix, which is also the 64-writer throughput figure
    let t = Instant::now();
    let per = a.list_size.div_ceil(64);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (store, value, tag) = (store.clone(), value.clone(), tag.to_string());
        let n = per.min(a.list_size.saturating_sub(w * per));
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                store
                    .create(&format!("/bench/{tag}/list/{w:02}-{i:08}"), value.clone())
                    .await?;
            }
            Ok::<_, crate::store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    f.create_64 = a.list_size as f64 / t.elapsed().as_secs_f64();

    let mut gets = Vec::with_capacity(2000);
    for i in 0..2000 {
        let key = format!("/bench/{tag}/one/{:08}", (i * 7919) % a.creates.max(1));
        let t = Instant::now();
        store.get(&key).await?;
        gets.push(t.elapsed());
    }
    f.get_p50 = percentile(&mut gets, 0.5);
    f.get_p99 = percentile(&mut gets, 0.99);

    let mut lists = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let page = store
            .list(&format!("/bench/{tag}/list/"), ListOptions::default())
            .await?;
        lists.push(t.elapsed());
        anyhow::ensure!(
            page.kvs.len() == a.list_size,
            "list returned {} items",
            page.kvs.len()
        );
    }
    f.list_p50 = percentile(&mut lists, 0.5);
    f.list_p99 = percentile(&mut lists, 0.99);

    // watch delivery: from issuing a write to the watcher receiving its event
    let mut watch = store.watch(&format!("/bench/{tag}/watch/"), 0).await?;
    let mut lat = Vec::new();
    let key = format!("/bench/{tag}/watch/k");
    let mut rev = store.create(&key, value.clone()).await?;
    next_event(&mut watch).await?;
    for _ in 0..300 {
        let t = Instant::now();
        let (written, received) = tokio::join!(
            store.update(&key, value.clone(), rev),
            next_event(&mut watch)
        );
        rev = written?;
        received?;
        lat.push(t.elapsed());
    }
    f.watch_p50 = percentile(&mut lat, 0.5);
    f.watch_p99 = percentile(&mut lat, 0.99);
    Ok(f)
}

async fn next_event(w: &mut crate::store::Watch) -> anyhow::Result<()> {
    loop {
        match w.next().await {
            Some(Ok(WatchMessage::Event(_))) => return Ok(()),
            Some(Ok(WatchMessage::Progress(_))) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("watch ended"),
        }
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

async fn store(a: StoreBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rounds > 0 && a.creates > 0 && a.list_size > 0,
        "rounds, creates and list-size must be positive"
    );
    let scratch = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("skua-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&scratch)?;
    let etcd = LocalEtcd::start(&a.etcd_binary, &scratch.join("etcd"))?;
    let etcd_store: Arc<dyn Store> = Arc::new(etcd.connect().await?);
    let sled_store: Arc<dyn Store> =
        Arc::new(SledStore::open(SledOptions::new(scratch.join("sled")))?);
    let (mut sled, mut etcd_figs) = (Vec::new(), Vec::new());
    for r in 0..a.rounds {
        // alternate the order so drift on a noisy machine hits both sides
        let tag = format!("r{r}");
        if r % 2 == 0 {
            sled.push(round(sled_store.clone(), &a, &tag).await?);
            etcd_figs.push(round(etcd_store.clone(), &a, &tag).await?);
        } else {
            etcd_figs.push(round(etcd_store.clone(), &a, &tag).await?);
            sled.push(round(sled_store.clone(), &a, &tag).await?);
        }
        eprintln!("round {} of {} done", r + 1, a.rounds);
    }
    drop(sled_store);
    drop(etcd_store);
    drop(etcd);
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }

    let tp = |v: &[Figures], f: fn(&Figures) -> f64| median(v.iter().map(f).collect());
    let lat = |v: &[Figures], f: fn(&Figures) -> Duration| median(v.iter().map(f).collect());
    println!(
        "skua bench store: {} rounds (medians), {} B values, list of {}, on {}",
        a.rounds,
        a.value_size,
        a.list_size,
        scratch.display()
    );
    println!();
    println!("| metric | sled | etcd | sled/etcd |");
    println!("|---|---:|---:|---:|");
    let rows_tp: [Row<f64>; 2] = [
        ("durable creates/s, 1 writer", |f| f.create_1),
        ("durable creates/s, 64 writers", |f| f.create_64),
    ];
    for (name, f) in rows_tp {
        let (s, e) = (tp(&sled, f), tp(&etcd_figs, f));
        println!("| {name} | {s:.0} | {e:.0} | {:.2} |", s / e);
    }
    let rows_lat: [Row<Duration>; 6] = [
        ("get p50", |f| f.get_p50),
        ("get p99", |f| f.get_p99),
        ("list 10k p50", |f| f.list_p50),
        ("list 10k p99", |f| f.list_p99),
        ("watch delivery p50", |f| f.watch_p50),
        ("watch delivery p99", |f| f.watch_p99),
    ];
    for (name, f) in rows_lat {
        let (s, e) = (lat(&sled, f), lat(&etcd_figs, f));
        println!(
            "| {name} | {s:.2?} | {e:.2?} | {:.2} |",
            s.as_secs_f64() / e.as_secs_f64()
        );
    }
    Ok(())
}
