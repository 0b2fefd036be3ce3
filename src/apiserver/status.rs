//! Kubernetes `Status` responses (metav1.Status), the shape every client expects on
//! an error.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

/// A failure `Status` with upstream's reason for `code`.
pub fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code.as_u16(),
    });
    json(code, &body)
}

/// A JSON response with exactly `application/json` (older kubectl insists on it).
pub fn json(code: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    json_typed(code, body, "application/json")
}

/// A JSON response with a given media type (aggregated discovery names its own).
pub fn json_typed(
    code: StatusCode,
    body: &serde_json::Value,
    content_type: &str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A plain-text response, as the health endpoints answer.
pub fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
