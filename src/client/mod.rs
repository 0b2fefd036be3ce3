//! The API client of skua's own components, over a [`Transport`]: controllers and the
//! scheduler inside the server use one the server assembles (the API router called
//! in-process: no TCP, no TLS, a system identity), and the simulated nodes call a
//! server over HTTPS with a kubeconfig ([`Remote`]). Both go through the whole API
//! path — authentication aside — so validation, defaulting and field tracking are
//! never bypassed. The client knows nothing of the API server (kube-rs' layering:
//! requests built without I/O, the I/O injected).

pub mod discovery;
pub mod node;
mod remote;
#[cfg(test)]
pub mod scripted;
pub mod watch;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;

pub use remote::Remote;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body, streamed (watches) or read in full.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// A failed call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused with a `Status` (its code, reason and message).
    #[error("{message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer from the server: connection, TLS, a body cut short or unreadable.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// A failure below HTTP (connection, TLS, a body cut short).
    pub fn transport(e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport(e.to_string())
    }

    /// The server's refusal from its HTTP status and `Status` body (`Null` if none).
    pub fn from_status(code: StatusCode, status: &Value, fallback: &str) -> ClientError {
        ClientError::Api {
            code: code.as_u16(),
            reason: status["reason"].as_str().unwrap_or("Unknown").to_string(),
            message: status["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("{fallback}: the server answered {code}")),
        }
    }

    /// The HTTP status code (0: no answer).
    pub fn code(&self) -> u16 {
        match self {
            ClientError::Api { code, .. } => *code,
            ClientError::Transport(_) => 0,
        }
    }

    /// The `Status` reason (`NotFound`, `AlreadyExists`, …; `Transport` without answer).
    pub fn reason(&self) -> &str {
        match self {
            ClientError::Api { reason, .. } => reason,
            ClientError::Transport(_) => "Transport",
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == 404
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == 409
    }

    pub fn is_already_exists(&self) -> bool {
        self.reason() == "AlreadyExists"
    }
}

/// How requests reach a server: the one seam between the client and everything that
/// answers it (the in-process router, HTTPS, a test's fake).
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request (its URI is a path and query); the body of the answer is
    /// left unread.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<ResponseBody>, ClientError>;
}

/// A client of the Kubernetes API (see the module documentation).
#[derive(Clone)]
pub struct ApiClient {
    transport: Arc<dyn Transport>,
    /// Sent as User-Agent: the field manager of writes that name none.
    agent: String,
}

impl ApiClient {
    /// A client over `transport`, sending `agent` as its User-Agent.
    pub fn new(transport: Arc<dyn Transport>, agent: &str) -> ApiClient {
        ApiClient {
            transport,
            agent: agent.to_string(),
        }
    }

    /// Calls over HTTPS to the server a kubeconfig names.
    pub fn remote(remote: Arc<Remote>, agent: &str) -> ApiClient {
        ApiClient::new(remote, agent)
    }

    /// Sends one request; the response body is left unread (watches stream it).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<ResponseBody>, ClientError> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, self.agent.as_str())
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(ClientError::transport)?;
        self.transport.send(req).await
    }

    /// One call with a JSON answer; any non-2xx answer is an error carrying its Status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let resp = self
            .send(
                method,
                path,
                content_type,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::transport)?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(ClientError::from_status(status, &value, path))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, "application/json", None).await
    }

    pub async fn create(&self, path: &str, obj: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, "application/json", Some(obj))
            .await
    }

    pub async fn update(&self, path: &str, obj: &Value) -> Result<Value, ClientError> {
        self.call(Method::PUT, path, "application/json", Some(obj))
            .await
    }

    /// A JSON merge patch.
    pub async fn patch(&self, path: &str, patch: &Value) -> Result<Value, ClientError> {
        self.call(
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(patch),
        )
        .await
    }

    /// Deletes; a missing object is not an error.
    pub async fn delete(&self, path: &str, options: &Value) -> Result<(), ClientError> {
        match self
            .call(Method::DELETE, path, "application/json", Some(options))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl From<StatusCode> for ClientError {
    fn from(code: StatusCode) -> Self {
        ClientError::Api {
            code: code.as_u16(),
            reason: code.canonical_reason().unwrap_or("").into(),
            message: format!("the server answered {code}"),
        }
    }
}
