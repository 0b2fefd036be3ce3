//! Request routing: authentication, impersonation, the authorizer chain, then health,
//! version, discovery and resources.

use super::auth::UserInfo;
use super::request_info::RequestInfo;
use super::status::{Body, failure, json, text};
use super::{ApiContext, KUBE_GIT_VERSION, discovery};
use http::{Method, Request, Response, StatusCode, header};
use std::convert::Infallible;
use std::sync::Arc;

fn not_found() -> Response<Body> {
    super::status::ApiStatus::unknown_path().response()
}

/// How much of an unauthenticated request's body is read before the 401, so the
/// client gets the answer rather than a reset connection; the rest is never read.
const ANONYMOUS_DRAIN_BYTES: usize = 64 * 1024;

/// How long a request waits for the RBAC index's first fill.
const RBAC_FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a request's body may take to arrive.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) async fn handle<B>(
    req: Request<B>,
    caller: UserInfo,
    ctx: Arc<ApiContext>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let received = std::time::SystemTime::now();
    let info = RequestInfo::parse(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    // 1. what anyone may ask: no body is read, nothing is recorded
    if let Some(resp) = public(&req, &ctx).await {
        return Ok(resp);
    }
    let audit = Audit {
        ctx: &ctx,
        facts: ctx.audit.as_ref().map(|_| AuditFacts::of(&req)),
        info: &info,
        received,
    };
    let none = std::collections::BTreeMap::new();
    // 2. who is calling, before any of the body is read
    let caller = match authenticate(&ctx, caller, req.headers()).await {
        Ok(caller) => caller,
        Err(resp) => {
            let resp = audit.record(None, None, *resp, &none, None).await;
            // a client that sends slowly gets its answer anyway after a moment
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                super::body::drain(req.into_body(), ANONYMOUS_DRAIN_BYTES),
            )
            .await;
            return Ok(resp);
        }
    };
    let audited = caller.clone();
    // 2b. whom it acts as: itself, or whom it may impersonate (upstream's filter); the
    //     headers go, so nothing further (a proxied request) sees them
    // no request is decided before RBAC holds every role and binding (an
    // administrator's need not wait); a store that cannot list them is waited for only
    // so long
    if !caller.groups.iter().any(|g| g == "system:masters") {
        ctx.rbac.filled(RBAC_FILL_WAIT).await;
    }
    let mut req = req;
    let impersonated = match super::impersonation::impersonate(&ctx.rbac, &caller, req.headers()) {
        Ok(as_) => as_,
        Err(status) => {
            let resp = audit.record(Some(&audited), None, status.response(), &none, None);
            return Ok(resp.await);
        }
    };
    super::impersonation::strip(req.headers_mut());
    let caller = impersonated.clone().unwrap_or(caller);
    // 3. at most --max-requests-inflight / --max-mutating-requests-inflight at once
    //    (long-running requests aside), as upstream: 429 with Retry-After beyond
    let _slot = match ctx.inflight.admit(&info, &audited) {
        Ok(slot) => slot,
        Err(resp) => {
            let resp = audit.record(Some(&audited), impersonated.as_ref(), *resp, &none, None);
            return Ok(resp.await);
        }
    };
    // 4. the whole body, so no handler can answer with it unread (see body.rs)
    let (parts, body) = req.into_parts();
    // a body that trickles in does not hold a request slot for ever
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, super::body::collect(body))
        .await
        .unwrap_or_else(|_| {
            Err(super::status::ApiStatus::new(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                "the request body was not received in time",
            ))
        });
    let sent = collected.as_ref().ok().cloned();
    let (resp, notes) = match collected {
        Ok(bytes) => {
            let req = Request::from_parts(parts, http_body_util::Full::new(bytes));
            // what admission says besides yes or no: warnings, audit annotations
            let (served, notes) =
                super::admission::notes::scope(serve(req, caller, ctx.clone())).await;
            (
                super::resources::with_warnings(served?, &notes.warnings),
                notes.annotations,
            )
        }
        Err(status) => (status.response(), Default::default()),
    };
    // 5. the audit log and metrics, after authentication, with labels only from known
    //    resources and verbs
    let resp = audit
        .record(
            Some(&audited),
            impersonated.as_ref(),
            resp,
            &notes,
            sent.as_ref(),
        )
        .await;
    ctx.metrics.request(
        &super::metrics::RequestLabels::of(&info, &ctx.registry),
        resp.status().as_u16(),
        started.elapsed(),
    );
    Ok(resp)
}

