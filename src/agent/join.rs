//! Joining a server, as a k3s agent does:
//!
//! 1. Fetch `/cacerts` without trusting the server yet, and check its sha256 against
//!    the hash in the K10 token. A mismatch ends the join (a possible man-in-the-middle).
//! 2. From then on, verify the server's certificate with that CA, and only then show
//!    the join secret, the node name and the node password to get the node's client
//!    certificate (`system:node:<name>` in `system:nodes`) and kubelet serving
//!    certificate.
//!
//! While the server cannot be reached, the agent keeps trying with back-off. A refusal
//! (wrong token, a taken node name) ends the join with one line that says what to do.

use crate::pki::join::{Token, ca_hash};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a join failed for good (retrying would not help).
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Config(String),
}

/// What a join leaves in the agent's directory.
pub struct Joined {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The kubeconfig of the agent's network functions (`system:skua-controller`).
    pub controller_kubeconfig: PathBuf,
    /// The server's cluster-wide settings.
    pub config: crate::apiserver::join::AgentConfig,
}

/// The server's address from `--server`.
fn host_port(url: &str) -> Result<(String, u16), JoinError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        JoinError::Config(format!(
            "--server {url:?} must start with https:// (e.g. https://10.0.0.1:6443)"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| JoinError::Config(format!("--server {url:?}: bad port {p:?}")))?,
        ),
        _ => (authority, 6443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(JoinError::Config(format!("--server {url:?} names no host")));
    }
    Ok((host.to_string(), port))
}

