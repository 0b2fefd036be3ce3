//! Who is calling (authentication) and may they (authorization).
//!
//! The authorizer chain: `system:masters` may do everything, a node
//! (`system:node:<name>` in `system:nodes`) what upstream's Node authorizer and
//! `system:node` role let a kubelet do, everybody else what RBAC grants; a refusal
//! carries upstream's message.

use super::request_info::RequestInfo;
use super::status::ApiStatus;
use crate::pki::x509;

/// An authenticated (or anonymous) user, as Kubernetes' `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's name (`system:serviceaccount:<ns>:<name>` for a service account).
    pub name: String,
    /// The groups it is in (`system:authenticated` for everyone with credentials).
    pub groups: Vec<String>,
    /// Its unique id, when its authenticator (or an impersonation) says.
    pub uid: String,
    /// Further facts its authenticator (or an impersonation) attaches.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// The API server itself, for the objects it writes on its own behalf (as
    /// upstream's loopback client, `system:apiserver` in `system:masters`).
    pub fn apiserver() -> UserInfo {
        UserInfo {
            name: "system:apiserver".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Default::default()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// CN → user, O → groups, as kube-apiserver reads client certificates.
    pub fn from_certificate(der: &[u8]) -> Option<UserInfo> {
        let subject = x509::subject(der)?;
        let name = subject
            .common_names
            .into_iter()
            .next()
            .filter(|n| !n.is_empty())?;
        let mut groups = subject.organizations;
        groups.push("system:authenticated".into());
        Some(UserInfo {
            name,
            groups,
            ..Default::default()
        })
    }
}

/// An authorizer's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// Decides whether a user may make a request.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision;
}

/// The node a user is, if it is one: `system:node:<name>` in `system:nodes`.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    user.name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty() && user.groups.iter().any(|g| g == "system:nodes"))
}

/// What a kubelet may do, as upstream's Node authorizer with the `system:node` role
/// and the part of NodeRestriction that the request itself shows: its own Node and
/// Lease only; its own pods (listed with `spec.nodeName=<itself>`, as
/// `AuthorizeNodeWithSelectors`), their status and evictions; reading what its pods
/// need; events; tokens for its pods' service accounts; reviews for its own API's
/// authentication. What needs a stored object (whose pod, which pod refers to what)
/// is checked next, in `node_authz`.
fn node_may(node: &str, r: &RequestInfo) -> bool {
    let verb = r.verb.as_str();
    let read = matches!(verb, "get" | "list" | "watch");
    let own = r.name.as_deref().is_none_or(|n| n == node);
    let sub = r.subresource.as_deref();
    match (r.group.as_str(), r.resource.as_str(), sub) {
        ("", "nodes", None) => {
            read || verb == "create" || (own && matches!(verb, "update" | "patch" | "delete"))
        }
        ("", "nodes", Some("status")) => own && matches!(verb, "get" | "update" | "patch"),
        ("coordination.k8s.io", "leases", None) => {
            r.namespace.as_deref() == Some("kube-node-lease")
                && own
                && matches!(verb, "get" | "create" | "update" | "patch" | "delete")
        }
        // create: mirror pods only (admission); delete: its own pods (node_authz)
        ("", "pods", None) => match verb {
            "get" | "create" | "delete" => true,
            "list" | "watch" => selects_node(r.field_selector.as_deref(), node),
            _ => false,
        },
        ("", "pods", Some("status")) => matches!(verb, "get" | "update" | "patch"),
        ("", "pods", Some("eviction")) => verb == "create",
        ("", "events", None) | ("events.k8s.io", "events", None) => {
            matches!(verb, "create" | "update" | "patch")
        }
        ("", "services" | "endpoints", None) | ("discovery.k8s.io", "endpointslices", None) => read,
        ("node.k8s.io", "runtimeclasses", None) => read,
        // what a pod on the node refers to: one by name, and only through a pod bound
        // to the node (node_authz's graph); never a list
        (
            "",
            "configmaps"
            | "secrets"
            | "persistentvolumeclaims"
            | "persistentvolumes"
            | "serviceaccounts",
            None,
        ) => verb == "get" && r.name.is_some(),
        ("", "serviceaccounts", Some("token")) => verb == "create",
        ("storage.k8s.io", "csinodes" | "csidrivers" | "volumeattachments", None) => read,
        ("authentication.k8s.io", "tokenreviews", None)
        | ("authorization.k8s.io", "subjectaccessreviews", None) => verb == "create",
        _ => false,
    }
}

