//! Upstream's `--max-requests-inflight` and `--max-mutating-requests-inflight` (the
//! max-in-flight filter, before API Priority and Fairness): at most so many
//! read-only and so many mutating requests are served at once; beyond that the
//! answer is 429 with `Retry-After: 1`. Long-running requests (watches and the
//! streaming subresources) are not counted, as upstream. A limit of 0 is no limit.

use super::request_info::RequestInfo;
use super::status::{ApiStatus, Body};
use http::{Response, StatusCode};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upstream's defaults.
pub const DEFAULT_MAX_REQUESTS_INFLIGHT: usize = 400;
pub const DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;

/// The two pools of request slots.
pub struct Inflight {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new(
            DEFAULT_MAX_REQUESTS_INFLIGHT,
            DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
        )
    }
}

/// Watches, logs that follow, exec, attach, port forwarding and proxying run as
/// long as the client wants (upstream's long-running check).
fn long_running(info: &RequestInfo) -> bool {
    info.verb == "watch"
        || matches!(
            info.subresource.as_deref(),
            Some("exec" | "attach" | "portforward" | "proxy" | "log")
        )
}

impl Inflight {
    pub fn new(read_only: usize, mutating: usize) -> Inflight {
        let pool = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Inflight {
            read_only: pool(read_only),
            mutating: pool(mutating),
        }
    }

    /// A slot for `info`'s request, held until the returned value drops; or the 429.
    pub fn admit(
        &self,
        info: &RequestInfo,
        user: &super::auth::UserInfo,
    ) -> Result<Option<OwnedSemaphorePermit>, Box<Response<Body>>> {
        // upstream exempts system:masters (the in-process controllers are masters)
        if long_running(info) || user.groups.iter().any(|g| g == "system:masters") {
            return Ok(None);
        }
        let read_only = matches!(info.verb.as_str(), "get" | "list");
        let pool = if read_only {
            &self.read_only
        } else {
            &self.mutating
        };
        let Some(pool) = pool else { return Ok(None) };
        match pool.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                let mut resp = ApiStatus::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                )
                .with_details(serde_json::json!({"retryAfterSeconds": 1}))
                .response();
                resp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                Err(Box::new(resp))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn beyond_the_limit_the_answer_is_429_with_retry_after() {
        let limits = Inflight::new(2, 1);
        let bob = crate::apiserver::auth::UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let admin = crate::apiserver::auth::UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        let get = RequestInfo::parse(&Method::GET, "/api/v1/pods", "");
        let post = RequestInfo::parse(&Method::POST, "/api/v1/namespaces/a/pods", "");
        let watch = RequestInfo::parse(&Method::GET, "/api/v1/pods", "watch=1");
        let a = limits.admit(&get, &bob).unwrap();
        let _b = limits.admit(&get, &bob).unwrap();
        let refused = limits.admit(&get, &bob).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[http::header::RETRY_AFTER], "1");
        // mutating requests have their own pool; watches are not counted
        let _m = limits.admit(&post, &bob).unwrap();
        assert!(limits.admit(&post, &bob).is_err());
        for _ in 0..10 {
            assert!(limits.admit(&watch, &bob).unwrap().is_none());
        }
        assert!(
            limits.admit(&get, &admin).unwrap().is_none(),
            "masters are not limited"
        );
        drop(a);
        assert!(
            limits.admit(&get, &bob).is_ok(),
            "a finished request frees its slot"
        );
        let unlimited = Inflight::new(0, 0);
        assert!(unlimited.admit(&get, &bob).unwrap().is_none());
    }
}
