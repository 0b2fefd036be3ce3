//! Probes and lifecycle hooks: exec (over CRI's ExecSync), httpGet, tcpSocket and
//! sleep, with upstream's timing (initialDelaySeconds, periodSeconds, timeoutSeconds,
//! successThreshold, failureThreshold).

use crate::cri::Cri;
use k8s_cri::v1::ExecSyncRequest;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// The probes of one container instance and what they found so far.
#[derive(Debug)]
pub struct ProbeState {
    pub started_at: Instant,
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe holds (or there is none, once started).
    pub ready: bool,
    runs: [Run; 3],
}

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    last: Option<Instant>,
    successes: u32,
    failures: u32,
}

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup = 0,
    Liveness = 1,
    Readiness = 2,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }
}

/// What a round of probing asks of the sync.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// The liveness (or startup) probe failed too often: restart the container.
    Restart(String),
}

impl ProbeState {
    pub fn new(container: &Value) -> ProbeState {
        let started = !container["startupProbe"].is_object();
        ProbeState {
            started_at: Instant::now(),
            started,
            ready: started && !container["readinessProbe"].is_object(),
            runs: [Run::default(); 3],
        }
    }

    /// Runs whichever probes are due; `target` is the pod's IP for network probes.
    pub async fn round(
        &mut self,
        cri: &mut Cri,
        container: &Value,
        id: &str,
        target: &str,
    ) -> Verdict {
        let kinds: &[Kind] = if self.started {
            &[Kind::Liveness, Kind::Readiness]
        } else {
            &[Kind::Startup]
        };
        for &kind in kinds {
            let probe = &container[kind.field()];
            if !probe.is_object() {
                continue;
            }
            let n = |k: &str, d: u64| probe[k].as_u64().unwrap_or(d);
            let run = &mut self.runs[kind as usize];
            let now = Instant::now();
            if now < self.started_at + Duration::from_secs(n("initialDelaySeconds", 0)) {
                continue;
            }
            if run
                .last
                .is_some_and(|l| now < l + Duration::from_secs(n("periodSeconds", 10).max(1)))
            {
                continue;
            }
            run.last = Some(now);
            let timeout = Duration::from_secs(n("timeoutSeconds", 1).max(1));
            let outcome = run_action(cri, probe, container, id, target, timeout).await;
            match &outcome {
                Ok(()) => {
                    run.successes += 1;
                    run.failures = 0;
                }
                Err(_) => {
                    run.failures += 1;
                    run.successes = 0;
                }
            }
            let (succeeded, failed) = (
                run.successes >= n("successThreshold", 1) as u32,
                run.failures >= n("failureThreshold", 3) as u32,
            );
            match kind {
                Kind::Startup if succeeded => {
                    self.started = true;
                    self.ready = !container["readinessProbe"].is_object();
                }
                Kind::Startup | Kind::Liveness if failed => {
                    let why = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                    let what = if kind == Kind::Startup {
                        "Startup"
                    } else {
                        "Liveness"
                    };
                    return Verdict::Restart(format!("{what} probe failed: {why}"));
                }
                Kind::Readiness if succeeded => self.ready = true,
                Kind::Readiness if failed => self.ready = false,
                _ => {}
            }
        }
        Verdict::Fine
    }
}

