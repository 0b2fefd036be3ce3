//! Who is calling (authentication) and may they (authorization).
//!
//! The authorizer is a seam: today `system:masters` may do everything and everybody
//! else is refused with upstream's message; RBAC plugs in behind the same trait.

use super::request_info::RequestInfo;
use crate::pki::x509;

/// An authenticated (or anonymous) user, as Kubernetes' `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
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
        Some(UserInfo { name, groups })
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

/// Members of `system:masters` may do everything; nobody else may do anything yet.
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(&self, user: &UserInfo, request: &RequestInfo) -> Decision {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Decision::Allow;
        }
        // upstream's system:discovery and system:public-info-viewer roles, bound to
        // every authenticated user
        let discovery = !request.is_resource_request
            && request.verb == "get"
            && (request.path == "/api"
                || request.path == "/apis"
                || request.path.starts_with("/api/")
                || request.path.starts_with("/apis/")
                || request.path.starts_with("/openapi/")
                || request.path == "/version");
        if discovery && user.groups.iter().any(|g| g == "system:authenticated") {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
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
    let subject = match &r.name {
        Some(name) => format!("{} \"{}\"", r.resource, name),
        None => r.resource.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn forbidden_messages_match_upstream() {
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
        };
        let r = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/default/pods/web", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "pods \"web\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let r = RequestInfo::parse(&Method::GET, "/apis/apps/v1/deployments", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "deployments is forbidden: User \"bob\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let r = RequestInfo::parse(&Method::GET, "/metrics", "");
        assert_eq!(
            forbidden_message(&bob, &r),
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
        assert_eq!(MastersOnly.authorize(&bob, &r), Decision::Deny);
        let admin = UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert_eq!(MastersOnly.authorize(&admin, &r), Decision::Allow);
    }
}
