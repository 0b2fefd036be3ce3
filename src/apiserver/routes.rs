//! Request routing. Health and version are open to anyone, as upstream; everything else
//! needs an authenticated caller.

use super::status::{failure, json, text};
use super::{Caller, KUBE_GIT_VERSION};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;

pub(super) async fn handle<B>(
    req: Request<B>,
    caller: Caller,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    Ok(match path {
        "/healthz" | "/livez" | "/readyz" if read => text(StatusCode::OK, "ok"),
        "/version" if read => json(StatusCode::OK, &version()),
        _ if caller == Caller::Anonymous => {
            failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
        }
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
