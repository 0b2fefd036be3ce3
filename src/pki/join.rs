//! Joining nodes, the k3s way: the join token `K10<sha256 of the server CA PEM>::
//! server:<secret>` pins the CA an agent must find at `/cacerts` and carries the
//! secret that buys a node its certificates (a client certificate as
//! `system:node:<name>` in `system:nodes`, and a kubelet serving certificate).

use super::{Ca, PkiError, files, leaf, load_or_make_ca, write_private};
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use std::net::IpAddr;
use std::path::Path;

/// The hex sha256 of `pem`: what a K10 token pins.
pub fn ca_hash(pem: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, pem.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A join token as people pass it: `K10<hash>::<user>:<secret>`, or the bare secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The pinned CA hash (absent in a bare secret).
    pub ca_hash: Option<String>,
    /// Who the secret belongs to (`server` unless the token names another).
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

/// A join token that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is empty or only white space.
    #[error("the join token is empty")]
    Empty,
    /// A `K10` token without the `::` after its CA hash.
    #[error(
        "a K10 join token has the form K10<ca-hash>::server:<secret>; copy it whole from the server's <data-dir>/server/node-token"
    )]
    Form,
    /// The CA hash of a `K10` token is not 64 hex digits.
    #[error(
        "the CA hash in the join token ({0:?}) is not a sha256 in hex; copy the token whole from the server's <data-dir>/server/node-token"
    )]
    Hash(String),
    /// A `K10` token with an empty secret.
    #[error("the join token has no secret after its CA hash")]
    NoSecret,
}

