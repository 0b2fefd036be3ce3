//! Upstream's audit policy (`audit.k8s.io/v1` `Policy`, `--audit-policy-file`): the
//! first rule that matches a request decides how much of it is recorded (None,
//! Metadata, Request, RequestResponse) and which stages are left out.

use serde_json::Value;

/// How much of a request an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing: no event.
    None,
    /// Who, what, when, the answer's status; no bodies.
    Metadata,
    /// And the request's body.
    Request,
    /// And the response's body.
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "None" => Some(Level::None),
            "Metadata" => Some(Level::Metadata),
            "Request" => Some(Level::Request),
            "RequestResponse" => Some(Level::RequestResponse),
            _ => None,
        }
    }

    /// As events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// The stages of a request an event can be recorded at.
pub const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

/// One rule of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rule {
    level: Option<Level>,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    /// (group, resources, resourceNames)
    resources: Vec<(String, Vec<String>, Vec<String>)>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    omit_stages: Vec<String>,
    omit_managed_fields: Option<bool>,
}

/// A loaded policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<String>,
    omit_managed_fields: bool,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Not YAML, or not a Policy.
    #[error("{0}")]
    Format(String),
    /// A field's value, with its path.
    #[error("{field}: {message}")]
    Invalid {
        /// e.g. `rules[0].level`.
        field: String,
        /// upstream's words.
        message: String,
    },
}

/// What the policy decides for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How much to record.
    pub level: Level,
    /// Stages to leave out.
    pub omit_stages: Vec<String>,
    /// Whether `metadata.managedFields` is left out of recorded bodies.
    pub omit_managed_fields: bool,
}

/// What a rule is matched against.
pub struct Attributes<'a> {
    /// Who authenticated (none when authentication failed).
    pub user: Option<(&'a str, &'a [String])>,
    /// The request's verb.
    pub verb: &'a str,
    /// Resource requests: group, resource, subresource, namespace, name.
    pub resource: Option<(&'a str, &'a str, &'a str, &'a str, &'a str)>,
    /// The path (non-resource requests).
    pub path: &'a str,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn invalid(field: String, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field,
        message: message.into(),
    }
}

fn stages(v: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    let out = strings(v);
    for (i, s) in out.iter().enumerate() {
        if !STAGES.contains(&s.as_str()) {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!(
                    "Unsupported value: {s:?}: supported values: {}",
                    quoted(&STAGES)
                ),
            ));
        }
    }
    Ok(out)
}

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Policy {
    /// A policy from its file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc: Value =
            serde_saphyr::from_str(text).map_err(|e| PolicyError::Format(e.to_string()))?;
        if doc["apiVersion"] != "audit.k8s.io/v1" || doc["kind"] != "Policy" {
            return Err(PolicyError::Format(format!(
                "unknown group version field {:?} in policy (want apiVersion audit.k8s.io/v1, kind Policy)",
                doc["apiVersion"].as_str().unwrap_or("")
            )));
        }
        let mut policy = Policy {
            omit_stages: stages(&doc["omitStages"], "omitStages")?,
            omit_managed_fields: doc["omitManagedFields"] == true,
            rules: Vec::new(),
        };
        for (i, r) in doc["rules"].as_array().into_iter().flatten().enumerate() {
            policy.rules.push(rule(r, i)?);
        }
        if policy.rules.is_empty() {
            return Err(PolicyError::Format(
                "loaded illegal policy with 0 rules".into(),
            ));
        }
        Ok(policy)
    }

    /// The first matching rule's decision (no match: `None`, nothing recorded).
    pub fn decide(&self, a: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(a)) {
            Some(r) => {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().cloned());
                Decision {
                    level: r.level.unwrap_or(Level::None),
                    omit_stages: omit,
                    omit_managed_fields: r.omit_managed_fields.unwrap_or(self.omit_managed_fields),
                }
            }
            None => Decision {
                level: Level::None,
                omit_stages: Vec::new(),
                omit_managed_fields: false,
            },
        }
    }
}

fn rule(r: &Value, i: usize) -> Result<Rule, PolicyError> {
    let field = |f: &str| format!("rules[{i}].{f}");
    let level = r["level"].as_str().unwrap_or("");
    let level = Level::parse(level).ok_or_else(|| {
        invalid(
            field("level"),
            format!(
                "Unsupported value: {level:?}: supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\""
            ),
        )
    })?;
    let resources: Vec<(String, Vec<String>, Vec<String>)> = r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["group"].as_str().unwrap_or("").to_string(),
                strings(&g["resources"]),
                strings(&g["resourceNames"]),
            )
        })
        .collect();
    let urls = strings(&r["nonResourceURLs"]);
    let namespaces = strings(&r["namespaces"]);
    if !urls.is_empty() && (!resources.is_empty() || !namespaces.is_empty()) {
        return Err(invalid(
            field("nonResourceURLs"),
            "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
        ));
    }
    for (j, u) in urls.iter().enumerate() {
        if u.trim_end_matches('*').contains('*') {
            return Err(invalid(
                format!("{}[{j}]", field("nonResourceURLs")),
                format!("Invalid value: {u:?}: non-resource URL rules may only use '*' at the end"),
            ));
        }
    }
    Ok(Rule {
        level: Some(level),
        users: strings(&r["users"]),
        user_groups: strings(&r["userGroups"]),
        verbs: strings(&r["verbs"]),
        resources,
        namespaces,
        non_resource_urls: urls,
        omit_stages: stages(&r["omitStages"], &field("omitStages"))?,
        omit_managed_fields: r["omitManagedFields"].as_bool(),
    })
}

