//! Watch streams (one JSON event per line) and the paths of collections and objects.
//! The informers built on them are `runtime::informer`.

use super::{ApiClient, ClientError, ResponseBody};
use crate::api::registry::Resource;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

/// One watch event.
#[derive(Debug)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// A bookmark: everything up to this resourceVersion has been seen.
    Bookmark(String),
}

/// The events of one watch request.
pub struct WatchStream {
    body: ResponseBody,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `None` when the server ended the watch. An `ERROR` event is
    /// returned as the error it carries (410 means: list again).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev: Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Err(ClientError::transport(format!("bad watch event: {e}"))));
                    }
                };
                let mut ev = ev;
                let obj = ev.get_mut("object").map(Value::take).unwrap_or(Value::Null);
                return Some(Ok(match ev["type"].as_str().unwrap_or("") {
                    "ADDED" => WatchEvent::Added(obj),
                    "MODIFIED" => WatchEvent::Modified(obj),
                    "DELETED" => WatchEvent::Deleted(obj),
                    "BOOKMARK" => WatchEvent::Bookmark(
                        obj["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ),
                    _ => {
                        return Some(Err(ClientError::Api {
                            code: obj["code"].as_u64().unwrap_or(500) as u16,
                            reason: obj["reason"].as_str().unwrap_or("").to_string(),
                            message: obj["message"].as_str().unwrap_or("watch error").to_string(),
                        }));
                    }
                }));
            }
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(ClientError::transport(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl ApiClient {
    /// Starts a watch; `path` carries the query (`?watch=1&resourceVersion=…`).
    pub async fn watch(&self, path: &str) -> Result<WatchStream, ClientError> {
        let resp = self
            .send(Method::GET, path, "application/json", None)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(ClientError::transport)?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError::from_status(status, &v, "watch refused"));
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// The collection path of `res` across all namespaces (or one).
pub fn collection_path(res: &Resource, namespace: Option<&str>) -> String {
    path_of(
        res.group,
        res.version,
        res.plural,
        res.namespaced,
        namespace,
    )
}

/// The collection path of `group`/`version`/`plural` (of one namespace, for a
/// namespaced resource): what built-in and discovered resources share.
pub fn path_of(
    group: &str,
    version: &str,
    plural: &str,
    namespaced: bool,
    namespace: Option<&str>,
) -> String {
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    match namespace {
        Some(ns) if namespaced => format!("{base}/namespaces/{ns}/{plural}"),
        _ => format!("{base}/{plural}"),
    }
}

/// The path of one object.
pub fn object_path(res: &Resource, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", collection_path(res, namespace))
}

/// `namespace/name` (or `name`): how informers and work queues name objects.
pub fn key_of(obj: &Value) -> String {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}
