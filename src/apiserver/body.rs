//! Request bodies are read in full before a request is handled: limited to 3 MiB (413
//! above, as kube-apiserver), and an oversized one is drained (to a hard cap) so the
//! client receives the 413 instead of a reset connection. Handlers then never leave a
//! body unread, which on HTTP/1.1 would reset the connection under the client.

use super::status::ApiStatus;
use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// An oversized body is read and discarded up to this size; beyond it the connection
/// is dropped.
const DRAIN_CAP_BYTES: usize = 32 * 1024 * 1024;

/// Reads and discards at most `limit` bytes of a body nobody will handle (an
/// unauthenticated request's), so a small one leaves the connection clean. A longer
/// one is left unread, but kept a moment: over HTTP/2 dropping it resets the stream,
/// and the reset must not overtake the answer.
pub async fn drain<B>(body: B, limit: usize)
where
    B: http_body::Body + Send + 'static,
{
    let mut body = Box::pin(body);
    let mut seen = 0usize;
    while seen <= limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen += data.remaining();
                }
            }
            _ => return,
        }
    }
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        drop(body);
    });
}

pub async fn collect<B>(body: B) -> Result<Bytes, ApiStatus>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiStatus::bad_request(format!("cannot read the request body: {}", e.into()))
        })?;
        if let Ok(mut data) = frame.into_data() {
            let chunk = data.copy_to_bytes(data.remaining());
            seen += chunk.len();
            if seen <= MAX_BODY_BYTES {
                buf.extend_from_slice(&chunk);
            } else if seen > DRAIN_CAP_BYTES {
                break;
            }
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(ApiStatus::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
        ));
    }
    Ok(buf.freeze())
}