impl Rule {
    fn matches(&self, a: &Attributes) -> bool {
        let listed = |list: &[String], s: &str| list.is_empty() || list.iter().any(|x| x == s);
        if !self.users.is_empty() && !a.user.is_some_and(|(name, _)| listed(&self.users, name)) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !a
                .user
                .is_some_and(|(_, groups)| groups.iter().any(|g| self.user_groups.contains(g)))
        {
            return false;
        }
        if !listed(&self.verbs, a.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            let Some((group, resource, sub, ns, name)) = a.resource else {
                return false;
            };
            if !listed(&self.namespaces, ns) {
                return false;
            }
            return self.resources.is_empty()
                || self.resources.iter().any(|(g, rs, names)| {
                    g == group
                        && (rs.is_empty()
                            || rs.iter().any(|r| {
                                resource_matches(r, resource, sub)
                                    && (names.is_empty() || names.iter().any(|n| n == name))
                            }))
                });
        }
        if !self.non_resource_urls.is_empty() {
            return a.resource.is_none()
                && self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == a.path
                        || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                });
        }
        true
    }
}

/// `pods`, `pods/log`, `*`, `*/log`, `pods/*` (which, as upstream codes it, also
/// matches `pods` itself).
fn resource_matches(rule: &str, resource: &str, sub: &str) -> bool {
    if rule == "*" {
        return true;
    }
    let full = if sub.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{sub}")
    };
    if rule == full {
        return true;
    }
    if let Some(s) = rule.strip_prefix("*/") {
        return s == sub;
    }
    rule.strip_suffix("/*").is_some_and(|r| r == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:kube-proxy"]
  verbs: ["watch"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["pods/log", "secrets"]
    resourceNames: ["top"]
- level: Request
  namespaces: ["kube-system"]
  resources:
  - group: "apps"
    resources: ["deployments/*"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: Metadata
  omitStages: ["ResponseStarted"]
"#;

    fn res<'a>(
        group: &'a str,
        r: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Option<(&'a str, &'a str, &'a str, &'a str, &'a str)> {
        Some((group, r, sub, ns, name))
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::parse(POLICY).expect("loads");
        let groups = ["system:authenticated".to_string()];
        let admin = Some(("admin", &groups[..]));
        let decide = |verb, resource, path| {
            p.decide(&Attributes {
                user: admin,
                verb,
                resource,
                path,
            })
            .level
        };
        assert_eq!(
            decide("get", res("", "pods", "log", "default", "top"), ""),
            Level::RequestResponse
        );
        assert_eq!(
            decide("get", res("", "pods", "log", "default", "other"), ""),
            Level::Metadata
        );
        assert_eq!(
            decide("get", res("", "pods", "", "default", "top"), ""),
            Level::Metadata,
            "pods is not pods/log"
        );
        assert_eq!(
            decide(
                "update",
                res("apps", "deployments", "scale", "kube-system", "d"),
                ""
            ),
            Level::Request
        );
        assert_eq!(
            decide(
                "update",
                res("apps", "deployments", "", "kube-system", "d"),
                ""
            ),
            Level::Request,
            "x/* matches x too"
        );
        assert_eq!(
            decide("update", res("apps", "deployments", "", "default", "d"), ""),
            Level::Metadata
        );
        assert_eq!(decide("get", None, "/healthz/etcd"), Level::None);
        assert_eq!(decide("get", None, "/version"), Level::None);
        assert_eq!(decide("get", None, "/versions"), Level::Metadata);
        let proxy = p.decide(&Attributes {
            user: Some(("system:kube-proxy", &groups[..])),
            verb: "watch",
            resource: res("", "services", "", "", ""),
            path: "",
        });
        assert_eq!(proxy.level, Level::None);
        // failed authentication: rules naming users do not match
        let anonymous = p.decide(&Attributes {
            user: None,
            verb: "list",
            resource: res("", "pods", "", "", ""),
            path: "",
        });
        assert_eq!(anonymous.level, Level::Metadata);
        assert_eq!(
            anonymous.omit_stages,
            ["RequestReceived", "ResponseStarted"]
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |rules: &str| {
            Policy::parse(&format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"
            ))
        };
        assert!(
            matches!(bad("- level: Everything"), Err(PolicyError::Invalid { field, .. }) if field == "rules[0].level")
        );
        assert!(bad("- level: None\n  omitStages: [Later]").is_err());
        assert!(bad("- level: None\n  nonResourceURLs: ['/a*b']").is_err());
        assert!(bad("- level: None\n  namespaces: [a]\n  nonResourceURLs: ['/a']").is_err());
        assert_eq!(
            Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []")
                .expect_err("no rules")
                .to_string(),
            "loaded illegal policy with 0 rules"
        );
        assert!(
            Policy::parse("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]")
                .is_err()
        );
    }
}
