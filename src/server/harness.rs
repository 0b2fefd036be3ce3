//! The in-process harness for control loops: the API server over the memory store
//! (`apiserver::testing`), a client through the in-process transport, and a runtime
//! `Context` the loops under test run in. Nothing else runs: the test plays the
//! kubelet (marking pods Ready or Succeeded) and, with paused time, back-offs and
//! resyncs pass in no time, so rollout, job and garbage-collection behaviour is tested
//! in milliseconds.
#![cfg(test)]

use super::InProcess;
use crate::client::ApiClient;
use crate::runtime::Context;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An API server, a client and a term for loops (see the module documentation).
pub struct Harness {
    pub client: ApiClient,
    pub cx: Arc<Context>,
}

impl Harness {
    pub async fn new() -> Harness {
        let ctx = crate::apiserver::testing::context().await;
        let client = InProcess::client(ctx, "system:kube-controller-manager", "harness");
        // what the service account controller would have made: pods need an account
        client
            .create(
                "/api/v1/namespaces/default/serviceaccounts",
                &json!({"metadata": {"name": "default"}}),
            )
            .await
            .expect("the default service account");
        Harness {
            cx: Context::new(client.clone()),
            client,
        }
    }

    /// Runs a loop in this harness's term.
    pub fn run(
        &self,
        start: impl FnOnce(Arc<Context>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    ) {
        self.cx.spawn(start(self.cx.clone()));
    }

    /// Waits (in harness time: up to a simulated minute) until `check` finds what it
    /// looks for; fails the test with `what` otherwise.
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        for _ in 0..6000 {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    /// The items of a list.
    pub async fn list(&self, path: &str) -> Vec<Value> {
        self.client.get(path).await.expect("a list")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Plays the kubelet for `pod` through `client` (for a task the test spawns).
pub async fn set_pod_phase(client: &ApiClient, pod: &Value, phase: &str) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let now = crate::api::meta::now_rfc3339();
    let ready = if phase == "Running" { "True" } else { "False" };
    let status = json!({"status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": ready, "lastTransitionTime": now},
    ]}});
    client
        .patch(
            &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
            &status,
        )
        .await
        .expect("pod status");
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cx.stop();
    }
}
