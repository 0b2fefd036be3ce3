//! Events (core/v1), as `kubectl describe` and `kubectl get events` show them.

use crate::api::meta::now_rfc3339;
use crate::client::ApiClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Events being written at once; more are dropped, as upstream's broadcaster drops
/// them when its queue is full (events are a courtesy, never back-pressure).
const MAX_PENDING: usize = 1000;
static PENDING: AtomicUsize = AtomicUsize::new(0);

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

static SPAM: LazyLock<Mutex<SpamFilter>> = LazyLock::new(Mutex::default);

/// Records an event in the background, so a control loop never waits for it.
pub fn emit(
    client: &ApiClient,
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
    if !SPAM
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(&source, Instant::now())
    {
        tracing::debug!(reason, "event dropped: too many about one object");
        return;
    }
    if PENDING.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(reason, "event dropped: too many pending");
        return;
    }
    // only what the event names of its object, not the whole object
    let about = json!({
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "metadata": {"namespace": m["namespace"], "name": m["name"], "uid": m["uid"], "resourceVersion": m["resourceVersion"]},
    });
    let client = client.clone();
    tokio::spawn(async move {
        record(&client, &about, warning, reason, &message, component).await;
        PENDING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Deletes events older than `ttl` (by their last time seen), as the API server's
/// `--event-ttl` does upstream; runs until aborted.
pub async fn expire(client: ApiClient, ttl: Duration) {
    loop {
        tokio::time::sleep(Duration::from_secs(60).min(ttl)).await;
        let cutoff = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(ttl)
            .as_secs() as i64;
        let mut next = String::new();
        loop {
            let path = format!(
                "/api/v1/events?limit=500{}",
                if next.is_empty() {
                    String::new()
                } else {
                    format!("&continue={}", crate::client::watch::urlencode(&next))
                }
            );
            let Ok(page) = client.get(&path).await else {
                break;
            };
            for e in page["items"].as_array().into_iter().flatten() {
                let last = ["lastTimestamp", "eventTime"]
                    .iter()
                    .find_map(|f| e[*f].as_str())
                    .or_else(|| e["metadata"]["creationTimestamp"].as_str())
                    .and_then(crate::api::civil::parse_rfc3339);
                if last.is_some_and(|t| t < cutoff) {
                    let ns = e["metadata"]["namespace"].as_str().unwrap_or("");
                    let name = e["metadata"]["name"].as_str().unwrap_or("");
                    let _ = client
                        .delete(
                            &format!("/api/v1/namespaces/{ns}/events/{name}"),
                            &json!({"preconditions": {"uid": e["metadata"]["uid"]}}),
                        )
                        .await;
                }
            }
            match page["metadata"]["continue"].as_str() {
                Some(c) if !c.is_empty() => next = c.to_string(),
                _ => break,
            }
        }
    }
}

/// Records an event about `object` (`kind`/`apiVersion` must be set); failures are
/// logged, never fatal: events are a courtesy.
pub async fn record(
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
