//! Proxying an upgraded HTTP/1.1 connection (SPDY/3.1 or WebSocket, as `kubectl
//! exec`, `attach`, `port-forward` and `cp` open them) to a backend that speaks the
//! streaming protocol itself: the API server to a kubelet, a kubelet to the container
//! runtime's streaming server. The upgrade request is replayed to the backend with the
//! client's protocol headers (so the negotiation, and a WebSocket key's answer, are
//! the backend's own); on `101 Switching Protocols` the bytes are spliced both ways
//! until either side closes. Anything else goes back to the caller as an error.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The backend's answer to an upgrade request.
pub struct Answer<S> {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// After a 101: bytes the backend sent past its response head. Otherwise: the body.
    pub rest: Vec<u8>,
    pub stream: S,
}

/// Headers that belong to one hop, never forwarded.
fn hop_only(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "authorization" | "content-length" | "transfer-encoding" | "keep-alive" | "te"
    ) || name.as_str().starts_with("impersonate-")
}

/// Sends the upgrade request `method path` to the backend over `stream`, with the
/// client's `headers`, and reads the backend's response head.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &http::Method,
    path_and_query: &str,
    host: &str,
    headers: &HeaderMap,
) -> std::io::Result<Answer<S>> {
    let mut head = format!("{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        if hop_only(name) {
            continue;
        }
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(value.as_bytes()));
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    // the response head, byte by byte up to the blank line (it is short)
    let mut buf = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the backend closed the connection before answering",
            ));
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other(
                "the backend's response head is too long",
            ));
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| std::io::Error::other("the backend's answer is not HTTP"))?;
    let mut out = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                out.append(n, v);
            }
        }
    }
    let mut rest = Vec::new();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // the error's body: by its length, else what comes before the close (bounded)
        let len = out
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        match len {
            Some(n) => {
                rest.resize(n.min(64 * 1024), 0);
                stream.read_exact(&mut rest).await?;
            }
            None => {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    (&mut stream).take(64 * 1024).read_to_end(&mut rest),
                )
                .await;
            }
        }
    }
    Ok(Answer {
        status,
        headers: out,
        rest,
        stream,
    })
}

/// Answers the client's upgrade with the backend's 101 and splices the two
/// connections once hyper hands over the client's.
pub fn splice<B, S>(
    client: &mut Request<B>,
    answer: Answer<S>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(client);
    let Answer {
        headers,
        rest,
        mut stream,
        ..
    } = answer;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "the client's upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if !rest.is_empty() && client.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut stream).await;
    });
    let mut resp = Response::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (n, v) in &headers {
        if n != http::header::CONTENT_LENGTH {
            resp.headers_mut().append(n.clone(), v.clone());
        }
    }
    resp
}

/// Whether a request asks to upgrade its connection (SPDY or WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
}