/// What the audit log needs of a request, taken before its body is consumed.
struct AuditFacts {
    method: String,
    uri: String,
    source: Option<std::net::IpAddr>,
    user_agent: String,
}

impl AuditFacts {
    fn of<B>(req: &Request<B>) -> AuditFacts {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        AuditFacts {
            method: req.method().to_string(),
            // path and query, as upstream (HTTP/2 requests carry the whole URL)
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            source: header(super::join::PEER_HEADER).parse().ok(),
            user_agent: header("user-agent"),
        }
    }
}

/// A request's audit: the facts taken before its body was read, and how to record
/// its outcome at the level the policy gives it.
struct Audit<'a> {
    ctx: &'a ApiContext,
    facts: Option<AuditFacts>,
    info: &'a RequestInfo,
    received: std::time::SystemTime,
}

/// Watches, logs, exec, attach, port forwarding and proxying: their answers stream.
fn long_running(info: &RequestInfo) -> bool {
    info.verb == "watch"
        || matches!(
            info.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward" | "proxy")
        )
}

impl Audit<'_> {
    /// Records `resp` (and, when the level asks, the request's and the answer's
    /// bodies; an error's Status always) and hands it back.
    async fn record(
        &self,
        user: Option<&UserInfo>,
        impersonated: Option<&UserInfo>,
        resp: Response<Body>,
        annotations: &std::collections::BTreeMap<String, String>,
        sent: Option<&bytes::Bytes>,
    ) -> Response<Body> {
        use crate::api::audit_policy::Level;
        let (Some(log), Some(f)) = (&self.ctx.audit, &self.facts) else {
            return resp;
        };
        let level = log.decide(user, self.info).level;
        if level == Level::None {
            return resp;
        }
        let long = long_running(self.info);
        let code = resp.status();
        let keep = !long && (code.as_u16() >= 400 || level >= Level::RequestResponse);
        let (resp, response) = if keep {
            let (parts, body) = resp.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_else(|never| match never {});
            let value = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            let body = http_body_util::BodyExt::boxed(http_body_util::Full::new(bytes));
            (Response::from_parts(parts, body), value)
        } else {
            (resp, None)
        };
        let request = sent
            .filter(|_| level >= Level::Request)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
        log.record(&super::audit::Record {
            user,
            impersonated,
            annotations,
            info: self.info,
            method: &f.method,
            uri: &f.uri,
            source: f.source,
            user_agent: &f.user_agent,
            code: code.as_u16(),
            response: response.as_ref(),
            request: request.as_ref(),
            long_running: long,
            received: self.received,
        });
        resp
    }
}

/// Answers what needs no authentication: the join endpoints (which check the join
/// secret themselves), `/cacerts` and `/ping` (k3s' own). Health and version are
/// RBAC's to grant (`system:public-info-viewer`, bound to anonymous callers too).
async fn public<B>(req: &Request<B>, ctx: &ApiContext) -> Option<Response<Body>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return None;
    }
    let headers = req.headers();
    match req.uri().path() {
        "/ping" => Some(text(StatusCode::OK, "pong")),
        // joining agents: the CA for anyone; certificates for the join secret
        "/cacerts" => ctx.join.as_ref().map(super::join::cacerts),
        "/v1-skua/client-ca.crt" => Some(super::join::client_ca(ctx, headers)),
        "/v1-skua/client-skua-controller.crt" => {
            Some(super::join::controller_cert(ctx, headers).await)
        }
        "/v1-skua/config" => Some(super::join::agent_config(ctx, headers)),
        path @ ("/v1-skua/client-kubelet.crt" | "/v1-skua/serving-kubelet.crt") => {
            let serving = path.ends_with("serving-kubelet.crt");
            Some(super::join::node_cert(ctx, headers, serving).await)
        }
        _ => None,
    }
}