impl Token {
    /// Reads a token as given (surrounding white space ignored): a `K10` token, or
    /// else the bare secret for user `server`.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        let Some(rest) = text.strip_prefix("K10") else {
            return Ok(Token {
                ca_hash: None,
                user: "server".into(),
                secret: text.to_string(),
            });
        };
        let (hash, creds) = rest.split_once("::").ok_or(TokenError::Form)?;
        let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid_hash {
            return Err(TokenError::Hash(hash.to_string()));
        }
        let (user, secret) = creds.split_once(':').unwrap_or(("server", creds));
        if secret.is_empty() {
            return Err(TokenError::NoSecret);
        }
        Ok(Token {
            ca_hash: Some(hash.to_ascii_lowercase()),
            user: user.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The token as text again: the `K10` form, or the bare secret.
    pub fn render(&self) -> String {
        match &self.ca_hash {
            Some(h) => format!("K10{h}::{}:{}", self.user, self.secret),
            None => self.secret.clone(),
        }
    }
}

/// 128 random bits in hex: join secrets and node passwords.
pub fn random_secret() -> Result<String, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| PkiError::Invalid("no randomness available for the join token".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The server's join secret: `--token` if given (a bare secret or a whole K10 token),
/// else the one kept from an earlier start, else a new one. Writes
/// `<server_dir>/token` and `<server_dir>/node-token` (0600) with the full token.
pub fn ensure_token(
    server_dir: &Path,
    given: Option<&str>,
    server_ca_pem: &str,
) -> Result<String, PkiError> {
    let path = server_dir.join("token");
    let secret = match given.filter(|g| !g.trim().is_empty()) {
        Some(g) => {
            Token::parse(g)
                .map_err(|e| PkiError::Invalid(e.to_string()))?
                .secret
        }
        None => match files::read(&path)? {
            Some(old) => {
                Token::parse(&old)
                    .map_err(|e| PkiError::File {
                        path: path.clone(),
                        message: format!("{e}; delete the file to get a new token"),
                    })?
                    .secret
            }
            None => random_secret()?,
        },
    };
    let token = Token {
        ca_hash: Some(ca_hash(server_ca_pem)),
        user: "server".into(),
        secret: secret.clone(),
    }
    .render();
    for name in ["token", "node-token"] {
        write_private(
            &server_dir.join(name),
            format!("{token}\n").as_bytes(),
            0o600,
        )?;
    }
    Ok(secret)
}

/// `--agent-token`: its secret, with the full K10 token written to
/// `<server_dir>/agent-token` (0600); `None` (and no file) when it is not given.
pub fn ensure_agent_token(
    server_dir: &Path,
    given: Option<&str>,
    server_ca_pem: &str,
) -> Result<Option<String>, PkiError> {
    let path = server_dir.join("agent-token");
    let Some(given) = given.filter(|g| !g.trim().is_empty()) else {
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| PkiError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        return Ok(None);
    };
    let secret = Token::parse(given)
        .map_err(|e| PkiError::Invalid(e.to_string()))?
        .secret;
    let token = Token {
        ca_hash: Some(ca_hash(server_ca_pem)),
        user: "node".into(),
        secret: secret.clone(),
    }
    .render();
    write_private(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(Some(secret))
}

/// `name`'s client certificate and key (PEM): CN `system:node:<name>`, O
/// `system:nodes`, from the client CA.
pub fn node_client_cert(tls_dir: &Path, name: &str) -> Result<(String, String), PkiError> {
    let client_ca: Ca = load_or_make_ca(tls_dir, "client-ca", "skua-client-ca")?;
    leaf(
        &client_ca,
        &format!("system:node:{name}"),
        Some("system:nodes"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// The client certificate agents run their network functions under (k3s'
/// `client-k3s-controller.crt`): CN `system:skua-controller`, no group, from the
/// client CA. It may read pods, namespaces, nodes and NetworkPolicies, nothing more.
pub fn agent_controller_cert(tls_dir: &Path) -> Result<(String, String), PkiError> {
    let client_ca: Ca = load_or_make_ca(tls_dir, "client-ca", "skua-client-ca")?;
    leaf(
        &client_ca,
        crate::api::users::AGENT_CONTROLLER_USER,
        None,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// How old the API server's kubelet client certificate (valid a year) may get before
/// it is issued again.
const RENEW_AFTER: std::time::Duration = std::time::Duration::from_secs(300 * 24 * 3600);

/// The API server's client certificate for calling kubelets (logs, exec, port
/// forwarding): CN `kube-apiserver-kubelet-client`, O `system:masters`, from the
/// client CA; kept in `client-kube-apiserver-kubelet.{crt,key}` and reused until it is
/// 300 days old, then issued again (it is valid for 365).
pub fn apiserver_kubelet_client(tls_dir: &Path) -> Result<(String, String), PkiError> {
    let (crt, key) = (
        tls_dir.join("client-kube-apiserver-kubelet.crt"),
        tls_dir.join("client-kube-apiserver-kubelet.key"),
    );
    let fresh = std::fs::metadata(&crt)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RENEW_AFTER);
    if let (true, Some(c), Some(k)) = (fresh, super::files::read(&crt)?, super::files::read(&key)?)
    {
        return Ok((c, k));
    }
    let client_ca: Ca = load_or_make_ca(tls_dir, "client-ca", "skua-client-ca")?;
    let (c, k) = leaf(
        &client_ca,
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    write_private(&crt, c.as_bytes(), 0o644)?;
    write_private(&key, k.as_bytes(), 0o600)?;
    Ok((c, k))
}

/// The CA of kubelet serving certificates: the API server trusts it only to verify
/// kubelets, so a certificate a join buys can never pass for the API server (pods and
/// agents trust the server CA, which signs nothing a join asks for).
pub const KUBELET_SERVING_CA: &str = "kubelet-serving-ca";

/// The kubelet serving CA's certificate (PEM), made on first use.
pub fn kubelet_serving_ca(tls_dir: &Path) -> Result<String, PkiError> {
    Ok(load_or_make_ca(tls_dir, KUBELET_SERVING_CA, "skua-kubelet-serving-ca")?.cert)
}

/// `name`'s kubelet serving certificate and key (PEM) for its name and `ips`, from
/// the kubelet serving CA.
pub fn node_serving_cert(
    tls_dir: &Path,
    name: &str,
    ips: &[IpAddr],
) -> Result<(String, String), PkiError> {
    let server_ca: Ca = load_or_make_ca(tls_dir, KUBELET_SERVING_CA, "skua-kubelet-serving-ca")?;
    let mut sans = vec![SanType::DnsName(name.try_into().map_err(|_| {
        PkiError::Invalid(format!("node name {name:?} is not a DNS name"))
    })?)];
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    leaf(
        &server_ca,
        name,
        None,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_render_and_refuse_what_is_broken() {
        let h = "a".repeat(64);
        let t = Token::parse(&format!("K10{h}::server:s3cret")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(h.as_str()));
        assert_eq!((t.user.as_str(), t.secret.as_str()), ("server", "s3cret"));
        assert_eq!(t.render(), format!("K10{h}::server:s3cret"));
        let bare = Token::parse("s3cret\n").unwrap();
        assert_eq!((bare.ca_hash, bare.secret.as_str()), (None, "s3cret"));
        assert!(
            Token::parse("K10abc::server:x")
                .unwrap_err()
                .to_string()
                .contains("sha256")
        );
        assert!(
            Token::parse(&format!("K10{h}"))
                .unwrap_err()
                .to_string()
                .contains("K10<ca-hash>")
        );
        assert!(Token::parse("").is_err());
    }

    #[test]
    fn the_token_is_kept_across_starts_and_pins_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_token(dir.path(), None, "CA PEM").unwrap();
        let again = ensure_token(dir.path(), None, "CA PEM").unwrap();
        assert_eq!(first, again);
        let text = std::fs::read_to_string(dir.path().join("node-token")).unwrap();
        let t = Token::parse(&text).unwrap();
        assert_eq!(t.ca_hash.unwrap(), ca_hash("CA PEM"));
        assert_eq!(t.secret, first);
        let given = ensure_token(dir.path(), Some("my-secret"), "CA PEM").unwrap();
        assert_eq!(given, "my-secret");
    }
}
