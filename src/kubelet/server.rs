//! The kubelet's HTTPS API (port 10250 by default): the kubelet serving certificate,
//! client certificates verified against the cluster's client CA (no anonymous access),
//! and each request authorized with a SubjectAccessReview as upstream's webhook
//! authorizer does (`/containerLogs` and the rest are `nodes/proxy`, `/stats`
//! `nodes/stats`, `/metrics` `nodes/metrics`).
//!
//! Served: `/healthz`, `/pods`, `/containerLogs/<ns>/<pod>/<container>` (follow,
//! tailLines, sinceSeconds, sinceTime, timestamps, previous, limitBytes), and
//! `/exec`, `/attach`, `/portForward` (`stream.rs`), `/stats/summary` and
//! `/metrics/resource` (`stats.rs`).

use super::Kubelet;
use super::logs::{Options, render, rotated_files};
use crate::util::body::ChannelBody;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

type Body = BoxBody<Bytes, Infallible>;

/// The TLS side: the serving certificate, and client certificates required.
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, super::KubeletError> {
    let tls = |e: &dyn std::fmt::Display| super::KubeletError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls(&e))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the kubelet API on `listener` until the task is dropped.
pub async fn serve(
    kubelet: Arc<Kubelet>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, kubelet) = (acceptor.clone(), kubelet.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
            };
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| crate::pki::x509::subject(leaf.as_ref()));
            let Some(subject) = caller else { return };
            let Some(user) = subject.common_names.first().cloned() else {
                return;
            };
            let mut groups = subject.organizations;
            groups.push("system:authenticated".into());
            let service = hyper::service::service_fn(move |req| {
                let (kubelet, user, groups) = (kubelet.clone(), user.clone(), groups.clone());
                async move { Ok::<_, Infallible>(handle(kubelet, req, &user, &groups).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The `nodes` subresource a path is authorized as, upstream's mapping.
fn subresource(path: &str) -> &'static str {
    if path.starts_with("/stats") {
        "stats"
    } else if path.starts_with("/metrics") {
        "metrics"
    } else if path.starts_with("/logs") {
        "log"
    } else {
        "proxy"
    }
}

fn verb(m: &Method) -> &'static str {
    match *m {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

async fn allowed(
    kubelet: &Kubelet,
    user: &str,
    groups: &[String],
    method: &Method,
    path: &str,
) -> bool {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": {
            "verb": verb(method), "resource": "nodes", "subresource": subresource(path),
            "name": kubelet.settings.node_name,
        }},
    });
    match kubelet
        .client
        .create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &review,
        )
        .await
    {
        Ok(r) => r["status"]["allowed"] == true,
        Err(e) => {
            tracing::warn!(error = %e, "kubelet API: cannot review access");
            false
        }
    }
}

