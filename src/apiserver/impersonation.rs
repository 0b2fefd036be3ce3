//! Upstream's impersonation filter: `Impersonate-User`, `-Group`, `-Uid` and
//! `-Extra-<key>` make the rest of the request run as another user, once the caller
//! has been authorized to `impersonate` each part (users or serviceaccounts, groups,
//! `userextras/<key>`, uids). What the request then does is decided for the
//! impersonated user; the audit log keeps both.

use super::auth::UserInfo;
use super::rbac::Rbac;
use super::request_info::RequestInfo;
use super::status::ApiStatus;
use crate::api::validation::pod::dns_label_problem;
use http::HeaderMap;
use std::collections::BTreeMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";
const AUTHENTICATION: &str = "authentication.k8s.io";

/// What the headers ask to become.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: BTreeMap<String, Vec<String>>,
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An extra's key: the header name's rest, lowercased, then percent-decoded (kept as
/// it is when it does not decode).
fn extra_key(rest: &str) -> String {
    let lower = rest.to_ascii_lowercase();
    match percent_encoding::percent_decode_str(&lower).decode_utf8() {
        Ok(k) if !has_bad_escape(&lower) => k.into_owned(),
        _ => lower,
    }
}

/// Go's PathUnescape fails on a `%` not followed by two hex digits.
fn has_bad_escape(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn wanted(headers: &HeaderMap) -> Wanted {
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in headers.keys() {
        if let Some(rest) = name.as_str().strip_prefix(EXTRA) {
            extra
                .entry(extra_key(rest))
                .or_default()
                .extend(values(headers, name.as_str()));
        }
    }
    Wanted {
        user: values(headers, USER).next().filter(|u| !u.is_empty()),
        groups: values(headers, GROUP).collect(),
        uid: values(headers, UID).next().filter(|u| !u.is_empty()),
        extra,
    }
}

/// Whether a header asks for impersonation.
fn is_impersonation(name: &http::HeaderName) -> bool {
    let k = name.as_str();
    k == USER || k == GROUP || k == UID || k.starts_with(EXTRA)
}

/// Removes every impersonation header (nothing after the filter sees them).
pub fn strip(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|k| is_impersonation(k))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// `system:serviceaccount:<ns>:<name>` with a valid namespace and name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    let subdomain = name.len() <= 253 && name.split('.').all(|p| dns_label_problem(p).is_none());
    (dns_label_problem(ns).is_none() && !name.contains(':') && subdomain).then_some((ns, name))
}

/// One thing to be authorized to impersonate, as an ObjectReference prints in Go
/// (`{Kind Namespace Name UID APIVersion ResourceVersion FieldPath}`) for the 400.
struct Part {
    kind: &'static str,
    namespace: String,
    name: String,
    api_version: &'static str,
    field_path: String,
    info: RequestInfo,
}

impl Part {
    fn new(kind: &'static str, group: &str, resource: &str, name: &str) -> Part {
        Part {
            kind,
            namespace: String::new(),
            name: name.to_string(),
            api_version: if group.is_empty() {
                ""
            } else {
                "authentication.k8s.io/v1"
            },
            field_path: String::new(),
            info: RequestInfo {
                is_resource_request: true,
                verb: "impersonate".into(),
                group: group.into(),
                resource: resource.into(),
                name: Some(name.to_string()),
                ..RequestInfo::default()
            },
        }
    }

    fn go_string(&self) -> String {
        format!(
            "{{{} {} {}  {}  {}}}",
            self.kind, self.namespace, self.name, self.api_version, self.field_path
        )
    }
}

fn parts(w: &Wanted) -> Vec<Part> {
    let mut out = Vec::new();
    if let Some(user) = &w.user {
        out.push(match service_account(user) {
            Some((ns, name)) => {
                let mut p = Part::new("ServiceAccount", "", "serviceaccounts", name);
                p.namespace = ns.to_string();
                p.info.namespace = Some(ns.to_string());
                p
            }
            None => Part::new("User", "", "users", user),
        });
    }
    for g in &w.groups {
        out.push(Part::new("Group", "", "groups", g));
    }
    for (key, vals) in &w.extra {
        for v in vals {
            let mut p = Part::new("UserExtra", AUTHENTICATION, "userextras", v);
            p.field_path = key.clone();
            p.info.subresource = Some(key.clone());
            out.push(p);
        }
    }
    if let Some(uid) = &w.uid {
        out.push(Part::new("UID", AUTHENTICATION, "uids", uid));
    }
    out
}

/// The user a request runs as: `None` when it impersonates nobody; the impersonated
/// user once `caller` may impersonate every part; else upstream's 400 (parts without
/// a user) or 403 (the first part refused).
pub fn impersonate(
    rbac: &Rbac,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<Option<UserInfo>, ApiStatus> {
    let w = wanted(headers);
    if w == Wanted::default() {
        return Ok(None);
    }
    let parts = parts(&w);
    let Some(name) = w.user.clone() else {
        let list: Vec<String> = parts.iter().map(Part::go_string).collect();
        return Err(ApiStatus::bad_request(format!(
            "requested [{}] without impersonating a user",
            list.join(" ")
        )));
    };
    for p in &parts {
        if !super::auth::authorize(rbac, caller, &p.info) {
            return Err(super::auth::forbidden(caller, &p.info, None));
        }
    }
    let mut groups = w.groups.clone();
    if let (Some((ns, _)), true) = (service_account(&name), groups.is_empty()) {
        groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let has = |g: &str, gs: &[String]| gs.iter().any(|x| x == g);
    if name == "system:anonymous" {
        if !has("system:unauthenticated", &groups) {
            groups.push("system:unauthenticated".into());
        }
    } else if !has("system:authenticated", &groups) && !has("system:unauthenticated", &groups) {
        groups.push("system:authenticated".into());
    }
    Ok(Some(UserInfo {
        name,
        groups,
        uid: w.uid.unwrap_or_default(),
        extra: w.extra,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("a name"),
                HeaderValue::from_str(v).expect("a value"),
            );
        }
        h
    }

    fn admin() -> UserInfo {
        UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into()],
            ..UserInfo::default()
        }
    }

    #[test]
    fn the_impersonated_user_gets_upstreams_groups() {
        let rbac = Rbac::default();
        let as_ = |pairs: &[(&str, &str)]| {
            impersonate(&rbac, &admin(), &headers(pairs))
                .expect("allowed")
                .expect("impersonating")
        };
        let u = as_(&[("Impersonate-User", "tester")]);
        assert_eq!(
            (u.name.as_str(), u.groups),
            ("tester", vec!["system:authenticated".to_string()])
        );
        let u = as_(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
        ]);
        assert_eq!(u.groups, ["devs", "ops", "system:authenticated"]);
        let u = as_(&[("Impersonate-User", "system:serviceaccount:foo:default")]);
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:foo",
                "system:authenticated"
            ]
        );
        let u = as_(&[("Impersonate-User", "system:anonymous")]);
        assert_eq!(u.groups, ["system:unauthenticated"]);
        let u = as_(&[
            ("Impersonate-User", "u"),
            ("Impersonate-Uid", "1234"),
            ("Impersonate-Extra-Example.com%2fScopes", "view"),
            ("Impersonate-Extra-example.com%2fscopes", "edit"),
            ("Impersonate-Extra-almost%zzencoded", "x"),
        ]);
        assert_eq!(u.uid, "1234");
        assert_eq!(u.extra["example.com/scopes"], ["view", "edit"]);
        assert_eq!(u.extra["almost%zzencoded"], ["x"]);
        assert_eq!(impersonate(&rbac, &admin(), &HeaderMap::new()), Ok(None));
    }

    #[test]
    fn parts_without_a_user_are_a_bad_request() {
        let rbac = Rbac::default();
        let e = impersonate(&rbac, &admin(), &headers(&[("Impersonate-Group", "devs")]))
            .expect_err("refused");
        assert_eq!(e.code, http::StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "requested [{Group  devs    }] without impersonating a user"
        );
        let e = impersonate(&rbac, &admin(), &headers(&[("Impersonate-Uid", "u1")]))
            .expect_err("refused");
        assert_eq!(
            e.message,
            "requested [{UID  u1  authentication.k8s.io/v1  }] without impersonating a user"
        );
    }

    #[test]
    fn every_part_needs_the_impersonate_verb() {
        use serde_json::json;
        let rbac = Rbac::default();
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        };
        let e = impersonate(&rbac, &bob, &headers(&[("Impersonate-User", "alice")]))
            .expect_err("refused");
        assert_eq!(e.code, http::StatusCode::FORBIDDEN);
        assert_eq!(
            e.message,
            r#"users "alice" is forbidden: User "bob" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        rbac.insert(&json!({"kind": "ClusterRole", "metadata": {"name": "imp"},
            "rules": [{"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"], "resourceNames": ["alice"]}]}));
        rbac.insert(&json!({"kind": "ClusterRoleBinding", "metadata": {"name": "imp"},
            "roleRef": {"kind": "ClusterRole", "name": "imp"}, "subjects": [{"kind": "User", "name": "bob"}]}));
        let u = impersonate(&rbac, &bob, &headers(&[("Impersonate-User", "alice")]))
            .expect("allowed")
            .expect("impersonating");
        assert_eq!(u.name, "alice");
        // another user, a group, or a service account each need their own grant
        let e = impersonate(&rbac, &bob, &headers(&[("Impersonate-User", "carol")]))
            .expect_err("refused");
        assert!(
            e.message.starts_with(r#"users "carol" is forbidden"#),
            "{}",
            e.message
        );
        let e = impersonate(
            &rbac,
            &bob,
            &headers(&[
                ("Impersonate-User", "alice"),
                ("Impersonate-Group", "system:masters"),
            ]),
        )
        .expect_err("refused");
        assert_eq!(
            e.message,
            r#"groups "system:masters" is forbidden: User "bob" cannot impersonate resource "groups" in API group "" at the cluster scope"#
        );
        let e = impersonate(
            &rbac,
            &bob,
            &headers(&[(
                "Impersonate-User",
                "system:serviceaccount:kube-system:default",
            )]),
        )
        .expect_err("refused");
        assert_eq!(
            e.message,
            r#"serviceaccounts "default" is forbidden: User "bob" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "kube-system""#
        );
        let e = impersonate(
            &rbac,
            &bob,
            &headers(&[
                ("Impersonate-User", "alice"),
                ("Impersonate-Extra-scopes", "view"),
            ]),
        )
        .expect_err("refused");
        assert_eq!(
            e.message,
            r#"userextras.authentication.k8s.io "view" is forbidden: User "bob" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope"#
        );
    }
}
