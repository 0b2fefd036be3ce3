//! `skua bench api`: an in-process skua API server (sled datastore, real TLS on
//! loopback) driven over HTTP/2 with the admin certificate, as kubectl and client-go
//! talk to it. Measures create / get / list of 1 000 / update at 1, 16 and 64
//! concurrent clients (lists both from the watch cache and, side by side, from the
//! datastore), and the fan-out of one change to 500 watchers.

use crate::server::{open_store, start_api};
use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    /// Scratch directory (default: a new one under the system temp dir), removed after.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Operations per kind and concurrency level.
    #[arg(long, default_value_t = 1000)]
    pub ops: usize,
    /// Watchers for the fan-out measurement.
    #[arg(long, default_value_t = 500)]
    pub watchers: usize,
    /// Changes whose fan-out is timed.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
}

/// One HTTP/2 connection to the API, as system:admin.
#[derive(Clone)]
struct Client {
    send: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1")?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        Ok(Client {
            send,
            authority: addr.to_string(),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Ok(Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))?)
    }

    /// Sends a request and reads the whole answer; returns (status, body, latency).
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value, Duration)> {
        let (status, bytes, elapsed) = self.call_raw(method, path, body).await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            elapsed,
        ))
    }

    /// [`Client::call`] without decoding the answer.
    async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes, Duration)> {
        let req = self.request(method, path, body)?;
        let t = Instant::now();
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes, t.elapsed()))
    }
}

