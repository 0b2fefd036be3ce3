//! The endpoints agents join through, as k3s' supervisor serves them on the API port:
//!
//! - `GET /cacerts`, open to anyone: the server CA bundle. An agent checks its sha256
//!   against the hash in its K10 token before it trusts it.
//! - `GET /v1-skua/client-kubelet.crt` and `/v1-skua/serving-kubelet.crt`: a node's
//!   client and kubelet serving certificates (certificate, then key, in PEM). The
//!   caller shows the join secret (HTTP basic auth, `node:<secret>`) and names the
//!   node (`Skua-Node-Name`) with its password (`Skua-Node-Password`). The first join
//!   of a name stores the password's hash in the Secret
//!   `kube-system/<name>.node-password.skua`; later joins must show the same password,
//!   so another machine cannot take over an existing node's name.
//! - `GET /v1-skua/client-skua-controller.crt`, for the join secret: the identity
//!   agents run NetworkPolicy under (k3s' `client-k3s-controller.crt`), which may read
//!   every pod and namespace, as a node credential may not.
//! - `GET /v1-skua/client-ca.crt`, for the join secret: the client CA, so a kubelet
//!   can verify the API server's client certificate.

use super::ApiContext;
use super::status::{ApiStatus, Body};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::path::PathBuf;

/// What the join endpoints need.
pub struct JoinConfig {
    /// The secret parts of the tokens that may join: the server token's, and
    /// `--agent-token`'s when given (k3s: agents may use either).
    pub secrets: Vec<String>,
    /// Refused join attempts by source address, to slow down guessing.
    pub failures: FailureLimiter,
    /// The server CA bundle (PEM) that `/cacerts` serves.
    pub server_ca: String,
    /// Where the CAs' keys are.
    pub tls_dir: PathBuf,
    /// What every agent must agree on with the server (`/v1-skua/config`).
    pub agent_config: AgentConfig,
}

/// The cluster-wide settings an agent learns when it joins (k3s' `/v1-k3s/config`):
/// they are the server's flags, so agents cannot disagree on them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub flannel_backend: String,
    pub cluster_dns: String,
    pub cluster_domain: String,
    /// `--disable coredns`: agents answer no cluster DNS.
    #[serde(default)]
    pub disable_dns: bool,
    #[serde(default)]
    pub disable_kube_proxy: bool,
    #[serde(default)]
    pub disable_network_policy: bool,
}

fn pem(body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `GET /cacerts`.
pub fn cacerts(join: &JoinConfig) -> Response<Body> {
    pem(join.server_ca.clone())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// How many refused join attempts an address may make in [`FAILURE_WINDOW`]; after
/// that it is answered 429 until the window ends, right secret or not.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Refused join attempts per source address (a bounded table: the oldest entries go).
#[derive(Default)]
pub struct FailureLimiter {
    seen: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl FailureLimiter {
    fn blocked(&self, ip: std::net::IpAddr) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, ip: std::net::IpAddr) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        if seen.len() > 10_000 {
            // a flood from more addresses than that: start again rather than grow
            seen.clear();
        }
        let entry = seen.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
    }
}

fn shows_secret(headers: &HeaderMap, secrets: &[String]) -> bool {
    let Some(basic) = header_text(headers, "authorization").and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(basic.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&decoded);
    let given = text.split_once(':').map_or(text.as_ref(), |(_, s)| s);
    // every secret is compared, so the time does not say which one matched
    secrets
        .iter()
        .fold(false, |found, secret| same(given, secret) | found)
}

/// Compares in time independent of the texts, their lengths included: the SHA-256
/// digests are compared in constant time (`subtle`), since the secret is what guards
/// the cluster's certificates.
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(a).as_ref().ct_eq(digest(b).as_ref()).into()
}

fn internal(message: impl Into<String>) -> ApiStatus {
    ApiStatus::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
}

fn password_hash(password: &str) -> String {
    crate::pki::join::ca_hash(password)
}

/// Checks (or, on a first join, records) `name`'s node password.
async fn check_password(ctx: &ApiContext, name: &str, password: &str) -> Result<(), ApiStatus> {
    let secrets = &crate::api::registry::SECRETS;
    let secret_name = format!("{name}.node-password.skua");
    let key = super::resources::object::key(secrets, Some("kube-system"), &secret_name);
    let got = ctx
        .store
        .get(&key)
        .await
        .map_err(super::resources::store_error)?;
    let hash = password_hash(password);
    if let Some(kv) = got.kv {
        let stored = super::resources::object::from_store(&kv)?;
        let known = stored["data"]["hash"]
            .as_str()
            .and_then(|h| STANDARD.decode(h).ok())
            .map(|h| String::from_utf8_lossy(&h).into_owned())
            .unwrap_or_default();
        if !same(&known, &hash) {
            return Err(ApiStatus::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "node password rejected for node {name:?}: another machine already joined under this name, or this machine's node password file changed; give this node another --node-name, or delete the Secret kube-system/{secret_name} if the old node is gone"
                ),
            ));
        }
        return Ok(());
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": "kube-system"},
        "immutable": true,
        "type": "skua.io/node-password",
        "data": {"hash": STANDARD.encode(hash)},
    });
    let apiserver = super::auth::UserInfo::apiserver();
    match super::resources::create(
        &ctx.writer(&apiserver),
        secrets,
        Some("kube-system"),
        secret,
        None,
    )
    .await
    {
        Ok(_) => Ok(()),
        // two joins of one name at once: the other one's password decides
        Err(s) if s.reason == "AlreadyExists" => {
            Box::pin(check_password(ctx, name, password)).await
        }
        Err(s) => Err(s),
    }
}

