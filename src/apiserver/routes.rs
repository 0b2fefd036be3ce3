//! Request routing: health and version for anyone; discovery for authenticated users;
//! resources through the authorizer.

use super::auth::{Authorizer, Decision, MastersOnly, UserInfo, forbidden_message};
use super::request_info::RequestInfo;
use super::status::{Body, failure, json, text};
use super::{ApiContext, KUBE_GIT_VERSION, discovery};
use http::{Method, Request, Response, StatusCode, header};
use std::convert::Infallible;
use std::sync::Arc;

fn not_found() -> Response<Body> {
    super::status::ApiStatus::unknown_path().response()
}

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
    let info = RequestInfo::parse(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    let metrics = ctx.metrics.clone();
    // the whole body first, so no handler can answer with it unread (see body.rs)
    let (parts, body) = req.into_parts();
    let resp = match super::body::collect(body).await {
        Ok(bytes) => {
            let req = Request::from_parts(parts, http_body_util::Full::new(bytes));
            serve(req, caller, ctx).await?
        }
        Err(status) => status.response(),
    };
    let verb = match info.verb.as_str() {
        "create" => "POST".to_string(),
        "update" => "PUT".to_string(),
        other => other.to_ascii_uppercase(),
    };
    let scope = match (&info.name, &info.namespace) {
        (Some(_), _) => "resource",
        (None, Some(_)) => "namespace",
        _ => "cluster",
    };
    metrics.request(
        &super::metrics::RequestLabels {
            verb: &verb,
            group: &info.group,
            version: &info.version,
            resource: &info.resource,
            subresource: info.subresource.as_deref().unwrap_or(""),
            scope,
        },
        resp.status().as_u16(),
        started.elapsed(),
    );
    Ok(resp)
}

async fn serve<B>(
    req: Request<B>,
    mut caller: UserInfo,
    ctx: Arc<ApiContext>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path().to_string();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let info = RequestInfo::parse(req.method(), &path, req.uri().query().unwrap_or(""));
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" if read => return Ok(text(StatusCode::OK, "ok")),
        "/version" if read => return Ok(json(StatusCode::OK, &version())),
        // joining agents: the CA for anyone; certificates for the join secret
        "/cacerts" if read => {
            if let Some(join) = &ctx.join {
                return Ok(super::join::cacerts(join));
            }
        }
        "/v1-skua/client-ca.crt" if read => {
            return Ok(super::join::client_ca(&ctx, req.headers()));
        }
        "/v1-skua/client-skua-controller.crt" if read => {
            return Ok(super::join::controller_cert(&ctx, req.headers()).await);
        }
        "/v1-skua/config" if read => {
            return Ok(super::join::agent_config(&ctx, req.headers()));
        }
        "/v1-skua/client-kubelet.crt" | "/v1-skua/serving-kubelet.crt" if read => {
            let serving = path.ends_with("serving-kubelet.crt");
            return Ok(super::join::node_cert(&ctx, req.headers(), serving).await);
        }
        _ => {}
    }
    if caller.is_anonymous() {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match bearer {
            Some(token) => match super::resources::reviews::authenticate(&ctx, token, &[]).await {
                Ok((_, user)) => caller = user,
                Err(e) => {
                    tracing::debug!(error = %e, "bearer token refused");
                    return Ok(failure(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "Unauthorized",
                    ));
                }
            },
            None => {
                return Ok(failure(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized",
                ));
            }
        }
    }
    if MastersOnly.authorize(&caller, &info) == Decision::Deny {
        return Ok(failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &forbidden_message(&caller, &info),
        ));
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
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let aggregated = discovery::aggregated_version(accept);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let resp = match parts.as_slice() {
            ["api"] => Some(discovery::core(aggregated, &ctx.server_address)),
            ["apis"] => Some(discovery::groups(aggregated)),
            ["api", "v1"] => discovery::resource_list("", "v1"),
            ["apis", group] => discovery::group(group),
            ["apis", group, version] => discovery::resource_list(group, version),
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
            ["openapi", "v2"] => Some(super::openapi_v2::serve(accept)),
            ["openapi", "v3"] => Some(super::openapi::index()),
            ["openapi", "v3", rest @ ..] => super::openapi::document(&rest.join("/")),
            _ => None,
        };
        return Ok(resp.unwrap_or_else(not_found));
    }
    Ok(super::resources::handle(&ctx, &info, &caller, req).await)
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
