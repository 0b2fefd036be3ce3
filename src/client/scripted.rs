//! A scripted transport for unit tests: answers requests in order from a script and
//! records what was asked, so a component's requests and its reaction to each answer
//! (pages, 410s, failures) are tested without a server.

use super::{ClientError, ResponseBody, Transport};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::collections::VecDeque;
use std::sync::Mutex;

/// One scripted answer: the status and the body.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    /// 200 with a JSON body.
    pub fn ok(body: serde_json::Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: body.to_string(),
        }
    }

    /// 200 with watch events, one JSON line each.
    pub fn events(events: &[serde_json::Value]) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: events.iter().map(|e| format!("{e}\n")).collect(),
        }
    }

    /// A `Status` failure.
    pub fn status(code: u16, reason: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": code, "reason": reason, "message": reason})
            .to_string(),
        }
    }
}

/// Answers from a script; once it runs out, every request fails at the transport.
#[derive(Default)]
pub struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    asked: Mutex<Vec<String>>,
}

impl Scripted {
    pub fn new(answers: Vec<Answer>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers.into()),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// The paths and queries asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl Transport for Scripted {
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<ResponseBody>, ClientError> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.uri().to_string());
        let next = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(answer) = next else {
            return Err(ClientError::transport("the script has no more answers"));
        };
        let body = Full::new(Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed();
        let mut resp = http::Response::new(body);
        *resp.status_mut() = answer.status;
        Ok(resp)
    }
}
