//! The node-side subresources, proxied to the node's kubelet over HTTPS as upstream's
//! API server does: the kubelet's serving certificate is verified with the kubelet
//! serving CA (and the server CA, which signed them before skua had that CA),
//! and the API server shows its own kubelet client certificate
//! (`kube-apiserver-kubelet-client`, from the client CA).
//!
//! Served: `pods/log` (→ `/containerLogs/...`), and `pods/exec`, `pods/attach`,
//! `pods/portforward` (upgraded connections spliced through to `/exec/...`,
//! `/attach/...`, `/portForward/...`).

use super::ApiContext;
use super::status::{ApiStatus, Body, ChannelBody};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The kubelet client configuration and when it was built: built again after a
/// day, so a renewed client certificate is picked up. One per API server
/// ([`ApiContext::kubelet_tls`]).
#[derive(Default)]
pub struct KubeletTls(Mutex<Option<(Arc<rustls::ClientConfig>, std::time::Instant)>>);

fn unavailable(message: impl Into<String>) -> ApiStatus {
    ApiStatus::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

fn kubelet_tls(ctx: &ApiContext) -> Result<Arc<rustls::ClientConfig>, ApiStatus> {
    if let Some((c, built)) = ctx
        .kubelet_tls
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        if built.elapsed() < std::time::Duration::from_secs(24 * 3600) {
            return Ok(c.clone());
        }
    }
    let join = ctx
        .join
        .as_ref()
        .ok_or_else(|| unavailable("this server has no node PKI: it cannot reach kubelets"))?;
    let fail = |e: &dyn std::fmt::Display| unavailable(format!("kubelet client TLS: {e}"));
    let (cert, key) =
        crate::pki::join::apiserver_kubelet_client(&join.tls_dir).map_err(|e| fail(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    let kubelet_ca = crate::pki::join::kubelet_serving_ca(&join.tls_dir).map_err(|e| fail(&e))?;
    for pem in [kubelet_ca.as_str(), join.server_ca.as_str()] {
        for ca in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(ca.map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
        }
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| fail(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| fail(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    *ctx.kubelet_tls.0.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((config.clone(), std::time::Instant::now()));
    Ok(config)
}

/// The kubelet address of a node: its InternalIP (else any address) and port.
async fn kubelet_of(ctx: &ApiContext, node: &str) -> Result<(String, u16), ApiStatus> {
    let nodes = &crate::api::registry::NODES;
    let kv = ctx
        .store
        .get(&super::resources::object::key(nodes, None, node))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .kv
        .ok_or_else(|| ApiStatus::not_found("", "nodes", node))?;
    let obj: Value = serde_json::from_slice(&kv.value).map_err(|e| unavailable(e.to_string()))?;
    let addresses = obj["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pick = |t: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| unavailable(format!("node {node:?} has no address")))?;
    let port = obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(10250) as u16;
    Ok((host, port))
}

type KubeletStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A verified TLS connection to a node's kubelet, and its `host:port`.
async fn connect_kubelet(
    ctx: &ApiContext,
    node: &str,
    what: &str,
) -> Result<(KubeletStream, String), ApiStatus> {
    let (host, port) = kubelet_of(ctx, node).await?;
    let tls = kubelet_tls(ctx)?;
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{what} \"https://{host}:{port}\": {e}"),
        )
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    Ok((stream, format!("{host}:{port}")))
}

/// One HTTPS request to a kubelet; the answer streams back as it comes.
pub async fn to_kubelet(
    ctx: &ApiContext,
    node: &str,
    path_and_query: &str,
) -> Result<http::Response<Body>, ApiStatus> {
    let (stream, host) = connect_kubelet(ctx, node, "Get").await?;
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiStatus::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Get \"https://{host}{path_and_query}\": {e}"),
        )
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = http::Request::get(path_and_query)
        .header(http::header::HOST, host.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let (code, reason) = match status {
            StatusCode::BAD_REQUEST => (StatusCode::BAD_REQUEST, "BadRequest"),
            StatusCode::NOT_FOUND => (StatusCode::NOT_FOUND, "NotFound"),
            StatusCode::FORBIDDEN => (StatusCode::FORBIDDEN, "Forbidden"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        return Err(ApiStatus::new(code, reason, text));
    }
    let content_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut out = http::Response::new(BodyExt::boxed(ChannelBody::new(rx)));
    if let Some(ct) = content_type {
        out.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

/// The container a request names, or the pod's only one; upstream's errors otherwise.
fn container_of(pod: &Value, asked: Option<&str>) -> Result<String, ApiStatus> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let (app, init) = (names("containers"), names("initContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if app.iter().chain(init.iter()).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiStatus::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if app.len() == 1 => Ok(app[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiStatus::bad_request(message))
        }
    }
}

/// `pods/exec`, `pods/attach` and `pods/portforward`: the client's upgraded
/// connection (SPDY or WebSocket) is spliced through to the node's kubelet.
pub async fn stream<B>(
    ctx: &ApiContext,
    pod: &Value,
    sub: &str,
    req: &mut http::Request<B>,
) -> Result<http::Response<Body>, ApiStatus> {
    use crate::net::upgrade;
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    if !upgrade::is_upgrade(req.headers()) {
        return Err(ApiStatus::bad_request("Upgrade request required"));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let values = |k: &str| crate::util::url::values(&query, k);
    let flag = |k: &str| values(k).iter().any(|v| matches!(v.as_str(), "1" | "true"));
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let path = if sub == "portforward" {
        if phase != "Running" {
            return Err(ApiStatus::bad_request(format!(
                "pod {name} is not running and cannot be forwarded; current phase is {phase}"
            )));
        }
        let ports: Vec<String> = values("ports")
            .iter()
            .map(|p| format!("ports={}", crate::util::url::encode(p)))
            .collect();
        format!(
            "/portForward/{ns}/{name}{}{}",
            if ports.is_empty() { "" } else { "?" },
            ports.join("&")
        )
    } else {
        if matches!(phase, "Succeeded" | "Failed") || phase == "Pending" {
            return Err(ApiStatus::bad_request(format!(
                "pod {name} is not running and cannot execute commands; current phase is {phase}"
            )));
        }
        let container = container_of(pod, values("container").first().map(String::as_str))?;
        let mut params: Vec<String> = Vec::new();
        if sub == "exec" {
            let commands = values("command");
            if commands.is_empty() {
                return Err(ApiStatus::bad_request(
                    "you must specify at least 1 command",
                ));
            }
            for c in commands {
                params.push(format!("command={}", crate::util::url::encode(&c)));
            }
        }
        for (theirs, ours) in [
            ("stdin", "input"),
            ("stdout", "output"),
            ("stderr", "error"),
            ("tty", "tty"),
        ] {
            if flag(theirs) {
                params.push(format!("{ours}=1"));
            }
        }
        format!("/{sub}/{ns}/{name}/{container}?{}", params.join("&"))
    };
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiStatus::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (stream, host) = connect_kubelet(ctx, node, "error dialing backend").await?;
    let method = req.method().clone();
    let answer = upgrade::request(stream, &method, &path, &host, req.headers())
        .await
        .map_err(|e| {
            ApiStatus::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("error dialing backend: {e}"),
            )
        })?;
    if answer.status != StatusCode::SWITCHING_PROTOCOLS {
        let text = String::from_utf8_lossy(&answer.rest).trim().to_string();
        let (code, reason) = match answer.status {
            StatusCode::BAD_REQUEST => (StatusCode::BAD_REQUEST, "BadRequest"),
            StatusCode::NOT_FOUND => (StatusCode::NOT_FOUND, "NotFound"),
            StatusCode::FORBIDDEN => (StatusCode::FORBIDDEN, "Forbidden"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        return Err(ApiStatus::new(code, reason, text));
    }
    Ok(upgrade::splice(req, answer))
}

/// `GET pods/<name>/log`: the container's log from its node's kubelet.
pub async fn pod_log(
    ctx: &ApiContext,
    pod: &Value,
    query: &[(String, String)],
) -> Result<http::Response<Body>, ApiStatus> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let container = container_of(pod, q("container"))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiStatus::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let mut forward = Vec::new();
    for key in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "sinceSeconds",
        "sinceTime",
        "limitBytes",
    ] {
        if let Some(v) = q(key) {
            forward.push(format!("{key}={}", crate::util::url::encode(v)));
        }
    }
    let path = format!(
        "/containerLogs/{ns}/{name}/{container}{}{}",
        if forward.is_empty() { "" } else { "?" },
        forward.join("&")
    );
    to_kubelet(ctx, node, &path).await
}
