//! `/exec`, `/attach` and `/portForward` of the kubelet API: the runtime is asked for a
//! streaming URL over CRI (`Exec`, `Attach`, `PortForward`), and the client's upgraded
//! connection (SPDY/3.1 or WebSocket) is spliced to the runtime's streaming server,
//! which speaks Kubernetes' remote-command and port-forward protocols itself (exit
//! codes travel on its error channel as `NonZeroExitCode`, as upstream).

use super::Kubelet;
use crate::net::upgrade;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use k8s_cri::v1::{
    AttachRequest, ContainerState, ExecRequest, PodSandboxState, PortForwardRequest,
};
use std::convert::Infallible;

type Body = BoxBody<Bytes, Infallible>;

/// Why a stream cannot be opened: the status and message the client gets.
type Refusal = (StatusCode, String);

fn error(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(message.into())).boxed());
    *r.status_mut() = code;
    r
}

fn flag(query: &str, key: &str) -> bool {
    crate::util::url::values(query, key)
        .iter()
        .any(|v| matches!(v.as_str(), "1" | "true"))
}

/// What the pod `ns/name` is in the runtime: its uid.
fn uid_of(kubelet: &Kubelet, ns: &str, pod: &str) -> Result<String, Refusal> {
    kubelet
        .pods
        .get(&format!("{ns}/{pod}"))
        .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{pod} is not on this node"),
            )
        })
}

async fn running_container(
    kubelet: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Refusal> {
    let uid = uid_of(kubelet, ns, pod)?;
    let mut memory = super::PodMemory::default();
    let all = kubelet
        .container_statuses(&uid, &mut memory)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()))?;
    let seen = super::status::Observed {
        containers: all,
        ..Default::default()
    };
    match seen.instances(container).0 {
        Some(c) if c.state == ContainerState::ContainerRunning as i32 => Ok(c.id.clone()),
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!("container not found ({container:?})"),
        )),
    }
}

/// Splices the client's upgrade to the runtime's streaming `url`.
async fn to_runtime<B>(req: &mut Request<B>, url: &str) -> Response<Body> {
    let Some(rest) = url.strip_prefix("http://") else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming URL {url:?} is not plain HTTP"),
        );
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let stream = match tokio::net::TcpStream::connect(host).await {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot reach the runtime's streaming server at {host}: {e}"),
            );
        }
    };
    let method = req.method().clone();
    let asked = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .chain(req.headers().get_all("x-stream-protocol-version").iter())
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let answer = upgrade::request(stream, &method, path, host, req.headers()).await;
    if let Ok(a) = &answer {
        let chosen = a
            .headers
            .get("sec-websocket-protocol")
            .or(a.headers.get("x-stream-protocol-version"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::debug!(status = %a.status, asked = %asked, chosen, "runtime streaming upgrade");
    }
    match answer {
        Ok(a) if a.status == StatusCode::SWITCHING_PROTOCOLS => upgrade::splice(req, a),
        Ok(a) => error(a.status, String::from_utf8_lossy(&a.rest).into_owned()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime's streaming server: {e}"),
        ),
    }
}

/// `/exec/<ns>/<pod>/<container>?command=…&input=1&output=1&error=1&tty=1` and
/// `/attach/…` (no command).
pub async fn exec_or_attach<B>(
    kubelet: &Kubelet,
    req: &mut Request<B>,
    (ns, pod, container): (&str, &str, &str),
    attach: bool,
) -> Response<Body> {
    if !upgrade::is_upgrade(req.headers()) {
        return error(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let id = match running_container(kubelet, ns, pod, container).await {
        Ok(id) => id,
        Err((code, message)) => return error(code, message),
    };
    let (stdin, stdout, stderr, tty) = (
        flag(&query, "input"),
        flag(&query, "output"),
        flag(&query, "error"),
        flag(&query, "tty"),
    );
    let cri = kubelet.cri();
    let url = if attach {
        cri.runtime
            .attach(AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr,
            })
            .await
            .map(|r| r.into_inner().url)
    } else {
        let cmd = crate::util::url::values(&query, "command");
        if cmd.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 command",
            );
        }
        cri.runtime
            .exec(ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
            .await
            .map(|r| r.into_inner().url)
    };
    match url {
        Ok(url) => to_runtime(req, &url).await,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
    }
}

/// `/portForward/<ns>/<pod>` (ports come in the stream headers, or `?ports=`).
pub async fn port_forward<B>(
    kubelet: &Kubelet,
    req: &mut Request<B>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    if !upgrade::is_upgrade(req.headers()) {
        return error(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let uid = match uid_of(kubelet, ns, pod) {
        Ok(u) => u,
        Err((code, message)) => return error(code, message),
    };
    let sandbox = match kubelet.sandboxes(&uid).await {
        Ok(list) => list
            .into_iter()
            .find(|s| s.state == PodSandboxState::SandboxReady as i32),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
    };
    let Some(sandbox) = sandbox else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("pod {ns}/{pod} has no running sandbox"),
        );
    };
    let ports: Vec<i32> = crate::util::url::values(req.uri().query().unwrap_or(""), "ports")
        .iter()
        .flat_map(|p| p.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let url = kubelet
        .cri()
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: ports,
        })
        .await
        .map(|r| r.into_inner().url);
    match url {
        Ok(url) => to_runtime(req, &url).await,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
    }
}