fn client_tls(pki: &crate::pki::ServerPki) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.server_ca_cert.as_bytes()) {
        roots.add(ca?)?;
    }
    let chain =
        CertificateDer::pem_slice_iter(pki.admin_cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.admin_key.as_bytes())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples
        .get(((samples.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn configmap(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": value}})
}

/// Runs `per_worker(worker, client)` on `workers` tasks; returns all latencies and
/// the wall time.
async fn phase<F, Fut>(
    clients: &[Client],
    workers: usize,
    per_worker: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize, Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Duration>>> + Send + 'static,
{
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        tasks.push(tokio::spawn(per_worker(
            w,
            clients[w % clients.len()].clone(),
        )));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, t.elapsed()))
}

/// A list's items, skipped over rather than built.
#[derive(serde::Deserialize)]
struct Items {
    items: Vec<serde::de::IgnoredAny>,
}

/// `workers` clients each listing `path` `lists` times (each list must hold at least
/// `min_items`).
async fn list_phase(
    clients: &[Client],
    workers: usize,
    lists: usize,
    path: &str,
    min_items: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    phase(clients, workers, |_, mut c| {
        let path = path.to_string();
        async move {
            let mut out = Vec::new();
            for _ in 0..lists {
                let (status, bytes, d) = c.call_raw(Method::GET, &path, None).await?;
                // the items are counted without building them: the client shares the
                // server's cores, and decoding 1 000 objects would measure the client
                let items = serde_json::from_slice::<Items>(&bytes).map_or(0, |l| l.items.len());
                anyhow::ensure!(
                    status == StatusCode::OK && items >= min_items,
                    "list answered {status}"
                );
                out.push(d);
            }
            Ok(out)
        }
    })
    .await
}

/// Time from spawning `skua server` to its first `/readyz` answer over TLS.
async fn time_to_ready(data_dir: &std::path::Path) -> anyhow::Result<Duration> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = data_dir.join("empty-config.yaml");
    std::fs::write(&config, "")?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("server")
        .arg("--disable-agent")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--write-kubeconfig")
        .arg(data_dir.join("kubeconfig.yaml"))
        .args([
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .env("SKUA_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ca = data_dir.join("server/tls/server-ca.crt");
    let result = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break Err(anyhow::anyhow!("skua server did not answer within 30 s"));
        }
        if let (Ok(ca_pem), Ok(_)) = (
            std::fs::read_to_string(&ca),
            tokio::net::TcpStream::connect(addr).await,
        ) {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(c?)?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            if let Ok(mut c) = Client::connect(addr, Arc::new(cfg)).await {
                // any answer: anonymous /readyz is 401 where --anonymous-auth is off
                // (the default, as k3s), 200 where it is on or on older builds
                if c.call(Method::GET, "/readyz", None).await.is_ok() {
                    break Ok(started.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = child.kill().await;
    result
}

pub async fn run(a: ApiBenchArgs) -> anyhow::Result<()> {
    let scratch = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("skua-bench-api-{}", std::process::id()))
    });
    std::fs::create_dir_all(&scratch)?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let dir = scratch.join(format!("startup-{i}"));
        std::fs::create_dir_all(&dir)?;
        cold.push(time_to_ready(&dir).await?);
        warm.push(time_to_ready(&dir).await?);
    }
    println!(
        "start-up to the first HTTPS /readyz answer (spawn to the first HTTP answer, 5 runs each): first start median {:.0?} (max {:.0?}), restart median {:.0?} (max {:.0?})",
        percentile(&mut cold, 0.5),
        cold.iter().max().copied().unwrap_or_default(),
        percentile(&mut warm, 0.5),
        warm.iter().max().copied().unwrap_or_default()
    );
    // `skua server`'s own defaults, as its command line gives them
    let mut cfg = crate::cli::server_defaults(&scratch)?;
    cfg.bind_address = [127, 0, 0, 1].into();
    cfg.https_listen_port = 0;
    cfg.disable_agent = true;
    cfg.node = None;
    cfg.node_ips = Vec::new();
    cfg.write_kubeconfig = scratch.join("kubeconfig.yaml");
    let store = open_store(&cfg.datastore).await?;
    let api = start_api(store.clone(), &cfg).await?;
    let tls = client_tls(&api.pki)?;
    // 16 connections carry up to 64 concurrent clients, as pooled HTTP/2 clients do
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(Client::connect(api.addr, tls.clone()).await?);
    }
    let payload = "x".repeat(1024);
    println!(
        "skua bench api: {} ops per kind and level, 1 KiB ConfigMaps, HTTP/2 + TLS on loopback, sled datastore",
        a.ops
    );
    println!();
    println!("| operation | clients | ops/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for level in [1usize, 16, 64] {
        let ns = format!("bench-{level}");
        clients[0]
            .clone()
            .call(
                Method::POST,
                "/api/v1/namespaces",
                Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
            )
            .await?;
        let base = format!("/api/v1/namespaces/{ns}/configmaps");
        let per = a.ops.div_ceil(level);
        let report = |op: &str, mut lat: Vec<Duration>, wall: Duration| {
            let n = lat.len();
            println!(
                "| {op} | {level} | {:.0} | {:.2?} | {:.2?} |",
                n as f64 / wall.as_secs_f64(),
                percentile(&mut lat, 0.5),
                percentile(&mut lat, 0.99)
            );
        };
        let (lat, wall) = phase(&clients, level, |w, mut c| {
            let (base, payload) = (base.clone(), payload.clone());
            async move {
                let mut out = Vec::new();
                for i in 0..per {
                    let (status, _, d) = c
                        .call(
                            Method::POST,
                            &base,
                            Some(&configmap(&format!("w{w}-{i}"), &payload)),
                        )
                        .await?;
                    anyhow::ensure!(status == StatusCode::CREATED, "create answered {status}");
                    out.push(d);
                }
                Ok(out)
            }
        })
        .await?;
        report("create", lat, wall);
        let (lat, wall) = phase(&clients, level, |w, mut c| {
            let base = base.clone();
            async move {
                let mut out = Vec::new();
                for i in 0..per {
                    let (status, _, d) = c
                        .call(Method::GET, &format!("{base}/w{w}-{i}"), None)
                        .await?;
                    anyhow::ensure!(status == StatusCode::OK, "get answered {status}");
                    out.push(d);
                }
                Ok(out)
            }
        })
        .await?;
        report("get", lat, wall);
        let (lat, wall) = phase(&clients, level, |w, mut c| {
            let (base, payload) = (base.clone(), payload.clone());
            async move {
                let mut out = Vec::new();
                for i in 0..per {
                    let path = format!("{base}/w{w}-{i}");
                    let (_, current, _) = c.call(Method::GET, &path, None).await?;
                    let mut next = configmap(&format!("w{w}-{i}"), &payload.replace('x', "y"));
                    next["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    let (status, _, d) = c.call(Method::PUT, &path, Some(&next)).await?;
                    anyhow::ensure!(status == StatusCode::OK, "update answered {status}");
                    out.push(d);
                }
                Ok(out)
            }
        })
        .await?;
        report("update", lat, wall);
        let lists = (60 / level).max(1);
        let min_items = 1000.min(per * level);
        let (lat, wall) = list_phase(&clients, level, lists, &base, min_items).await?;
        report(&format!("list {} (watch cache)", per * level), lat, wall);
        // the same list read from the datastore (an exact resourceVersion is never
        // served from the cache), side by side
        let (_, listed, _) = clients[0].clone().call(Method::GET, &base, None).await?;
        let rv = listed["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let exact = format!("{base}?resourceVersion={rv}&resourceVersionMatch=Exact");
        let (lat, wall) = list_phase(&clients, level, lists, &exact, min_items).await?;
        report(&format!("list {} (datastore)", per * level), lat, wall);
        // a first page of 100, as paging clients ask (kubectl asks for 500)
        let page = 100.min(per * level);
        let first = format!("{base}?limit={page}");
        let (lat, wall) = list_phase(&clients, level, lists * 4, &first, page).await?;
        report(&format!("list page of {page} (watch cache)"), lat, wall);
        let first = format!("{exact}&limit={page}");
        let (lat, wall) = list_phase(&clients, level, lists * 4, &first, page).await?;
        report(&format!("list page of {page} (datastore)"), lat, wall);
    }

    // fan-out: one change, seen by every watcher
    let ns = "bench-watch";
    clients[0]
        .clone()
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
        )
        .await?;
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let (_, created, _) = clients[0]
        .clone()
        .call(Method::POST, &base, Some(&configmap("hot", "0")))
        .await?;
    let mut rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (arrivals_tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut watch_conns = Vec::new();
    for _ in 0..a.watchers.div_ceil(50) {
        watch_conns.push(Client::connect(api.addr, tls.clone()).await?);
    }
    for w in 0..a.watchers {
        let mut c = watch_conns[w / 50].clone();
        let req = c.request(
            Method::GET,
            &format!("{base}?watch=1&resourceVersion={rv}"),
            None,
        )?;
        let tx = arrivals_tx.clone();
        tokio::spawn(async move {
            c.send.ready().await?;
            let mut body = c.send.send_request(req).await?.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    for _ in data.iter().filter(|b| **b == b'\n') {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let every watch start
    let mut all_seen = Vec::new();
    let mut each = Vec::new();
    let mut writer = clients[0].clone();
    for i in 0..a.changes {
        // a value it did not have: an update that changes nothing is not written
        let mut next = configmap("hot", &(i + 1).to_string());
        next["metadata"]["resourceVersion"] = json!(rv);
        let t = Instant::now();
        let (status, written, _) = writer
            .call(Method::PUT, &format!("{base}/hot"), Some(&next))
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "update answered {status}");
        rv = written["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let mut last = t;
        for _ in 0..a.watchers {
            let arrived = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("watchers ended"))?;
            each.push(arrived.saturating_duration_since(t));
            last = last.max(arrived);
        }
        all_seen.push(last - t);
    }
    println!(
        "| watch fan-out: change seen by all {} | {} | {:.0} changes/s | {:.2?} | {:.2?} |",
        a.watchers,
        a.watchers,
        a.changes as f64
            / all_seen
                .iter()
                .map(Duration::as_secs_f64)
                .sum::<f64>()
                .max(1e-9),
        percentile(&mut all_seen, 0.5),
        percentile(&mut all_seen, 0.99)
    );
    println!(
        "| watch fan-out: each delivery | {} | – | {:.2?} | {:.2?} |",
        a.watchers,
        percentile(&mut each, 0.5),
        percentile(&mut each, 0.99)
    );
    api.stop().await;
    drop(store);
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(())
}