/// Whether the caller shows a join secret: a refusal is logged with the caller's
/// address, and an address refused too often is answered 429 for a while.
fn check_secret(join: &JoinConfig, headers: &HeaderMap) -> Result<(), ApiStatus> {
    let peer = headers_peer(headers);
    if peer.is_some_and(|ip| join.failures.blocked(ip)) {
        tracing::warn!(peer = ?peer, "join attempt refused: too many wrong tokens from this address");
        return Err(ApiStatus::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many refused join attempts from this address; try again in a minute",
        ));
    }
    if shows_secret(headers, &join.secrets) {
        return Ok(());
    }
    if let Some(ip) = peer {
        join.failures.failed(ip);
    }
    tracing::warn!(peer = ?peer, node = header_text(headers, "skua-node-name").unwrap_or(""), "join attempt with a wrong token refused");
    Err(ApiStatus::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "the join token was refused: use the server's <data-dir>/server/node-token",
    ))
}

/// The caller's address, as `serve` records it in the request (a header the server
/// sets itself; a client's own `skua-peer` header is overwritten there).
fn headers_peer(headers: &HeaderMap) -> Option<std::net::IpAddr> {
    header_text(headers, PEER_HEADER).and_then(|v| v.parse().ok())
}

/// The internal header carrying the caller's address to the join handlers.
pub const PEER_HEADER: &str = "skua-peer";

/// The join settings, for a caller that shows the join secret; otherwise the refusal
/// to send.
fn joining<'a>(
    ctx: &'a ApiContext,
    headers: &HeaderMap,
) -> Result<&'a JoinConfig, Box<Response<Body>>> {
    let Some(join) = ctx.join.as_ref() else {
        return Err(Box::new(ApiStatus::not_found("", "", "join").response()));
    };
    check_secret(join, headers).map_err(|s| Box::new(s.response()))?;
    Ok(join)
}

/// `GET /v1-skua/client-ca.crt`: the client CA, with which a kubelet verifies who
/// calls its API (the API server, proxying logs and exec). For the join secret only.
pub fn client_ca(ctx: &ApiContext, headers: &HeaderMap) -> Response<Body> {
    let join = match joining(ctx, headers) {
        Ok(j) => j,
        Err(refused) => return *refused,
    };
    match std::fs::read_to_string(join.tls_dir.join("client-ca.crt")) {
        Ok(ca) => pem(ca),
        Err(e) => internal(format!("cannot read the client CA: {e}")).response(),
    }
}

/// `GET /v1-skua/client-skua-controller.crt`: the agents' network-function identity
/// (certificate, then key). For the join secret only.
pub async fn controller_cert(ctx: &ApiContext, headers: &HeaderMap) -> Response<Body> {
    let join = match joining(ctx, headers) {
        Ok(j) => j,
        Err(refused) => return *refused,
    };
    let dir = join.tls_dir.clone();
    let issued =
        tokio::task::spawn_blocking(move || crate::pki::join::agent_controller_cert(&dir)).await;
    match issued {
        Ok(Ok((cert, key))) => pem(format!("{cert}{key}")),
        Ok(Err(e)) => internal(format!("cannot issue the controller certificate: {e}")).response(),
        Err(e) => internal(format!("certificate task failed: {e}")).response(),
    }
}

/// `GET /v1-skua/config`: the cluster-wide settings agents follow. For the join
/// secret only.
pub fn agent_config(ctx: &ApiContext, headers: &HeaderMap) -> Response<Body> {
    let join = match joining(ctx, headers) {
        Ok(j) => j,
        Err(refused) => return *refused,
    };
    let body = serde_json::to_vec(&join.agent_config).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /v1-skua/client-kubelet.crt` (`serving: false`) or
/// `/v1-skua/serving-kubelet.crt` (`serving: true`).
pub async fn node_cert(ctx: &ApiContext, headers: &HeaderMap, serving: bool) -> Response<Body> {
    match issue(ctx, headers, serving).await {
        Ok(body) => pem(body),
        Err(status) => status.response(),
    }
}

async fn issue(ctx: &ApiContext, headers: &HeaderMap, serving: bool) -> Result<String, ApiStatus> {
    let Some(join) = ctx.join.as_ref() else {
        return Err(ApiStatus::not_found("", "", "join"));
    };
    check_secret(join, headers)?;
    let name = header_text(headers, "skua-node-name")
        .ok_or_else(|| ApiStatus::bad_request("the Skua-Node-Name header is missing"))?
        .to_ascii_lowercase();
    let dns1123 = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !dns1123 {
        return Err(ApiStatus::bad_request(format!(
            "node name {name:?} is not a valid DNS subdomain (lower case letters, digits, '-' and '.'); set --node-name"
        )));
    }
    // names the API server answers to are not a node's to take
    let reserved = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "localhost",
    ];
    if reserved.contains(&name.as_str()) || name.starts_with("kubernetes.default.svc.") {
        return Err(ApiStatus::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("node name {name:?} is reserved for the API server; set another --node-name"),
        ));
    }
    let password = header_text(headers, "skua-node-password")
        .ok_or_else(|| ApiStatus::bad_request("the Skua-Node-Password header is missing"))?;
    check_password(ctx, &name, password).await?;
    let ips: Vec<std::net::IpAddr> = header_text(headers, "skua-node-ip")
        .unwrap_or("")
        .split(',')
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    let dir = join.tls_dir.clone();
    let issued = tokio::task::spawn_blocking(move || {
        if serving {
            crate::pki::join::node_serving_cert(&dir, &name, &ips)
        } else {
            crate::pki::join::node_client_cert(&dir, &name)
        }
    })
    .await
    .map_err(|e| internal(format!("certificate task failed: {e}")))?
    .map_err(|e| internal(format!("cannot issue the node certificate: {e}")))?;
    Ok(format!("{}{}", issued.0, issued.1))
}
