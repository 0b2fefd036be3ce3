//! HTTPS to a server named by a kubeconfig (client certificate, server CA), over one
//! HTTP/2 connection that is made again when it breaks.

use super::{ClientError, ResponseBody};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// A server reached over HTTPS.
pub struct Remote {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

fn bad(path: &Path, what: &str) -> ClientError {
    ClientError::transport(format!(
        "{}: {what}; use a kubeconfig skua wrote (e.g. /etc/skua/skua.yaml)",
        path.display()
    ))
}

impl Remote {
    /// Reads the current context's cluster and user from a kubeconfig with embedded
    /// certificate data.
    pub fn from_kubeconfig(path: &Path) -> Result<Remote, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, &e.to_string()))?;
        let cfg: Value = serde_saphyr::from_str(&text).map_err(|e| bad(path, &e.to_string()))?;
        let current = cfg["current-context"].as_str().unwrap_or("");
        let named = |list: &str, name: &str| -> Value {
            cfg[list]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["name"] == name).cloned())
                .or_else(|| cfg[list].as_array().and_then(|l| l.first().cloned()))
                .unwrap_or(Value::Null)
        };
        let context = named("contexts", current);
        let cluster = named(
            "clusters",
            context["context"]["cluster"].as_str().unwrap_or(""),
        );
        let user = named("users", context["context"]["user"].as_str().unwrap_or(""));
        let data = |v: &Value, field: &str| -> Result<Vec<u8>, ClientError> {
            let b64 = v[field]
                .as_str()
                .ok_or_else(|| bad(path, &format!("{field} is missing")))?;
            STANDARD
                .decode(b64)
                .map_err(|_| bad(path, &format!("{field} is not base64")))
        };
        let ca = data(&cluster["cluster"], "certificate-authority-data")?;
        let cert = data(&user["user"], "client-certificate-data")?;
        let key = data(&user["user"], "client-key-data")?;
        let server = cluster["cluster"]["server"]
            .as_str()
            .ok_or_else(|| bad(path, "the cluster has no server"))?;
        let uri: http::Uri = server
            .parse()
            .map_err(|_| bad(path, "the server is not a URL"))?;
        let host = uri
            .host()
            .unwrap_or("127.0.0.1")
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.map_err(|_| bad(path, "bad CA certificate"))?)
                .map_err(|_| bad(path, "bad CA certificate"))?;
        }
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad(path, "bad client certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| bad(path, "bad client key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientError::transport)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(ClientError::transport)?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Remote {
            host,
            port,
            tls: Arc::new(tls),
            conn: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(ClientError::transport)?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(ClientError::transport)?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(ClientError::transport)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(ClientError::transport)?;
        tokio::spawn(conn);
        Ok(send)
    }
}

#[async_trait::async_trait]
impl super::Transport for Remote {
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<ResponseBody>, ClientError> {
        let (mut parts, body) = req.into_parts();
        parts.uri = format!("https://{}:{}{}", self.host, self.port, parts.uri)
            .parse()
            .map_err(ClientError::transport)?;
        let req = Request::from_parts(parts, body);
        let mut sender = {
            let mut guard = self.conn.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let s = self.connect().await?;
                    *guard = Some(s.clone());
                    s
                }
            }
        };
        sender.ready().await.map_err(ClientError::transport)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(ClientError::transport)?;
        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as super::BoxError).boxed()))
    }
}