/// Whether a field selector limits a list to `node`'s pods (`spec.nodeName=<node>`
/// among its requirements).
fn selects_node(selector: Option<&str>, node: &str) -> bool {
    selector.is_some_and(|s| {
        s.split(',').any(|req| {
            let req = req.trim();
            req.strip_prefix("spec.nodeName")
                .and_then(|rest| rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')))
                .is_some_and(|value| value.trim() == node)
        })
    })
}

/// What is decided before RBAC: members of `system:masters` may do everything (the
/// short cut upstream's authorizer chain starts with), nodes what kubelets need (the
/// Node authorizer). Everything else is RBAC's to grant.
pub struct MastersAndNodes;

impl Authorizer for MastersAndNodes {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Decision::Allow;
        }
        match node_of(user) {
            Some(node) if request.is_resource_request && node_may(node, request) => Decision::Allow,
            _ => Decision::Deny,
        }
    }
}

/// The authorizer chain, as upstream's `--authorization-mode=Node,RBAC` behind the
/// `system:masters` short cut: what a node may do, then what the caller's RBAC
/// bindings grant (from the in-memory index: no datastore read), the default policy's
/// included (discovery, health and version, asking about oneself, skua's agents).
pub fn authorize(rbac: &super::rbac::Rbac, caller: &UserInfo, info: &RequestInfo) -> bool {
    if MastersAndNodes.authorize(caller, info) == Decision::Allow {
        return true;
    }
    let request = crate::api::rbac::Request {
        verb: &info.verb,
        resource_request: info.is_resource_request,
        group: &info.group,
        resource: &info.resource,
        subresource: info.subresource.as_deref().unwrap_or(""),
        name: info.name.as_deref().unwrap_or(""),
        path: &info.path,
    };
    let who = super::rbac::Caller {
        name: &caller.name,
        groups: &caller.groups,
    };
    let namespace = if info.is_resource_request {
        info.namespace.as_deref().unwrap_or("")
    } else {
        ""
    };
    rbac.allows(&who, namespace, &request)
}

/// Upstream's wording of a 403, e.g. `pods "web" is forbidden: User "bob" cannot get
/// resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &UserInfo, r: &RequestInfo) -> String {
    if !r.is_resource_request {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            user.name, r.verb, r.path
        );
    }
    let resource = match &r.subresource {
        Some(sub) => format!("{}/{}", r.resource, sub),
        None => r.resource.clone(),
    };
    // the group-qualified resource, as upstream's NewForbidden (`deployments.apps`)
    let qualified = super::status::qualified(&r.resource, &r.group);
    let subject = match &r.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let scope = match &r.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, r.verb, r.group
    )
}

