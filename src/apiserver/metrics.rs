//! `/metrics` in the Prometheus text format, with kube-apiserver's metric names so
//! existing dashboards work: request counts and latencies by verb, resource and code,
//! open watches, and datastore latency (`etcd_request_duration_seconds`, whatever the
//! backend).

use crate::store::{
    GetResult, ListOptions, ListResult, Result as StoreResult, Revision, Store, Watch,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kube-apiserver's request-duration buckets.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// Datastore buckets (etcd_request_duration_seconds).
const STORE_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Label sets are kept as rendered `{a="b",...}` strings, in a stable order.
type Labels = String;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[derive(Default)]
struct State {
    requests: BTreeMap<Labels, u64>,
    durations: BTreeMap<Labels, Histogram>,
    watches: BTreeMap<Labels, i64>,
    store: BTreeMap<Labels, Histogram>,
    authentications: BTreeMap<&'static str, u64>,
    datastore_watches: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

/// What a request was, for its labels.
pub struct RequestLabels<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub scope: &'a str,
}

impl<'a> RequestLabels<'a> {
    /// The labels of `info`'s request, only from what the server knows: an unknown
    /// group, version or resource is `""`, an unknown subresource `""`, an unknown
    /// verb `other` (upstream's `cleanVerb`), so no client can invent series.
    pub fn of(
        info: &'a super::request_info::RequestInfo,
        registry: &super::registry::Registry,
    ) -> RequestLabels<'a> {
        let known = registry
            .find(&info.group, &info.version, &info.resource)
            .filter(|_| info.is_resource_request);
        let subresource = match (known, info.subresource.as_deref()) {
            (Some(res), Some(sub)) if res.subresources.iter().any(|s| s.name == sub) => sub,
            _ => "",
        };
        let verb = match info.verb.as_str() {
            "get" => "GET",
            "list" => "LIST",
            "watch" => "WATCH",
            "create" => "POST",
            "update" => "PUT",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "deletecollection" => "DELETECOLLECTION",
            _ => "other",
        };
        let scope = match (&info.name, &info.namespace) {
            _ if known.is_none() => "",
            (Some(_), _) => "resource",
            (None, Some(_)) => "namespace",
            _ => "cluster",
        };
        let (group, version, resource) = match known {
            Some(_) => (
                info.group.as_str(),
                info.version.as_str(),
                info.resource.as_str(),
            ),
            None => ("", "", ""),
        };
        RequestLabels {
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
        }
    }
}

