//! Response bodies: Kubernetes `Status` errors (metav1.Status), JSON and text bodies.

pub use crate::util::body::ChannelBody;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::convert::Infallible;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

/// An API error, carried up to the handler that turns it into a `Status` response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiStatus {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiStatus {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiStatus {
            code,
            reason,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Upstream's 404 for a path that names no resource.
    pub fn unknown_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// `configmaps "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(plural, group)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn response(&self) -> Response<Body> {
        let mut details = self.details.clone();
        if details
            .as_object()
            .is_some_and(|d| d.get("group") == Some(&json!("")))
        {
            if let Some(d) = details.as_object_mut() {
                d.remove("group");
            }
        }
        json(
            self.code,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": self.message,
                "reason": self.reason,
                "details": details,
                "code": self.code.as_u16(),
            }),
        )
    }
}

/// `deployments.apps` for grouped resources, `configmaps` for core ones.
pub fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// A failure `Status` with upstream's reason for `code`.
pub fn failure(code: StatusCode, reason: &'static str, message: &str) -> Response<Body> {
    ApiStatus::new(code, reason, message).response()
}

/// A JSON response with exactly `application/json` (older kubectl insists on it).
pub fn json(code: StatusCode, body: &Value) -> Response<Body> {
    json_typed(code, body, "application/json")
}

/// A JSON response with a given media type (aggregated discovery names its own).
pub fn json_typed(code: StatusCode, body: &Value, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response whose body is already encoded.
pub fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text response, as the health endpoints answer.
pub fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
