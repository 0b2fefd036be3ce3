//! The in-process harness of the API server: a whole `ApiContext` over the memory
//! store, called through the router (authorization, admission, strategies, watch
//! cache and all) as a `system:masters` user, so API behaviour is tested in
//! milliseconds without TLS, processes or a datastore on disk.

use super::ApiContext;
use super::auth::UserInfo;
use crate::store::memory::MemoryStore;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;

/// An API server over a memory store bootstrapped as the server's is (namespaces,
/// system priority classes, the default RBAC policy) with the built-in admission chain.
pub async fn context() -> Arc<ApiContext> {
    let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::new());
    super::resources::bootstrap(&*store)
        .await
        .expect("the bootstrap objects");
    super::resources::bootstrap_rbac(&*store)
        .await
        .expect("the default RBAC policy");
    let key = rcgen::KeyPair::generate().expect("a P-256 key");
    let service_cidr = "10.43.0.0/16".parse().expect("a network");
    let node_ports = crate::config::PortRange {
        first: 30000,
        last: 32767,
    };
    let rbac: Arc<super::rbac::Rbac> = Default::default();
    Arc::new(ApiContext {
        store: store.clone(),
        tokens: super::tokens::TokenAuthority::new(&key.serialize_pem(), "cluster.local")
            .expect("a token authority"),
        metrics: Default::default(),
        server_address: "127.0.0.1:6443".into(),
        watch_memo: Default::default(),
        join: None,
        node_graph: Default::default(),
        rbac: rbac.clone(),
        inflight: Default::default(),
        anonymous_auth: true,
        audit: None,
        service_ranges: super::resources::allocate::ServiceRanges::new(service_cidr, node_ports)
            .expect("service ranges"),
        watch_cache: super::watchcache::WatchCaches::new(store, true),
        admission: super::admission::Chain::server(rbac, Default::default()),
        kubelet_tls: Default::default(),
        registry: Default::default(),
    })
}

/// One request as an administrator; the status and the JSON body (`Null` if none).
pub async fn call(
    ctx: &Arc<ApiContext>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("a request");
    let admin = UserInfo {
        name: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
        ..Default::default()
    };
    let resp = super::routes::handle(req, admin, ctx.clone())
        .await
        .unwrap_or_else(|never| match never {});
    let code = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
