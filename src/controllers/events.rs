//! Event expiry: events older than `--event-ttl` are deleted, as the API server's
//! storage TTL does upstream. Recording events is `runtime::events`.

use crate::client::ApiClient;
use serde_json::json;
use std::time::Duration;

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
                    format!("&continue={}", crate::util::url::encode(&next))
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
