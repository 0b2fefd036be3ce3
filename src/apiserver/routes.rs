//! Request routing. Health and version are open to anyone, as upstream; everything else
//! needs an authenticated caller.

use super::KUBE_GIT_VERSION;
use super::auth::{Authorizer, Decision, MastersOnly, UserInfo, forbidden_message};
use super::request_info::RequestInfo;
use super::status::{failure, json, text};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;

pub(super) async fn handle<B>(
    req: Request<B>,
    caller: UserInfo,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let info = RequestInfo::parse(req.method(), path, req.uri().query().unwrap_or(""));
    Ok(match path {
        "/healthz" | "/livez" | "/readyz" if read => text(StatusCode::OK, "ok"),
        "/version" if read => json(StatusCode::OK, &version()),
        _ if caller.is_anonymous() => {
            failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
        }
        _ if MastersOnly.authorize(&caller, &info) == Decision::Deny => failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &forbidden_message(&caller, &info),
        ),
        _ => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    })
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
