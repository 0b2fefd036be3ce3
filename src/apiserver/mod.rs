//! The HTTPS front of the Kubernetes API: TLS (rustls, HTTP/1.1 and HTTP/2 by ALPN,
//! connection upgrades), client-certificate authentication against the client CA, and
//! the endpoints every client touches first. Resource handlers come next (issue #3).

pub(crate) mod admission;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod body;
mod discovery;
mod follow;
pub(crate) mod impersonation;
pub(crate) mod inflight;
pub(crate) mod join;
pub(crate) mod metrics;
pub(crate) mod node_authz;
pub(crate) mod openapi;
mod openapi_v2;
pub(crate) mod protobuf;
pub(crate) mod proxy;
pub(crate) mod rbac;
pub(crate) mod registry;
pub(crate) mod request_info;
pub(crate) mod resources;
pub(crate) mod routes;
pub(crate) mod status;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod tokens;
pub mod watchcache;

use crate::pki::ServerPki;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The Kubernetes version skua's API corresponds to.
pub const KUBE_GIT_VERSION: &str = "v1.33.0+skua";

/// Why the API server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listening socket could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another skua or kube-apiserver using the port? Change it with --https-listen-port or --bind-address"
    )]
    Listen {
        /// The address it tried to listen on.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The certificates, key or client CA could not be loaded into TLS.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// What every request handler shares.
pub struct ApiContext {
    /// The datastore every object lives in.
    pub store: Arc<dyn crate::store::Store>,
    /// Issues and checks service-account tokens.
    pub tokens: tokens::TokenAuthority,
    /// What `/metrics` reports.
    pub metrics: Arc<metrics::Metrics>,
    /// host:port clients reach the API at, for `/api`'s serverAddressByClientCIDRs.
    pub server_address: String,
    /// Recent store changes decoded once for all watchers.
    pub watch_memo: resources::watch::EventMemo,
    /// What agents joining this server need (absent: joining is off).
    pub join: Option<join::JoinConfig>,
    /// Which objects each node's pods refer to (the Node authorizer's graph), kept
    /// by a watch that [`serve`] runs.
    pub node_graph: Arc<node_authz::NodeGraph>,
    /// Every Role, ClusterRole and binding, for the RBAC authorizer, kept by watches
    /// that [`serve`] runs.
    pub rbac: Arc<rbac::Rbac>,
    /// `--max-requests-inflight` and `--max-mutating-requests-inflight`.
    pub inflight: inflight::Inflight,
    /// `--anonymous-auth`: whether health and version answer without credentials.
    pub anonymous_auth: bool,
    /// `--audit-log-path`: where every request is recorded (absent: nowhere).
    pub audit: Option<audit::AuditLog>,
    /// `--service-cidr` and `--service-node-port-range`: where Services' addresses and
    /// node ports come from.
    pub service_ranges: resources::allocate::ServiceRanges,
    /// Lists and watches served from memory, one datastore watch per resource.
    pub watch_cache: watchcache::WatchCaches,
    /// The admission plugins every write passes.
    pub admission: admission::Chain,
    /// The client TLS to kubelets (logs, exec, port-forward), built on first use.
    pub kubelet_tls: proxy::KubeletTls,
    /// The resources served: the built-in ones and those added at run time.
    pub registry: registry::Registry,
}

/// Builds the TLS configuration: the serving certificate, ALPN h2 then http/1.1, and
/// optional client certificates verified against the client CA.
pub fn tls_config(pki: &ServerPki) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    let tls = |e: &dyn std::fmt::Display| ApiError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.client_ca_cert.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let chain = CertificateDer::pem_slice_iter(pki.serving_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes()).map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds the API port (before anything slow happens, so clients can connect early).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ApiError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen { addr, source })
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client has to send a request's headers (Go's `ReadHeaderTimeout`).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// HTTP/2 streams per connection (upstream sets 100 too, below Go's default 250).
const MAX_STREAMS: u32 = 100;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 10_000;

/// Connections one source address may hold at once (a node's pods share its address
/// behind the overlay's masquerade, so this is generous).
const MAX_CONNECTIONS_PER_SOURCE: usize = 1_000;

/// One connection counted against its source address until it drops.
struct PerSource {
    sources: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PerSource {
    fn take(
        sources: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<PerSource> {
        let mut map = sources.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        // this machine's own clients (the embedded agent, hollow nodes) are not capped
        if *n >= MAX_CONNECTIONS_PER_SOURCE && !ip.is_loopback() {
            return None;
        }
        *n += 1;
        Some(PerSource {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for PerSource {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<ApiContext>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let sources: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Default::default();
    let graph = tokio::spawn(node_authz::follow(
        ctx.store.clone(),
        ctx.node_graph.clone(),
    ));
    // requests wait for its first fill (routes.rs)
    let rbac = tokio::spawn(rbac::follow(ctx.store.clone(), ctx.rbac.clone()));
    let shutdown = async move {
        shutdown.await;
        graph.abort();
        rbac.abort();
    };
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        // as Go's net package does for every connection: a response's frames go out
        // as written, not held back for the client's delayed acknowledgement
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        // one cap per source address: beyond it, the newest is closed at once
        let Some(per_source) = PerSource::take(&sources, peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address: closed");
            continue;
        };
        // and one overall: beyond it, this connection waits (and the backlog fills)
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        tokio::spawn(async move {
            let _permit = (permit, per_source);
            // a client that never finishes its handshake is dropped
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // rustls has verified any client certificate against the client CA
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| auth::UserInfo::from_certificate(leaf.as_ref()))
                .unwrap_or_else(auth::UserInfo::anonymous);
            let anonymous = caller.is_anonymous();
            // the caller's address, for the join endpoints' rate limit (whatever the
            // client sent under that name is replaced)
            let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string()).ok();
            let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                match &peer_ip {
                    Some(ip) => {
                        req.headers_mut().insert(join::PEER_HEADER, ip.clone());
                    }
                    None => {
                        req.headers_mut().remove(join::PEER_HEADER);
                    }
                }
                routes::handle(req, caller.clone(), ctx.clone())
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // hyper's header-read timeout works only with a timer; slow-loris
            // connections are dropped after it
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS)
                // rapid reset: a client without a certificate gets few resets
                .max_pending_accept_reset_streams(if anonymous { 2 } else { 20 })
                .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