/// The caller: its client certificate's user, else its bearer token's service
/// account; without credentials `system:anonymous` when `--anonymous-auth` is on (k3s
/// and skua turn it off); a failed token, or no credentials with it off, is a 401.
async fn authenticate(
    ctx: &ApiContext,
    caller: UserInfo,
    headers: &http::HeaderMap,
) -> Result<UserInfo, Box<Response<Body>>> {
    if !caller.is_anonymous() {
        return Ok(caller);
    }
    let unauthorized = || {
        Box::new(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ))
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = bearer else {
        if ctx.anonymous_auth {
            return Ok(caller);
        }
        ctx.metrics.authentication("error");
        return Err(unauthorized());
    };
    match super::resources::reviews::authenticate(ctx, token, &[]).await {
        Ok((_, user)) => {
            ctx.metrics.authentication("success");
            Ok(user)
        }
        Err(e) => {
            ctx.metrics.authentication("failure");
            tracing::info!(error = %e, "bearer token refused");
            Err(unauthorized())
        }
    }
}

async fn serve<B>(
    req: Request<B>,
    caller: UserInfo,
    ctx: Arc<ApiContext>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let info = RequestInfo::parse(req.method(), &path, req.uri().query().unwrap_or(""));
    if !super::auth::authorize(&ctx.rbac, &caller, &info) {
        let status = super::auth::forbidden(&caller, &info, None);
        tracing::debug!(user = %caller.name, message = %status.message, "forbidden");
        return Ok(status.response());
    }
    if let Some(node) = super::auth::node_of(&caller) {
        if let Err(status) = super::node_authz::authorize(&ctx, &caller, node, &info).await {
            return Ok(status.response());
        }
    }
    if !info.is_resource_request {
        if !read {
            return Ok(failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ));
        }
        if let Some(resp) = health_or_version(&path) {
            return Ok(resp);
        }
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let aggregated = discovery::aggregated_version(accept);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let resp = match parts.as_slice() {
            ["api"] => Some(discovery::core(
                &ctx.registry,
                aggregated,
                &ctx.server_address,
            )),
            ["apis"] => Some(discovery::groups(&ctx.registry, aggregated)),
            ["api", "v1"] => discovery::resource_list(&ctx.registry, "", "v1"),
            ["apis", group] => discovery::group(&ctx.registry, group),
            ["apis", group, version] => discovery::resource_list(&ctx.registry, group, version),
            ["metrics"] => {
                let mut resp = text(StatusCode::OK, "");
                *resp.body_mut() = http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::from(ctx.metrics.render()),
                ));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Some(resp)
            }
            ["openapi", "v2"] => Some(super::openapi_v2::serve(accept, &ctx.registry)),
            ["openapi", "v3"] => Some(super::openapi::index(&ctx.registry)),
            ["openapi", "v3", rest @ ..] => {
                super::openapi::document(&rest.join("/"), &ctx.registry)
            }
            _ => None,
        };
        return Ok(resp.unwrap_or_else(not_found));
    }
    Ok(super::resources::handle(&ctx, &info, &caller, req).await)
}

/// Health checks and the version, at the paths upstream serves them: `/version` and
/// `/version/` (a go-restful web service), `/healthz`, `/livez` and `/readyz` with
/// their named checks (`/livez/ping`, …; upstream has no `/healthz/`).
fn health_or_version(path: &str) -> Option<Response<Body>> {
    match path {
        "/version" | "/version/" => Some(json(StatusCode::OK, &version())),
        "/healthz" | "/livez" | "/readyz" => Some(text(StatusCode::OK, "ok")),
        _ => {
            let (root, check) = path.rsplit_once('/')?;
            let known = matches!(root, "/healthz" | "/livez" | "/readyz")
                && matches!(check, "ping" | "log" | "etcd");
            known.then(|| text(StatusCode::OK, "ok"))
        }
    }
}

fn version() -> serde_json::Value {
    let platform = format!(
        "{}/{}",
        std::env::consts::OS,
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
    );
    let minor = KUBE_GIT_VERSION.split('.').nth(1).unwrap_or("0");
    serde_json::json!({
        "major": "1",
        "minor": minor,
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": concat!("skua-v", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": env!("SKUA_BUILD_DATE"),
        "goVersion": "none (skua is written in Rust)",
        "compiler": "rustc",
        "platform": platform,
    })
}