impl Metrics {
    /// One authentication of a request without a client certificate: `success`,
    /// `failure` (a token was refused) or `error` (no credentials), as upstream's
    /// `authentication_attempts`; nothing from the request becomes a label.
    pub fn authentication(&self, result: &'static str) {
        *self.lock().authentications.entry(result).or_default() += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one finished request.
    pub fn request(&self, r: &RequestLabels, code: u16, elapsed: Duration) {
        let base = [
            ("component", "apiserver"),
            ("group", r.group),
            ("resource", r.resource),
            ("scope", r.scope),
            ("subresource", r.subresource),
            ("verb", r.verb),
            ("version", r.version),
        ];
        let code = code.to_string();
        let mut with_code = base.to_vec();
        with_code.insert(1, ("code", code.as_str()));
        let mut st = self.lock();
        *st.requests.entry(labels(&with_code)).or_default() += 1;
        st.durations
            .entry(labels(&base))
            .or_default()
            .observe(REQUEST_BUCKETS, elapsed.as_secs_f64());
    }

    /// A watch opened (+1) or closed (-1).
    pub fn watch(&self, group: &str, version: &str, resource: &str, delta: i64) {
        let l = labels(&[
            ("component", "apiserver"),
            ("group", group),
            ("resource", resource),
            ("scope", "resource"),
            ("verb", "WATCH"),
            ("version", version),
        ]);
        *self.lock().watches.entry(l).or_default() += delta;
    }

    fn store_op(&self, operation: &str, key: &str, elapsed: Duration) {
        // the type is the resource part of the key: /registry/<group>/<resource>
        let ty: String = key.split('/').take(4).collect::<Vec<_>>().join("/");
        let l = labels(&[("operation", operation), ("type", &ty)]);
        self.lock()
            .store
            .entry(l)
            .or_default()
            .observe(STORE_BUCKETS, elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let st = self.lock();
        let mut out = String::new();
        let histogram = |out: &mut String,
                         name: &str,
                         help: &str,
                         buckets: &[f64],
                         series: &BTreeMap<Labels, Histogram>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (l, h) in series {
                let inner = l.trim_start_matches('{').trim_end_matches('}');
                for (i, b) in buckets.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{inner},le=\"{b}\"}} {}",
                        h.counts.get(i).copied().unwrap_or(0)
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{{inner},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{l} {}", h.sum);
                let _ = writeln!(out, "{name}_count{l} {}", h.count);
            }
        };
        let _ = writeln!(
            out,
            "# HELP authentication_attempts Counter of authenticated attempts.\n# TYPE authentication_attempts counter"
        );
        for (result, v) in &st.authentications {
            let _ = writeln!(out, "authentication_attempts{{result=\"{result}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter"
        );
        for (l, v) in &st.requests {
            let _ = writeln!(out, "apiserver_request_total{l} {v}");
        }
        histogram(
            &mut out,
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            REQUEST_BUCKETS,
            &st.durations,
        );
        let _ = writeln!(
            out,
            "# HELP apiserver_longrunning_requests Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component.\n# TYPE apiserver_longrunning_requests gauge"
        );
        for (l, v) in &st.watches {
            let _ = writeln!(out, "apiserver_longrunning_requests{l} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP skua_datastore_watches_opened_total Counter of watches opened on the datastore (the watch cache keeps one per resource).\n# TYPE skua_datastore_watches_opened_total counter\nskua_datastore_watches_opened_total {}",
            st.datastore_watches
        );
        histogram(
            &mut out,
            "etcd_request_duration_seconds",
            "Etcd request latency in seconds for each operation and object type.",
            STORE_BUCKETS,
            &st.store,
        );
        out
    }
}

/// A [`Store`] that times every call into [`Metrics`].
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        InstrumentedStore { inner, metrics }
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn get(&self, key: &str) -> StoreResult<GetResult> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.store_op("get", key, t.elapsed());
        r
    }
    async fn list(&self, prefix: &str, opts: ListOptions) -> StoreResult<ListResult> {
        let t = Instant::now();
        let r = self.inner.list(prefix, opts).await;
        self.metrics.store_op("list", prefix, t.elapsed());
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.metrics.store_op("create", key, t.elapsed());
        r
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> StoreResult<Revision> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.metrics.store_op("update", key, t.elapsed());
        r
    }
    async fn delete(&self, key: &str, expected: Revision) -> StoreResult<Revision> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.metrics.store_op("delete", key, t.elapsed());
        r
    }
    async fn watch(&self, prefix: &str, since: Revision) -> StoreResult<Watch> {
        self.metrics.lock().datastore_watches += 1;
        self.inner.watch(prefix, since).await
    }
    async fn current_revision(&self) -> StoreResult<Revision> {
        self.inner.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        self.inner.compact(revision).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn supports_progress(&self) -> bool {
        self.inner.supports_progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_labels_come_only_from_known_resources_and_verbs() {
        use crate::apiserver::request_info::RequestInfo;
        use http::Method;
        let reg = crate::apiserver::registry::Registry::new();
        let info = RequestInfo::parse(&Method::GET, "/apis/zzz-random/v9/things-xyz", "");
        let l = RequestLabels::of(&info, &reg);
        assert_eq!((l.group, l.version, l.resource, l.scope), ("", "", "", ""));
        let weird = Method::from_bytes(b"FROBNICATE").unwrap();
        let info = RequestInfo::parse(&weird, "/api/v1/namespaces/default/pods/x/bogus", "");
        let l = RequestLabels::of(&info, &reg);
        assert_eq!((l.verb, l.resource, l.subresource), ("other", "pods", ""));
        let info = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/default/pods", "watch=1");
        let l = RequestLabels::of(&info, &reg);
        assert_eq!(
            (l.verb, l.resource, l.scope),
            ("WATCH", "pods", "namespace")
        );
        // ten thousand random paths make no new series
        let m = Metrics::default();
        for i in 0..10_000 {
            let info = RequestInfo::parse(&Method::GET, &format!("/apis/g{i}/v{i}/r{i}"), "");
            m.request(
                &RequestLabels::of(&info, &reg),
                404,
                Duration::from_millis(1),
            );
        }
        assert_eq!(m.lock().requests.len(), 1);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let r = RequestLabels {
            verb: "LIST",
            group: "",
            version: "v1",
            resource: "pods",
            subresource: "",
            scope: "namespace",
        };
        m.request(&r, 200, Duration::from_millis(3));
        m.request(&r, 200, Duration::from_millis(30));
        m.watch("apps", "v1", "deployments", 1);
        m.store_op(
            "get",
            "/registry/core/pods/default/web",
            Duration::from_millis(1),
        );
        let text = m.render();
        assert!(text.contains("apiserver_request_total{component=\"apiserver\",code=\"200\",group=\"\",resource=\"pods\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1\"} 2"), "{text}");
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("apiserver_longrunning_requests{component=\"apiserver\",group=\"apps\",resource=\"deployments\",scope=\"resource\",verb=\"WATCH\",version=\"v1\"} 1"));
        assert!(text.contains("etcd_request_duration_seconds_count{operation=\"get\",type=\"/registry/core/pods\"} 1"), "{text}");
    }
}