/// A port of a probe or hook: a number, or the name of one of the container's ports.
fn port(v: &Value, container: &Value) -> Option<u16> {
    if let Some(n) = v.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = v.as_str()?;
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

/// Why a probe or a hook failed, in the words upstream's kubelet uses (they reach
/// events and `kubectl describe`).
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// The runtime could not run an exec action's command.
    #[error("command {cmd:?} could not run: {message}")]
    NotRun {
        /// The command.
        cmd: Vec<String>,
        /// The runtime's answer.
        message: String,
    },
    /// An exec action's command exited non-zero.
    #[error("command {cmd:?} exited with {code}: {output}")]
    Exited {
        /// The command.
        cmd: Vec<String>,
        /// Its exit code.
        code: i32,
        /// What it wrote (stdout, then stderr).
        output: String,
    },
    /// An httpGet or tcpSocket action whose port is neither a number nor a named port
    /// of the container.
    #[error("{0} has no usable port")]
    NoPort(&'static str),
    /// An httpGet request that could not be made or answered in time.
    #[error("Get \"{url}\": {message}")]
    Http {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An httpGet answered with a status outside 200-399.
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
    /// A tcpSocket action that could not connect.
    #[error("dial tcp {address}: {message}")]
    Dial {
        /// host:port.
        address: String,
        /// What went wrong.
        message: String,
    },
    /// A gRPC probe.
    #[error("gRPC probes are not supported by skua's kubelet yet")]
    Grpc,
    /// A probe without an action.
    #[error("the probe names no action (exec, httpGet, tcpSocket)")]
    NoAction,
}

/// Runs a probe's or a hook's action once.
pub async fn run_action(
    cri: &mut Cri,
    action: &Value,
    container: &Value,
    id: &str,
    target: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    if let Some(cmd) = action["exec"]["command"].as_array() {
        let cmd: Vec<String> = cmd
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        let answer = cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.clone(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|e| ProbeFailure::NotRun {
                cmd: cmd.clone(),
                message: e.message().to_string(),
            })?
            .into_inner();
        if answer.exit_code == 0 {
            return Ok(());
        }
        let mut out = String::from_utf8_lossy(&answer.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&answer.stderr));
        return Err(ProbeFailure::Exited {
            cmd,
            code: answer.exit_code,
            output: out.trim().to_string(),
        });
    }
    if action["httpGet"].is_object() {
        let h = &action["httpGet"];
        let host = h["host"].as_str().unwrap_or(target);
        let p = port(&h["port"], container).ok_or(ProbeFailure::NoPort("httpGet"))?;
        let path = h["path"].as_str().unwrap_or("/");
        return tokio::time::timeout(timeout, http_get(host, p, path, &h["httpHeaders"]))
            .await
            .map_err(|_| ProbeFailure::Http {
                url: format!("http://{host}:{p}{path}"),
                message:
                    "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                        .into(),
            })?;
    }
    if action["tcpSocket"].is_object() {
        let t = &action["tcpSocket"];
        let host = t["host"].as_str().unwrap_or(target);
        let p = port(&t["port"], container).ok_or(ProbeFailure::NoPort("tcpSocket"))?;
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, p))).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ProbeFailure::Dial {
                address: format!("{host}:{p}"),
                message: e.to_string(),
            }),
            Err(_) => Err(ProbeFailure::Dial {
                address: format!("{host}:{p}"),
                message: "i/o timeout".into(),
            }),
        };
    }
    if let Some(secs) = action["sleep"]["seconds"].as_u64() {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return Ok(());
    }
    if action["grpc"].is_object() {
        return Err(ProbeFailure::Grpc);
    }
    Err(ProbeFailure::NoAction)
}

async fn http_get(host: &str, port: u16, path: &str, headers: &Value) -> Result<(), ProbeFailure> {
    use http_body_util::{BodyExt, Empty};
    let url = format!("http://{host}:{port}{path}");
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| ProbeFailure::Http {
            url: url.clone(),
            message: format!("dial tcp {host}:{port}: {e}"),
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| ProbeFailure::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::USER_AGENT, "kube-probe/1.33")
        .header(http::header::ACCEPT, "*/*");
    for h in headers.as_array().into_iter().flatten() {
        if let (Some(n), Some(v)) = (h["name"].as_str(), h["value"].as_str()) {
            req = req.header(n, v);
        }
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| ProbeFailure::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ProbeFailure::Http {
            url,
            message: e.to_string(),
        })?;
    let code = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ProbeFailure::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}]});
        assert_eq!(port(&json!("http"), &c), Some(8080));
        assert_eq!(port(&json!(81), &c), Some(81));
        assert_eq!(port(&json!("nope"), &c), None);
    }

    #[test]
    fn a_container_without_probes_is_started_and_ready() {
        let s = ProbeState::new(&json!({}));
        assert!(s.started && s.ready);
        let s = ProbeState::new(&json!({"readinessProbe": {"exec": {"command": ["true"]}}}));
        assert!(s.started && !s.ready);
        let s = ProbeState::new(&json!({"startupProbe": {"exec": {"command": ["true"]}}}));
        assert!(!s.started && !s.ready);
    }

    #[tokio::test]
    async fn http_get_judges_by_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let code = if req.starts_with("GET /ok ") {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        assert!(http_get("127.0.0.1", p, "/ok", &Value::Null).await.is_ok());
        let e = http_get("127.0.0.1", p, "/bad", &Value::Null)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "HTTP probe failed with statuscode: 503");
    }
}
