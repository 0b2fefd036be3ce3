//! RBAC rule evaluation (rbac.authorization.k8s.io/v1), pure: upstream's
//! `pkg/apis/rbac/v1/evaluation_helpers.go` (does a rule allow a request, does a
//! binding's subject name a user) and `pkg/registry/rbac/validation` (does one set of
//! rules cover another: escalation prevention). The API server keeps the index of
//! roles and bindings these functions are applied to.

pub mod reconcile;

use serde_json::{Value, json};

/// `*`: every verb, group, resource or URL.
const ALL: &str = "*";

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The verbs (`get`, `list`, …, `*`).
    pub verbs: Vec<String>,
    /// The API groups (`""` is the core group).
    pub api_groups: Vec<String>,
    /// The resources, with subresources as `pods/log` and `*/scale`.
    pub resources: Vec<String>,
    /// The names the rule is limited to (none: every name).
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/api/*`).
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl Rule {
    /// How many entries the rule's lists hold together (what comparing it costs).
    fn size(&self) -> usize {
        self.verbs.len()
            + self.api_groups.len()
            + self.resources.len()
            + self.resource_names.len()
            + self.non_resource_urls.len()
    }

    /// A rule from its JSON form.
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn all_of(role: &Value) -> Vec<Rule> {
        role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Rule::from_json)
            .collect()
    }

    /// The JSON form (empty lists omitted, as upstream's `omitempty`).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() || k == "verbs" {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// Upstream's `CompactString`, as escalation errors list missing rules:
    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}`.
    pub fn compact_string(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        for (name, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{name}:[{}]", list(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// What a request asks, as the authorizer sees it (upstream's `authorizer.Attributes`).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// get, list, watch, create, update, patch, delete, deletecollection, or a
    /// special verb (impersonate, bind, escalate, use, approve, …).
    pub verb: &'a str,
    /// A resource request (else a non-resource path).
    pub resource_request: bool,
    /// The API group.
    pub group: &'a str,
    /// The resource (plural).
    pub resource: &'a str,
    /// The subresource, `""` for none.
    pub subresource: &'a str,
    /// The object's name, `""` for none (lists, creates).
    pub name: &'a str,
    /// The path, for non-resource requests.
    pub path: &'a str,
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

/// A list to look strings up in: searched when short, hashed when long, so that
/// comparing two long lists is linear, not quadratic.
enum Lookup<'a> {
    Short(&'a [String]),
    Long(std::collections::HashSet<&'a str>),
}

impl<'a> Lookup<'a> {
    fn new(set: &'a [String], lookups: usize) -> Self {
        if set.len() > 32 && lookups > 32 {
            Lookup::Long(set.iter().map(String::as_str).collect())
        } else {
            Lookup::Short(set)
        }
    }

    fn has(&self, s: &str) -> bool {
        match self {
            Lookup::Short(set) => has(set, s),
            Lookup::Long(set) => set.contains(s),
        }
    }
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    let set = Lookup::new(set, wanted.len());
    wanted.iter().all(|w| set.has(w))
}

/// Upstream's `ResourceMatches`: `*`, the resource with its subresource
/// (`pods/log`), or `*/<subresource>`.
fn resource_matches(rule: &Rule, resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.resources.iter().any(|r| {
        r == ALL
            || *r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// Upstream's `NonResourceURLMatches`: the path, or a prefix ending in `*`.
fn url_matches(rule_url: &str, path: &str) -> bool {
    rule_url == ALL
        || rule_url == path
        || rule_url
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// Upstream's `RuleAllows`.
pub fn rule_allows(rule: &Rule, r: &Request) -> bool {
    let verb = has(&rule.verbs, ALL) || has(&rule.verbs, r.verb);
    if !verb {
        return false;
    }
    if !r.resource_request {
        return rule
            .non_resource_urls
            .iter()
            .any(|u| url_matches(u, r.path));
    }
    (has(&rule.api_groups, ALL) || has(&rule.api_groups, r.group))
        && resource_matches(rule, r.resource, r.subresource)
        && (rule.resource_names.is_empty() || has(&rule.resource_names, r.name))
}

/// The user name of a service account (`system:serviceaccount:<ns>:<name>`).
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Who a binding's subject is, reduced to what a request is matched on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A user name (service accounts too, as `system:serviceaccount:<ns>:<name>`).
    User(String),
    /// A group.
    Group(String),
}

/// The subjects of a binding in `namespace` (`""` for a ClusterRoleBinding), as
/// upstream's `appliesToUser` reads them: a ServiceAccount without a namespace takes
/// the binding's; one with neither names nobody. Unknown kinds name nobody.
pub fn subjects(binding: &Value, namespace: &str) -> Vec<Subject> {
    let mut out = Vec::new();
    for s in binding["subjects"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str() {
            Some("User") => out.push(Subject::User(name.to_string())),
            Some("Group") => out.push(Subject::Group(name.to_string())),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace);
                if !ns.is_empty() {
                    out.push(Subject::User(service_account_user(ns, name)));
                }
            }
            _ => {}
        }
    }
    out
}

/// A binding's `roleRef`: a ClusterRole, or a Role of the binding's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RoleRef {
    /// `kind: ClusterRole`.
    ClusterRole(String),
    /// `kind: Role` (in the binding's namespace).
    Role(String),
}

impl RoleRef {
    /// The roleRef of a binding, if it names a role kind.
    pub fn of(binding: &Value) -> Option<RoleRef> {
        let name = binding["roleRef"]["name"].as_str()?.to_string();
        match binding["roleRef"]["kind"].as_str()? {
            "ClusterRole" => Some(RoleRef::ClusterRole(name)),
            "Role" => Some(RoleRef::Role(name)),
            _ => None,
        }
    }
}

/// Upstream's `BreakdownRule`, lazily: one rule per group × resource × verb (× name),
/// and per URL × verb. Lazy because the product of a large rule's lists is far
/// larger than the rule (a 40 KiB rule can break down into billions of parts).
fn breakdown(rule: &Rule) -> impl Iterator<Item = Rule> + '_ {
    let one = |v: &str| vec![v.to_string()];
    // a rule without names breaks down once per resource and verb
    let names: Vec<Option<&String>> = if rule.resource_names.is_empty() {
        vec![None]
    } else {
        rule.resource_names.iter().map(Some).collect()
    };
    let resources = rule.api_groups.iter().flat_map(move |g| {
        let names = names.clone();
        rule.resources.iter().flat_map(move |res| {
            let names = names.clone();
            rule.verbs.iter().flat_map(move |verb| {
                names.clone().into_iter().map(move |n| Rule {
                    verbs: one(verb),
                    api_groups: one(g),
                    resources: one(res),
                    resource_names: n.map(|n| one(n)).unwrap_or_default(),
                    ..Rule::default()
                })
            })
        })
    });
    let urls = rule.non_resource_urls.iter().flat_map(move |url| {
        rule.verbs.iter().map(move |verb| Rule {
            verbs: one(verb),
            non_resource_urls: one(url),
            ..Rule::default()
        })
    });
    resources.chain(urls)
}

/// How much comparing [`uncovered`] may do (in list entries looked at) before it stops
/// breaking rules down: past it, each rule not yet found covered must be held whole
/// (by one held rule) or granted with `escalate`. Upstream has no bound, so a role
/// large in every list costs it the product of their lengths; here it costs at most
/// this much, tens of milliseconds.
pub const MAX_WORK: usize = 20_000_000;

/// How many uncovered parts [`uncovered`] reports: enough for any honest escalation
/// message, small enough that the message is not itself a burden.
pub const MAX_MISSING: usize = 1_000;

/// Upstream's `resourceCoversAll`.
fn resources_cover(set: &[String], wanted: &[String]) -> bool {
    if has(set, ALL) {
        return true;
    }
    let set = Lookup::new(set, wanted.len() * 2);
    wanted.iter().all(|path| {
        set.has(path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| set.has(&format!("*/{sub}")))
    })
}

fn url_covers(owner: &str, path: &str) -> bool {
    owner == path
        || owner
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

/// Upstream's `ruleCovers`: whether `owner` allows everything `sub` does.
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, ALL) || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resources_cover(&owner.resources, &sub.resources);
    let exact = Lookup::new(&owner.non_resource_urls, sub.non_resource_urls.len());
    let urls = sub.non_resource_urls.iter().all(|p| {
        exact.has(p)
            || owner
                .non_resource_urls
                .iter()
                .filter(|o| o.ends_with('*'))
                .any(|o| url_covers(o, p))
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// Upstream's `Covers`: the parts of `wanted` that `held` does not allow (empty: all
/// covered), each as one broken-down rule, at most [`MAX_MISSING`] of them. A wanted
/// rule that one held rule covers whole is not broken down; once [`MAX_WORK`] is
/// spent, a rule not found covered is reported whole.
pub fn uncovered(held: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let work = std::cell::Cell::new(0usize);
    let covered = |sub: &Rule| {
        held.iter().any(|o| {
            let prefixes = o.non_resource_urls.iter().filter(|u| u.ends_with('*'));
            let cost = o.size() + sub.size() + prefixes.count() * sub.non_resource_urls.len();
            work.set(work.get() + cost);
            rule_covers(o, sub)
        })
    };
    let mut missing = Vec::new();
    for rule in wanted {
        if covered(rule) {
            continue;
        }
        let mut parts = breakdown(rule);
        for sub in parts.by_ref() {
            if !covered(&sub) {
                missing.push(sub);
            }
            if missing.len() >= MAX_MISSING {
                return missing;
            }
            if work.get() >= MAX_WORK {
                break;
            }
        }
        if parts.next().is_some() {
            missing.push(rule.clone());
        }
    }
    missing.truncate(MAX_MISSING);
    missing
}

/// Upstream's `CompactRules`: rules of one group, one resource and at most one name
/// that differ only in their verbs merged back into one (as the escalation message
/// lists them).
pub fn compact(rules: &[Rule]) -> Vec<Rule> {
    let simple = |r: &Rule| {
        r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.non_resource_urls.is_empty()
            && r.resource_names.len() <= 1
    };
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        let same = out.iter_mut().find(|o| {
            simple(r)
                && simple(o)
                && o.api_groups == r.api_groups
                && o.resources == r.resources
                && o.resource_names == r.resource_names
        });
        match same {
            Some(o) => {
                for v in &r.verbs {
                    if !has(&o.verbs, v) {
                        o.verbs.push(v.clone());
                    }
                }
            }
            None => out.push(r.clone()),
        }
    }
    out
}

/// Upstream's escalation refusal: `user "alice" (groups=["devs" "system:authenticated"])
/// is attempting to grant RBAC permissions not currently held:` and the missing rules,
/// one per line, sorted.
pub fn escalation_message(user: &str, groups: &[String], missing: &[Rule]) -> String {
    let mut lines: Vec<String> = compact(missing).iter().map(Rule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let groups = groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "user {user:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    fn req<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        name: &'a str,
    ) -> Request<'a> {
        Request {
            verb,
            resource_request: true,
            group,
            resource,
            subresource: sub,
            name,
            path: "",
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(rule_allows(&r, &req("get", "", "pods", "", "web")));
        assert!(rule_allows(&r, &req("list", "", "pods", "", "")));
        assert!(rule_allows(&r, &req("get", "", "pods", "log", "web")));
        assert!(
            !rule_allows(&r, &req("get", "", "pods", "exec", "web")),
            "pods does not grant its subresources"
        );
        assert!(!rule_allows(&r, &req("delete", "", "pods", "", "web")));
        assert!(!rule_allows(&r, &req("get", "apps", "pods", "", "web")));
        let scale = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(rule_allows(
            &scale,
            &req("update", "apps", "deployments", "scale", "d")
        ));
        assert!(!rule_allows(
            &scale,
            &req("update", "apps", "deployments", "", "d")
        ));
        assert!(!rule_allows(
            &scale,
            &req("update", "apps", "deployments", "xscale", "d")
        ));
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}),
        );
        assert!(rule_allows(
            &named,
            &req("get", "", "configmaps", "", "one")
        ));
        assert!(!rule_allows(
            &named,
            &req("get", "", "configmaps", "", "two")
        ));
        assert!(
            !rule_allows(&named, &req("get", "", "configmaps", "", "")),
            "a list has no name"
        );
        let all = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(rule_allows(
            &all,
            &req(
                "escalate",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "x"
            )
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}));
        let path = |p: &'static str| Request {
            verb: "get",
            resource_request: false,
            group: "",
            resource: "",
            subresource: "",
            name: "",
            path: p,
        };
        assert!(rule_allows(&r, &path("/healthz")));
        assert!(!rule_allows(&r, &path("/healthz/etcd")));
        assert!(rule_allows(&r, &path("/api/v1")));
        assert!(!rule_allows(&r, &path("/apis")));
        // a resource rule never allows a path, nor a URL rule a resource
        let res = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(!rule_allows(&res, &path("/healthz")));
        assert!(!rule_allows(&r, &req("get", "", "pods", "", "")));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let b = json!({"subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "build", "namespace": "ci"},
            {"kind": "ServiceAccount", "name": "local"},
            {"kind": "Robot", "name": "r2"},
        ]});
        assert_eq!(
            subjects(&b, "team"),
            vec![
                Subject::User("alice".into()),
                Subject::Group("devs".into()),
                Subject::User("system:serviceaccount:ci:build".into()),
                Subject::User("system:serviceaccount:team:local".into()),
            ]
        );
        // in a ClusterRoleBinding a service account needs its namespace
        assert_eq!(subjects(&b, "").len(), 3);
        assert_eq!(
            RoleRef::of(&json!({"roleRef": {"kind": "ClusterRole", "name": "view"}})),
            Some(RoleRef::ClusterRole("view".into()))
        );
        assert_eq!(
            RoleRef::of(&json!({"roleRef": {"kind": "Thing", "name": "x"}})),
            None
        );
    }

    #[test]
    fn coverage_finds_what_a_grant_would_add() {
        let held = vec![
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]})),
            rule(json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["*/scale"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]})),
            rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
            ),
        ];
        let ok = |w: Value| uncovered(&held, &[rule(w)]).is_empty();
        assert!(ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})
        ));
        assert!(ok(
            json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments/scale"]})
        ));
        assert!(ok(
            json!({"verbs": ["get"], "nonResourceURLs": ["/logs/kube"]})
        ));
        assert!(ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]})
        ));
        assert!(
            !ok(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]})),
            "all secrets is more than one"
        );
        assert!(!ok(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a", "b"]})
        ));
        assert!(
            !ok(json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]})),
            "* is more than get and list"
        );
        assert!(!ok(
            json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments"]})
        ));
        let missing = uncovered(
            &held,
            &[rule(
                json!({"verbs": ["get", "list", "delete", "watch"], "apiGroups": ["", "apps"], "resources": ["pods"]}),
            )],
        );
        assert_eq!(
            escalation_message(
                "alice",
                &["devs".into(), "system:authenticated".into()],
                &missing
            ),
            "user \"alice\" (groups=[\"devs\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"watch\"]}\n{APIGroups:[\"apps\"], Resources:[\"pods\"], Verbs:[\"get\" \"list\" \"delete\" \"watch\"]}"
        );
    }

    fn many(prefix: &str, n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(format!("{prefix}{i}"))).collect()
    }

    #[test]
    fn a_rule_large_in_every_list_is_checked_within_bounds() {
        // 2 000 × 2 000 × 2 000 = 8e9 parts: a 50 KiB role an attacker may write
        let huge = rule(json!({
            "apiGroups": many("g", 2000),
            "resources": many("r", 2000),
            "verbs": many("v", 2000),
        }));
        let little = [rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let missing = uncovered(&little, std::slice::from_ref(&huge));
        assert_eq!(missing.len(), MAX_MISSING, "the report is bounded");
        assert!(missing.iter().all(|r| r.size() == 3), "broken down");
        let message = escalation_message("mallory", &[], &missing);
        assert!(message.lines().count() <= MAX_MISSING + 1);

        // who holds everything is not made to break it down
        let star = [rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        assert!(uncovered(&star, std::slice::from_ref(&huge)).is_empty());

        // held in two halves (no one rule covers it whole): the work bound is met
        // and the rule is reported whole rather than broken down for ever
        let verbs = many("v", 2000);
        let half = |vs: &[Value]| {
            rule(json!({"apiGroups": many("g", 2000), "resources": many("r", 2000), "verbs": vs}))
        };
        let halves = [half(&verbs[..1000]), half(&verbs[1000..])];
        assert_eq!(
            uncovered(&halves, std::slice::from_ref(&huge)),
            vec![huge.clone()]
        );
        // the same split on a small rule is covered, part by part
        let small =
            rule(json!({"apiGroups": ["g0"], "resources": ["r0"], "verbs": ["v0", "v1999"]}));
        assert!(uncovered(&halves, &[small]).is_empty());

        // long lists on both sides compare in linear time
        let wide =
            |n| rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": many("r", n)}));
        assert!(uncovered(&[wide(100_000)], &[wide(100_000)]).is_empty());
        let urls = |n| rule(json!({"verbs": ["get"], "nonResourceURLs": many("/u", n)}));
        assert!(uncovered(&[urls(100_000)], &[urls(100_000)]).is_empty());
    }
}
