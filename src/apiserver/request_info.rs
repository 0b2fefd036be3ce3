//! What a request asks for, read from its method, path and query the way
//! kube-apiserver's RequestInfoFactory does (verbs get/list/watch/create/update/patch/
//! delete/deletecollection; group, version, namespace, resource, name, subresource).

use http::Method;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub path: String,
    pub is_resource_request: bool,
    pub verb: String,
    /// "api" or "apis".
    pub prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The `fieldSelector` of a list or watch (upstream's authorizer attributes carry
    /// it since 1.31: a node may list only its own pods).
    pub field_selector: Option<String>,
}

/// Query parameter value, if present (no percent-decoding needed for the flags read here).
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// All query parameters, percent-decoded (`+` is a space, as Go's url.Values encodes).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    crate::util::url::decode(s)
}

impl RequestInfo {
    pub fn parse(method: &Method, path: &str, query: &str) -> RequestInfo {
        let lower = method.as_str().to_ascii_lowercase();
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: match *method {
                Method::GET | Method::HEAD => "get".into(),
                _ => lower,
            },
            field_selector: query_pairs(query)
                .into_iter()
                .find(|(k, _)| k == "fieldSelector")
                .map(|(_, v)| v),
            ..Default::default()
        };
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] => {
                info.prefix = "api".into();
                info.version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] => {
                info.prefix = "apis".into();
                info.group = group.to_string();
                info.version = version.to_string();
                rest
            }
            _ => return info,
        };
        if rest.is_empty() {
            return info; // discovery of a group version
        }
        info.is_resource_request = true;
        let mut rest = rest.to_vec();
        let mut watch_path = false;
        if rest.first() == Some(&"watch") {
            watch_path = true;
            rest.remove(0);
        }
        // namespaces/<ns>/<resource>... is namespaced; "namespaces" and
        // "namespaces/<name>[/status|/finalize]" are the namespace resource itself
        let namespace_subresource =
            rest.len() == 3 && matches!(rest.get(2), Some(&"status") | Some(&"finalize"));
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !namespace_subresource {
            info.namespace = Some(rest[1].to_string());
            rest.drain(..2);
        }
        info.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        info.name = rest.get(1).map(|s| s.to_string());
        info.subresource = rest.get(2).map(|s| s.to_string());
        if info.resource == "namespaces" {
            // the namespace is also the object's own name
            info.namespace = info.name.clone();
        }
        let watch_param = query_param(query, "watch").is_some_and(|v| v == "true" || v == "1");
        info.verb = match (*method == Method::GET || *method == Method::HEAD, method) {
            (true, _) if watch_path || watch_param => "watch".into(),
            (true, _) if info.name.is_none() => "list".into(),
            (true, _) => "get".into(),
            (_, &Method::POST) => "create".into(),
            (_, &Method::PUT) => "update".into(),
            (_, &Method::PATCH) => "patch".into(),
            (_, &Method::DELETE) if info.name.is_none() => "deletecollection".into(),
            (_, &Method::DELETE) => "delete".into(),
            _ => info.verb,
        };
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_like_kube_apiserver() {
        let r = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.namespace.as_deref()),
            ("list", "pods", Some("default"))
        );
        let r = RequestInfo::parse(
            &Method::GET,
            "/api/v1/namespaces/default/pods",
            "watch=true&resourceVersion=5",
        );
        assert_eq!(r.verb, "watch");
        let r = RequestInfo::parse(&Method::GET, "/api/v1/watch/namespaces/default/pods", "");
        assert_eq!((r.verb.as_str(), r.resource.as_str()), ("watch", "pods"));
        let r = RequestInfo::parse(
            &Method::PUT,
            "/apis/apps/v1/namespaces/x/deployments/web/scale",
            "",
        );
        assert_eq!(
            (
                r.verb.as_str(),
                r.group.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("update", "apps", Some("web"), Some("scale"))
        );
        let r = RequestInfo::parse(&Method::PUT, "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (
                r.verb.as_str(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("update", "namespaces", Some("x"), Some("finalize"))
        );
        let r = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.name.as_deref()),
            ("get", "namespaces", Some("kube-system"))
        );
        let r = RequestInfo::parse(&Method::GET, "/api/v1/namespaces", "");
        assert_eq!(
            (r.verb.as_str(), r.resource.as_str(), r.namespace),
            ("list", "namespaces", None)
        );
        let r = RequestInfo::parse(&Method::DELETE, "/api/v1/namespaces/a/configmaps", "");
        assert_eq!(r.verb, "deletecollection");
        let r = RequestInfo::parse(&Method::GET, "/apis/apps/v1", "");
        assert!(!r.is_resource_request);
        let r = RequestInfo::parse(&Method::GET, "/healthz", "");
        assert!(!r.is_resource_request);
        assert_eq!(query_param("a=1&watch&b=2", "watch"), Some(""));
        assert_eq!(
            query_pairs("labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=5&x"),
            vec![
                (
                    "labelSelector".to_string(),
                    "app=web,tier in (a)".to_string()
                ),
                ("limit".to_string(), "5".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(
            query_pairs("a=%zz%4"),
            vec![("a".to_string(), "%zz%4".to_string())]
        );
    }
}