/// Accepts any server certificate: only for fetching the CA, whose hash is checked
/// against the token before anything secret is sent.
#[derive(Debug)]
struct TrustNothingYet(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustNothingYet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_unverified() -> Result<Arc<rustls::ClientConfig>, JoinError> {
    let p = provider();
    let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustNothingYet(p)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn tls_pinned(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, JoinError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert =
            cert.map_err(|e| JoinError::Refused(format!("the server's CA is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| JoinError::Refused(format!("the server's CA is unusable: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The most a join answer (a CA bundle, a certificate and key, the config) may be.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why the server could not be asked (worth retrying, unless its certificate is wrong).
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error("connection timed out")]
    Timeout,
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Name(String),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Http(hyper::Error),
    #[error("{0}")]
    Request(http::Error),
    #[error("reading the answer: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// One HTTPS GET; `Err` is a transport failure (worth retrying).
async fn get(
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, String)],
) -> Result<(StatusCode, Option<String>, Bytes), Unreachable> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| Unreachable::Timeout)?
    .map_err(Unreachable::Connect)?;
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| Unreachable::Name(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(Unreachable::Tls)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Unreachable::Http)?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", format!("{host}:{port}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(Unreachable::Request)?;
    let resp = send.send_request(req).await.map_err(Unreachable::Http)?;
    let status = resp.status();
    let date = resp
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .map(str::to_string);
    // the server is not trusted yet when /cacerts is read: its answer is bounded
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(Unreachable::Read)?
        .to_bytes();
    Ok((status, date, body))
}

/// `get`, retried with back-off while the server cannot be reached.
async fn get_retrying(
    server: &str,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, String)],
) -> Result<(StatusCode, Option<String>, Bytes), JoinError> {
    let (host, port) = host_port(server)?;
    let mut backoff = Duration::from_secs(1);
    loop {
        match get(&host, port, tls.clone(), path, headers).await {
            // the server is slowing down join attempts from this address (someone
            // else here tried wrong tokens): wait, and ask again
            Ok((StatusCode::TOO_MANY_REQUESTS, _, _)) => {
                tracing::warn!(server, retry_in = ?Duration::from_secs(10), "the server is limiting join attempts from this address; retrying");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok(r) => return Ok(r),
            Err(e @ Unreachable::Tls(_)) if e.to_string().contains("certificate") => {
                return Err(JoinError::Refused(format!(
                    "the server at {server} does not present a certificate from the CA the token pins ({e}); check --server"
                )));
            }
            Err(e) => {
                tracing::warn!(server, error = %e, retry_in = ?backoff, "cannot reach the server yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Seconds since the epoch of an HTTP date (`Sun, 22 Nov 2026 08:43:26 GMT`).
fn http_date(d: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = d.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == month)? + 1;
    let day: u32 = day.parse().ok()?;
    crate::api::meta::parse_rfc3339(&format!("{year}-{m:02}-{day:02}T{time}Z"))
}

/// Seconds this machine's clock is ahead of the server's (negative: behind), from the
/// server's HTTP `Date` header.
fn skew(date: &str) -> Option<i64> {
    Some(crate::api::meta::now_secs() - http_date(date)?)
}

/// The node password: kept in `file`, made on first use.
fn node_password(file: &Path) -> Result<String, JoinError> {
    match std::fs::read_to_string(file) {
        Ok(p) if !p.trim().is_empty() => return Ok(p.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(JoinError::Config(format!(
                "cannot read the node password {}: {e}",
                file.display()
            )));
        }
    }
    let p = crate::pki::join::random_secret().map_err(|e| JoinError::Config(e.to_string()))?;
    crate::pki::write_private(file, format!("{p}\n").as_bytes(), 0o600)
        .map_err(|e| JoinError::Config(e.to_string()))?;
    Ok(p)
}

/// Joins `server` as `name`, writing the certificates and a kubeconfig to `dir`.
pub async fn join(
    server: &str,
    token: &Token,
    name: &str,
    ips: &[std::net::IpAddr],
    password_file: &Path,
    dir: &Path,
) -> Result<Joined, JoinError> {
    // 1. the CA, checked against the token before it is trusted
    let (status, date, body) = get_retrying(server, &tls_unverified()?, "/cacerts", &[]).await?;
    if status != StatusCode::OK {
        return Err(JoinError::Refused(format!(
            "{server}/cacerts answered {status}: is it a skua server?"
        )));
    }
    let ca = String::from_utf8_lossy(&body).into_owned();
    match &token.ca_hash {
        Some(want) if *want != ca_hash(&ca) => {
            return Err(JoinError::Refused(format!(
                "the CA of {server} does not match the hash in the join token: possible man-in-the-middle; check --server, and copy the token again from the server's <data-dir>/server/node-token"
            )));
        }
        Some(_) => {}
        None => tracing::warn!(
            "the join token carries no CA hash: trusting the CA {server} presents; use the full K10 token from <data-dir>/server/node-token"
        ),
    }
    if let Some(off) = date.as_deref().and_then(skew) {
        if off.abs() > 300 {
            return Err(JoinError::Refused(format!(
                "this machine's clock is {} s {} the server's: certificates would not be valid; fix the time (NTP) and join again",
                off.abs(),
                if off < 0 { "behind" } else { "ahead of" }
            )));
        }
    }
    // 2. the certificates, over a connection verified with that CA
    let pinned = tls_pinned(&ca)?;
    let password = node_password(password_file)?;
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("node:{}", token.secret))
    };
    let ip_list = ips
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let headers = [
        ("authorization", format!("Basic {auth}")),
        ("skua-node-name", name.to_string()),
        ("skua-node-password", password),
        ("skua-node-ip", ip_list),
    ];
    std::fs::create_dir_all(dir)
        .map_err(|e| JoinError::Config(format!("cannot create {}: {e}", dir.display())))?;
    let mut issued = Vec::new();
    for which in [
        "client-kubelet",
        "serving-kubelet",
        "client-skua-controller",
    ] {
        let (status, _, body) =
            get_retrying(server, &pinned, &format!("/v1-skua/{which}.crt"), &headers).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(JoinError::Refused(format!(
                "{server} refused to join this node: {message}"
            )));
        }
        let split = text.find("-----BEGIN PRIVATE KEY-----").ok_or_else(|| {
            JoinError::Refused(format!("{server} sent no key with the {which} certificate"))
        })?;
        let (cert, key) = text.split_at(split);
        let write = |file: String, data: &str, mode: u32| {
            crate::pki::write_private(&dir.join(&file), data.as_bytes(), mode)
                .map_err(|e| JoinError::Config(e.to_string()))
        };
        write(format!("{which}.crt"), cert, 0o644)?;
        write(format!("{which}.key"), key, 0o600)?;
        issued.push((cert.to_string(), key.to_string()));
    }
    let (status, _, client_ca) =
        get_retrying(server, &pinned, "/v1-skua/client-ca.crt", &headers).await?;
    if status != StatusCode::OK {
        return Err(JoinError::Refused(format!(
            "{server} did not give the client CA ({status})"
        )));
    }
    let (status, _, body) = get_retrying(server, &pinned, "/v1-skua/config", &headers).await?;
    let config: crate::apiserver::join::AgentConfig = if status == StatusCode::OK {
        serde_json::from_slice(&body).map_err(|e| {
            JoinError::Refused(format!("{server} sent a cluster config this agent cannot read ({e}): is the server a different skua version?"))
        })?
    } else {
        return Err(JoinError::Refused(format!(
            "{server} did not give the cluster config ({status})"
        )));
    };
    crate::pki::write_private(&dir.join("client-ca.crt"), &client_ca, 0o644)
        .map_err(|e| JoinError::Config(e.to_string()))?;
    crate::pki::write_private(&dir.join("server-ca.crt"), ca.as_bytes(), 0o644)
        .map_err(|e| JoinError::Config(e.to_string()))?;
    let kubeconfig = dir.join("kubelet.kubeconfig");
    let text = crate::pki::kubeconfig::render(server, &ca, &issued[0].0, &issued[0].1);
    crate::pki::write_private(&kubeconfig, text.as_bytes(), 0o600)
        .map_err(|e| JoinError::Config(e.to_string()))?;
    // NetworkPolicy runs under its own identity, not the node's (k3s-controller)
    let controller_kubeconfig = dir.join("skua-controller.kubeconfig");
    let text = crate::pki::kubeconfig::render(server, &ca, &issued[2].0, &issued[2].1);
    crate::pki::write_private(&controller_kubeconfig, text.as_bytes(), 0o600)
        .map_err(|e| JoinError::Config(e.to_string()))?;
    Ok(Joined {
        dir: dir.to_path_buf(),
        kubeconfig,
        controller_kubeconfig,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_name_host_and_port() {
        assert_eq!(
            host_port("https://10.0.0.1:6443").unwrap(),
            ("10.0.0.1".into(), 6443)
        );
        assert_eq!(
            host_port("https://srv.example").unwrap(),
            ("srv.example".into(), 6443)
        );
        assert_eq!(
            host_port("https://[::1]:7443/").unwrap(),
            ("::1".into(), 7443)
        );
        assert!(
            host_port("http://x:6443")
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        assert!(host_port("https://x:port").is_err());
    }

    #[test]
    fn http_dates_and_skew() {
        assert_eq!(
            http_date("Sun, 22 Nov 2026 08:43:26 GMT"),
            crate::api::meta::parse_rfc3339("2026-11-22T08:43:26Z")
        );
        assert_eq!(http_date("yesterday"), None);
        let now = crate::api::meta::now_secs();
        let ahead = crate::api::meta::rfc3339(now - 600);
        // an HTTP date ten minutes before now: this clock is ~600 s ahead
        let t = ahead.replace('T', " ").replace('Z', "");
        let (ymd, hms) = t.split_once(' ').unwrap();
        let parts: Vec<&str> = ymd.split('-').collect();
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = months[parts[1].parse::<usize>().unwrap() - 1];
        let date = format!("Mon, {} {m} {} {hms} GMT", parts[2], parts[0]);
        assert!((skew(&date).unwrap() - 600).abs() <= 2, "{date}");
    }
}
