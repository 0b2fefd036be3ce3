//! The event recorder (core/v1 Events, as `kubectl describe` and `kubectl get events`
//! show them), shared by controllers, scheduler and kubelet: upstream's
//! `EventRecorder` with its spam filter, writing in the background so a control loop
//! never waits for a courtesy.

use crate::api::meta::now_rfc3339;
use crate::client::ApiClient;
use crate::runtime::Tasks;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events being written at once; more are dropped, as upstream's broadcaster drops
/// them when its queue is full (events are a courtesy, never back-pressure).
const MAX_PENDING: usize = 1000;

/// Upstream's spam filter: per source and object, a burst of 25 events, then one per
/// five minutes (a ReplicaSet creating 100 pods records 25 `SuccessfulCreate`s).
#[derive(Default)]
struct SpamFilter {
    buckets: HashMap<String, (f64, Instant)>,
}

const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);

impl SpamFilter {
    fn allow(&mut self, source: &str, now: Instant) -> bool {
        if self.buckets.len() > 10_000 {
            // forget the buckets that are full again
            let full = SPAM_REFILL * SPAM_BURST as u32;
            self.buckets
                .retain(|_, (_, at)| now.duration_since(*at) < full);
        }
        let (tokens, at) = self
            .buckets
            .entry(source.to_string())
            .or_insert((SPAM_BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64())
            .min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Records events through one client; clones share the spam filter, the pending
/// count and the writing tasks (dropped with the last clone).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    client: ApiClient,
    spam: Mutex<SpamFilter>,
    pending: Arc<AtomicUsize>,
    writes: Tasks,
}

impl Recorder {
    pub fn new(client: ApiClient) -> Recorder {
        Recorder {
            inner: Arc::new(Inner {
                client,
                spam: Mutex::new(SpamFilter::default()),
                pending: Arc::new(AtomicUsize::new(0)),
                writes: Tasks::new(),
            }),
        }
    }

    /// Records an event about `object` in the background (`kind`/`apiVersion` must be
    /// set); dropped when the spam filter or the pending limit says so.
    pub fn emit(
        &self,
        object: &Value,
        warning: bool,
        reason: &'static str,
        message: String,
        component: &'static str,
    ) {
        let m = &object["metadata"];
        let source = format!(
            "{component}/{}/{}/{}",
            m["namespace"].as_str().unwrap_or(""),
            m["name"].as_str().unwrap_or(""),
            m["uid"].as_str().unwrap_or("")
        );
        let allowed = self
            .inner
            .spam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(&source, Instant::now());
        if !allowed {
            tracing::debug!(reason, "event dropped: too many about one object");
            return;
        }
        let pending = self.inner.pending.clone();
        if pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
            pending.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(reason, "event dropped: too many pending");
            return;
        }
        // only what the event names of its object, not the whole object
        let about = json!({
            "apiVersion": object["apiVersion"], "kind": object["kind"],
            "metadata": {"namespace": m["namespace"], "name": m["name"], "uid": m["uid"], "resourceVersion": m["resourceVersion"]},
        });
        let client = self.inner.client.clone();
        let write = async move {
            record(&client, &about, warning, reason, &message, component).await;
            pending.fetch_sub(1, Ordering::Relaxed);
        };
        if self.inner.writes.spawn(write).is_none() {
            self.inner.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records an event now, waiting for the write (for the rare caller that must
    /// know it was written before going on).
    pub async fn record(
        &self,
        object: &Value,
        warning: bool,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        record(
            &self.inner.client,
            object,
            warning,
            reason,
            message,
            component,
        )
        .await;
    }
}

/// Records an event about `object` (`kind`/`apiVersion` must be set); failures are
/// logged, never fatal: events are a courtesy.
async fn record(
    client: &ApiClient,
    object: &Value,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let suffix: String = crate::api::meta::new_uid().replace('-', "")[..16].to_string();
    let now = now_rfc3339();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{suffix}"), "namespace": ns},
        "involvedObject": {
            "apiVersion": object["apiVersion"], "kind": object["kind"], "namespace": object["metadata"]["namespace"],
            "name": name, "uid": object["metadata"]["uid"], "resourceVersion": object["metadata"]["resourceVersion"],
        },
        "reason": reason, "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component, "reportingInstance": "",
        "firstTimestamp": now, "lastTimestamp": now, "eventTime": Value::Null, "count": 1,
    });

    if let Err(e) = client
        .create(&format!("/api/v1/namespaces/{ns}/events"), &event)
        .await
    {
        tracing::debug!(reason, error = %e, "could not record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut f = SpamFilter::default();
        let t0 = Instant::now();
        assert_eq!((0..40).filter(|_| f.allow("rs/a", t0)).count(), 25);
        assert!(f.allow("rs/b", t0), "another object has its own bucket");
        assert!(!f.allow("rs/a", t0 + Duration::from_secs(299)));
        assert!(f.allow("rs/a", t0 + Duration::from_secs(301)));
        assert!(!f.allow("rs/a", t0 + Duration::from_secs(302)));
    }
}