/// Upstream's 403 for a request no authorizer allows (`reason`: what the deciding
/// authorizer added, as the Node authorizer does), with the Status details upstream's
/// `NewForbidden` sets: the resource's group, the resource as `kind`, and the name.
pub fn forbidden(user: &UserInfo, r: &RequestInfo, reason: Option<&str>) -> ApiStatus {
    let message = match reason {
        Some(reason) => format!("{}: {reason}", forbidden_message(user, r)),
        None => forbidden_message(user, r),
    };
    let status = ApiStatus::new(http::StatusCode::FORBIDDEN, "Forbidden", message);
    if !r.is_resource_request {
        return status;
    }
    let mut details = serde_json::json!({"group": r.group, "kind": r.resource});
    if let Some(name) = &r.name {
        details["name"] = serde_json::json!(name);
    }
    status.with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn a_node_may_do_what_a_kubelet_needs_and_no_more() {
        let node = UserInfo {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            ..Default::default()
        };
        let may = |method: Method, path: &str| {
            MastersAndNodes.authorize(&node, &RequestInfo::parse(&method, path, ""))
                == Decision::Allow
        };
        assert!(may(Method::GET, "/api/v1/nodes"));
        assert!(may(Method::POST, "/api/v1/nodes"));
        assert!(may(Method::PATCH, "/api/v1/nodes/n1/status"));
        assert!(!may(Method::PATCH, "/api/v1/nodes/n2/status"));
        assert!(!may(Method::DELETE, "/api/v1/nodes/n2"));
        assert!(may(
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        ));
        assert!(!may(
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2"
        ));
        assert!(!may(
            Method::PUT,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1"
        ));
        // its own pods only: a list or watch must select spec.nodeName=<itself>
        let watch = RequestInfo::parse(
            &Method::GET,
            "/api/v1/pods",
            "watch=1&fieldSelector=spec.nodeName%3Dn1",
        );
        assert_eq!(watch.verb, "watch");
        assert_eq!(MastersAndNodes.authorize(&node, &watch), Decision::Allow);
        for query in [
            "watch=1",
            "fieldSelector=spec.nodeName%3Dn2",
            "fieldSelector=spec.nodeName%21%3Dn1",
            "fieldSelector=spec.nodeName%3Dn1x",
            "fieldSelector=metadata.name%3Dn1",
        ] {
            let r = RequestInfo::parse(&Method::GET, "/api/v1/pods", query);
            assert_eq!(
                MastersAndNodes.authorize(&node, &r),
                Decision::Deny,
                "{query}"
            );
        }
        let r = RequestInfo::parse(
            &Method::GET,
            "/api/v1/pods",
            "fieldSelector=status.phase%3DRunning,spec.nodeName%3D%3Dn1",
        );
        assert_eq!(MastersAndNodes.authorize(&node, &r), Decision::Allow);
        // nothing cluster-wide beyond its pods' needs: no namespaces, no policies
        assert!(!may(Method::GET, "/api/v1/namespaces"));
        assert!(!may(
            Method::GET,
            "/apis/networking.k8s.io/v1/networkpolicies"
        ));
        assert!(may(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/web/status"
        ));
        assert!(may(Method::GET, "/api/v1/namespaces/default/secrets/token"));
        assert!(!may(Method::GET, "/api/v1/namespaces/default/secrets"));
        assert!(!may(Method::GET, "/apis/apps/v1/deployments"));
        assert!(may(Method::POST, "/api/v1/namespaces/default/events"));
        // a name in system:nodes is needed, not just the prefix
        let pretender = UserInfo {
            name: "system:node:n1".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let r = RequestInfo::parse(&Method::GET, "/api/v1/nodes", "");
        assert_eq!(MastersAndNodes.authorize(&pretender, &r), Decision::Deny);
    }

    #[test]
    fn forbidden_messages_match_upstream() {
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        };
        let r = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/default/pods/web", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "pods \"web\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let r = RequestInfo::parse(&Method::GET, "/apis/apps/v1/deployments", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "deployments.apps is forbidden: User \"bob\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        // the Status names the group and resource, as upstream's NewForbidden
        let r = RequestInfo::parse(
            &Method::GET,
            "/apis/apps/v1/namespaces/x/deployments/web",
            "",
        );
        let status = forbidden(&bob, &r, None);
        assert_eq!(status.code, http::StatusCode::FORBIDDEN);
        assert_eq!(
            status.details,
            serde_json::json!({"group": "apps", "kind": "deployments", "name": "web"})
        );
        assert!(
            status
                .message
                .starts_with("deployments.apps \"web\" is forbidden: ")
        );
        let r = RequestInfo::parse(&Method::GET, "/metrics", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
        assert_eq!(MastersAndNodes.authorize(&bob, &r), Decision::Deny);
        let admin = UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
            ..Default::default()
        };
        assert_eq!(MastersAndNodes.authorize(&admin, &r), Decision::Allow);
    }
}