async fn handle(
    kubelet: Arc<Kubelet>,
    mut req: Request<Incoming>,
    user: &str,
    groups: &[String],
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if !allowed(&kubelet, user, groups, req.method(), &path).await {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={user}, verb={}, resource=nodes, subresource={})",
                verb(req.method()),
                subresource(&path)
            ),
        );
    }
    let query: std::collections::HashMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), crate::util::url::decode(v))
        })
        .collect();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["pods"] => {
            let items: Vec<Value> = kubelet
                .pods
                .list(None)
                .iter()
                .map(|p| (**p).clone())
                .collect();
            json_response(
                &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        ["stats", "summary"] => json_response(&super::stats::summary(&kubelet).await),
        ["metrics", "resource"] => {
            let mut r = text(
                StatusCode::OK,
                super::stats::resource_metrics(&kubelet).await,
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        ["exec", ns, pod, container] => {
            super::stream::exec_or_attach(&kubelet, &mut req, (ns, pod, container), false).await
        }
        ["attach", ns, pod, container] => {
            super::stream::exec_or_attach(&kubelet, &mut req, (ns, pod, container), true).await
        }
        ["portForward", ns, pod] => super::stream::port_forward(&kubelet, &mut req, ns, pod).await,
        ["containerLogs", ns, pod, container] => {
            container_logs(&kubelet, ns, pod, container, &query).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | ""))
}

/// Why a container's log cannot be read (upstream's messages; the answer is a 400).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The pod is not bound to this node.
    #[error("pod {pod:?} in namespace {namespace:?} is not on this node")]
    NotHere {
        /// The pod's name.
        pod: String,
        /// Its namespace.
        namespace: String,
    },
    /// The runtime did not list the pod's containers.
    #[error("{0}")]
    Runtime(String),
    /// `previous` asked of a container that has not restarted.
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious {
        /// The container's name.
        container: String,
        /// The pod's name.
        pod: String,
    },
    /// The container has not started yet.
    #[error("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating")]
    Waiting {
        /// The container's name.
        container: String,
        /// The pod's name.
        pod: String,
    },
}

/// The log file of a container instance (newest, or the one before with `previous`).
async fn log_file(
    kubelet: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String, bool), LogError> {
    let key = format!("{ns}/{pod}");
    let p = kubelet.pods.get(&key).ok_or_else(|| LogError::NotHere {
        pod: pod.to_string(),
        namespace: ns.to_string(),
    })?;
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let mut memory = super::PodMemory::default();
    let all = kubelet
        .container_statuses(&uid, &mut memory)
        .await
        .map_err(|e| LogError::Runtime(e.message().to_string()))?;
    let seen = super::status::Observed {
        containers: all,
        ..Default::default()
    };
    let (latest, before) = seen.instances(container);
    let chosen = if previous { before } else { latest };
    let c = chosen.ok_or_else(|| {
        let (container, pod) = (container.to_string(), pod.to_string());
        if previous {
            LogError::NoPrevious { container, pod }
        } else {
            LogError::Waiting { container, pod }
        }
    })?;
    let running = c.state == k8s_cri::v1::ContainerState::ContainerRunning as i32;
    Ok((PathBuf::from(&c.log_path), c.id.clone(), running))
}

async fn container_logs(
    kubelet: &Arc<Kubelet>,
    ns: &str,
    pod: &str,
    container: &str,
    query: &std::collections::HashMap<String, String>,
) -> Response<Body> {
    let q = |k: &str| query.get(k).map(String::as_str);
    let previous = truthy(q("previous"));
    let (file, id, running) = match log_file(kubelet, ns, pod, container, previous).await {
        Ok(x) => x,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let now = crate::api::meta::now_secs();
    let opts = Options {
        timestamps: truthy(q("timestamps")),
        tail_lines: q("tailLines").and_then(|n| n.parse().ok()),
        since_secs: q("sinceSeconds")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|s| now - s)
            .or_else(|| q("sinceTime").and_then(crate::api::civil::parse_rfc3339)),
        limit_bytes: q("limitBytes").and_then(|n| n.parse().ok()),
    };
    let mut text_now = String::new();
    for f in rotated_files(&file) {
        text_now.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    let live = std::fs::read_to_string(&file).unwrap_or_default();
    let offset = live.len();
    text_now.push_str(&live);
    let first = render(&text_now, &opts);
    let follow = truthy(q("follow")) && running && !previous;
    let mut resp = if !follow {
        Response::new(Full::new(Bytes::from(first)).boxed())
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let kubelet = kubelet.clone();
        let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
        let opts = Options {
            tail_lines: None,
            limit_bytes: None,
            ..opts
        };
        tokio::spawn(async move {
            if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
                return;
            }
            follow_file(
                &kubelet, &file, offset, &ns, &pod, &container, &id, &opts, tx,
            )
            .await;
        });
        Response::new(BodyExt::boxed(ChannelBody::new(rx)))
    };
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Streams what the container writes from `offset` on, until it stops or the reader
/// leaves; follows the file across rotations.
#[allow(clippy::too_many_arguments)]
async fn follow_file(
    kubelet: &Kubelet,
    file: &Path,
    mut offset: usize,
    ns: &str,
    pod: &str,
    container: &str,
    id: &str,
    opts: &Options,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut carry = String::new();
    loop {
        let data = std::fs::read(file).unwrap_or_default();
        if data.len() < offset {
            offset = 0; // rotated: the live file starts again
        }
        if data.len() > offset {
            carry.push_str(&String::from_utf8_lossy(&data[offset..]));
            offset = data.len();
            // only whole lines; a partial last line waits for its end
            if let Some(end) = carry.rfind('\n') {
                let whole: String = carry.drain(..=end).collect();
                let out = render(&whole, opts);
                if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
        } else {
            let still = match log_file(kubelet, ns, pod, container, false).await {
                Ok((_, now_id, running)) => now_id == id && running,
                Err(_) => false,
            };
            if !still {
                // what it wrote before it stopped
                let data = std::fs::read(file).unwrap_or_default();
                if data.len() > offset {
                    carry.push_str(&String::from_utf8_lossy(&data[offset..]));
                }
                let out = render(&carry, opts);
                if !out.is_empty() {
                    let _ = tx.send(Bytes::from(out)).await;
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
