//! The default policy and how it is kept (upstream's bootstrap policy and
//! `k8s.io/component-helpers/auth/rbac/reconciliation`, union mode), and the
//! aggregation of ClusterRoles (upstream's `clusterroleaggregation` controller): what
//! to write, computed from what exists, without I/O.

use super::{Rule, uncovered};
use crate::api::selector::LabelSelector;
use serde_json::{Map, Value, json};

/// The annotation that says whether a default object may be reconciled: only the exact
/// value `"false"` protects it.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The default policy's objects (ClusterRoles, ClusterRoleBindings, Roles,
/// RoleBindings, in that order), each with the autoupdate annotation.
pub fn policy() -> Result<Vec<Value>, PolicyError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(include_str!("policy.yaml"))
        .map_err(|e| PolicyError(e.to_string()))?;
    Ok(docs
        .into_iter()
        .filter(|d| d.is_object())
        .map(|mut d| {
            d["metadata"]["annotations"] = json!({AUTOUPDATE: "true"});
            d
        })
        .collect())
}

/// The embedded policy does not parse (a build defect, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("the default RBAC policy does not parse: {0}")]
pub struct PolicyError(String);

/// What reconciling one object needs done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// It is as it should be.
    None,
    /// It does not exist.
    Create,
    /// It exists and lacks something (written with its resourceVersion).
    Update,
    /// A binding whose roleRef differs: deleted and created again (roleRef is fixed).
    Recreate,
}

/// The outcome of reconciling one object.
#[derive(Clone, Debug)]
pub struct Reconciled {
    /// The object to write (for `None`, the existing one).
    pub object: Value,
    /// What to do with it.
    pub operation: Operation,
    /// The existing object says `autoupdate: "false"`: nothing is written.
    pub protected: bool,
    /// The rules added (broken down, one verb each), for the log.
    pub missing_rules: Vec<Rule>,
    /// The subjects added, for the log.
    pub missing_subjects: Vec<Value>,
}

fn protected(existing: &Value) -> bool {
    existing["metadata"]["annotations"][AUTOUPDATE] == "false"
}

/// `expected`'s entries under `existing`'s (the existing value wins a conflict).
fn merged(expected: &Value, existing: &Value) -> Option<Value> {
    let mut out: Map<String, Value> = expected.as_object().cloned().unwrap_or_default();
    for (k, v) in existing.as_object().into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// Merges labels and annotations into `object`; whether that changed anything.
fn merge_metadata(object: &mut Value, expected: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let current = object["metadata"][field].clone();
        if let Some(m) = merged(&expected["metadata"][field], &current) {
            if m != current {
                object["metadata"][field] = m;
                changed = true;
            }
        }
    }
    changed
}

fn unchanged(existing: &Value) -> Reconciled {
    Reconciled {
        object: existing.clone(),
        operation: Operation::None,
        protected: false,
        missing_rules: Vec::new(),
        missing_subjects: Vec::new(),
    }
}

/// An existing object reconciled into `object`: an update if anything `changed`.
fn updated(
    existing: &Value,
    object: Value,
    changed: bool,
    missing_rules: Vec<Rule>,
    missing_subjects: Vec<Value>,
) -> Reconciled {
    Reconciled {
        operation: if changed {
            Operation::Update
        } else {
            Operation::None
        },
        protected: protected(existing),
        missing_rules,
        missing_subjects,
        object,
    }
}

fn created(expected: &Value) -> Reconciled {
    Reconciled {
        operation: Operation::Create,
        ..unchanged(expected)
    }
}

/// Upstream's `computeReconciledRole` in union mode: rules the existing role lacks
/// are appended broken down; labels, annotations and aggregation selectors it lacks
/// are added; nothing is removed (except an aggregationRule the default no longer
/// has).
pub fn role(existing: Option<&Value>, expected: &Value) -> Reconciled {
    let Some(existing) = existing else {
        return created(expected);
    };
    let mut object = existing.clone();
    let mut changed = merge_metadata(&mut object, expected);
    let missing = uncovered(&Rule::all_of(existing), &Rule::all_of(expected));
    if !missing.is_empty() {
        let rules = object["rules"].as_array().cloned().unwrap_or_default();
        object["rules"] = Value::Array(
            rules
                .into_iter()
                .chain(missing.iter().map(Rule::to_json))
                .collect(),
        );
        changed = true;
    }
    let want = &expected["aggregationRule"]["clusterRoleSelectors"];
    let have = &existing["aggregationRule"]["clusterRoleSelectors"];
    if want.is_null() && !existing["aggregationRule"].is_null() {
        object.as_object_mut().map(|o| o.remove("aggregationRule"));
        changed = true;
    } else if let Some(want) = want.as_array() {
        let mut selectors = have.as_array().cloned().unwrap_or_default();
        let before = selectors.len();
        for s in want {
            if !selectors.contains(s) {
                selectors.push(s.clone());
            }
        }
        if selectors.len() != before || existing["aggregationRule"].is_null() {
            object["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
            changed = true;
        }
    }
    updated(existing, object, changed, missing, Vec::new())
}

/// Upstream's `computeReconciledRoleBinding` in union mode: a different roleRef means
/// recreating the binding as the default; otherwise missing subjects are appended and
/// labels and annotations merged.
pub fn binding(existing: Option<&Value>, expected: &Value) -> Reconciled {
    let Some(existing) = existing else {
        return created(expected);
    };
    if existing["roleRef"] != expected["roleRef"] {
        return Reconciled {
            operation: Operation::Recreate,
            protected: protected(existing),
            ..unchanged(expected)
        };
    }
    let mut object = existing.clone();
    let mut changed = merge_metadata(&mut object, expected);
    let mut subjects = existing["subjects"].as_array().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for s in expected["subjects"].as_array().into_iter().flatten() {
        if !subjects.iter().any(|have| same_subject(have, s)) {
            subjects.push(s.clone());
            missing.push(s.clone());
        }
    }
    if !missing.is_empty() {
        object["subjects"] = Value::Array(subjects);
        changed = true;
    }
    updated(existing, object, changed, Vec::new(), missing)
}

/// Subjects are equal when kind, apiGroup, name and namespace are (absent = "").
fn same_subject(a: &Value, b: &Value) -> bool {
    ["kind", "apiGroup", "name", "namespace"]
        .iter()
        .all(|f| a[f].as_str().unwrap_or("") == b[f].as_str().unwrap_or(""))
}

/// The rules an aggregated ClusterRole should hold (upstream's aggregation
/// controller): for each selector in order, the matching ClusterRoles by name (not
/// itself), each rule once. `None` when the role is not aggregated, or already holds
/// exactly these rules.
pub fn aggregate(role: &Value, all: &[&Value]) -> Option<Vec<Value>> {
    let selectors = role["aggregationRule"]["clusterRoleSelectors"].as_array()?;
    let name = role["metadata"]["name"].as_str().unwrap_or("");
    let mut sorted: Vec<&Value> = all.to_vec();
    sorted.sort_by_key(|r| r["metadata"]["name"].as_str().unwrap_or(""));
    let mut rules: Vec<Rule> = Vec::new();
    for selector in selectors {
        // an invalid selector selects nothing (upstream logs and skips it)
        let Ok(selector) = LabelSelector::from_object(selector) else {
            continue;
        };
        for other in &sorted {
            if other["metadata"]["name"].as_str() == Some(name)
                || !selector.matches(other["metadata"]["labels"].as_object())
            {
                continue;
            }
            for rule in Rule::all_of(other) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    (Rule::all_of(role) != rules).then(|| rules.iter().map(Rule::to_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(policy: &'a [Value], kind: &str, name: &str) -> &'a Value {
        policy
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in the policy"))
    }

    #[test]
    fn the_policy_holds_upstreams_defaults() {
        let policy = policy().expect("parses");
        assert!(policy.len() > 130, "{}", policy.len());
        for o in &policy {
            assert_eq!(o["metadata"]["annotations"][AUTOUPDATE], "true");
            assert_eq!(
                o["metadata"]["labels"]["kubernetes.io/bootstrapping"],
                "rbac-defaults"
            );
        }
        let admin = named(&policy, "ClusterRole", "cluster-admin");
        assert_eq!(
            Rule::all_of(admin)[0].compact_string(),
            r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#
        );
        let viewer = named(&policy, "ClusterRoleBinding", "system:public-info-viewer");
        let groups: Vec<&str> = viewer["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(groups, ["system:authenticated", "system:unauthenticated"]);
        for name in [
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:node",
            "system:node-proxier",
            "system:auth-delegator",
            "system:monitoring",
            "system:service-account-issuer-discovery",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:controller:replicaset-controller",
        ] {
            named(&policy, "ClusterRole", name);
        }
    }

    #[test]
    fn reconciling_adds_what_is_missing_and_takes_nothing_away() {
        let expected = json!({"metadata": {"name": "r", "labels": {"a": "1"}, "annotations": {AUTOUPDATE: "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
        assert_eq!(role(None, &expected).operation, Operation::Create);
        // an edited copy: an extra rule, a changed label, one verb gone
        let existing = json!({"metadata": {"name": "r", "labels": {"a": "2"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        let r = role(Some(&existing), &expected);
        assert_eq!(r.operation, Operation::Update);
        assert!(!r.protected);
        assert_eq!(
            r.object["metadata"]["labels"]["a"], "2",
            "the existing value wins"
        );
        assert_eq!(r.object["metadata"]["annotations"][AUTOUPDATE], "true");
        let rules = r.object["rules"].as_array().expect("rules");
        assert_eq!(
            rules.len(),
            3,
            "the extra rule stays, the missing verb is added"
        );
        assert_eq!(
            rules[2],
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})
        );
        // reconciled again: nothing to do
        assert_eq!(role(Some(&r.object), &expected).operation, Operation::None);
        // protected: computed, flagged, not to be written
        let mut frozen = existing.clone();
        frozen["metadata"]["annotations"] = json!({AUTOUPDATE: "false"});
        assert!(role(Some(&frozen), &expected).protected);
    }

    #[test]
    fn bindings_gain_subjects_and_are_recreated_for_another_role() {
        let expected = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "g"}]});
        let mut existing = expected.clone();
        existing["subjects"] =
            json!([{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]);
        let r = binding(Some(&existing), &expected);
        assert_eq!(r.operation, Operation::Update);
        assert_eq!(r.object["subjects"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            binding(Some(&r.object), &expected).operation,
            Operation::None
        );
        existing["roleRef"]["name"] = json!("edit");
        let r = binding(Some(&existing), &expected);
        assert_eq!(r.operation, Operation::Recreate);
        assert_eq!(r.object, expected);
    }

    #[test]
    fn aggregation_follows_selectors_in_order_then_names_once_each() {
        let part = |name: &str, label: &str, resource: &str| {
            json!({"metadata": {"name": name, "labels": {label: "true"}},
                   "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]})
        };
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"to-view": "true"}}, {"matchLabels": {"extra": "true"}}]}});
        let all = [
            part("b", "to-view", "pods"),
            part("a", "to-view", "services"),
            part("c", "extra", "pods"),
            part("d", "unrelated", "secrets"),
            view.clone(),
        ];
        let refs: Vec<&Value> = all.iter().collect();
        let rules = aggregate(&view, &refs).expect("rules to write");
        let resources: Vec<&str> = rules
            .iter()
            .filter_map(|r| r["resources"][0].as_str())
            .collect();
        assert_eq!(resources, ["services", "pods"], "by name, each rule once");
        let mut done = view.clone();
        done["rules"] = Value::Array(rules);
        assert_eq!(aggregate(&done, &refs), None, "nothing to write");
        assert_eq!(aggregate(&all[0], &refs), None, "not aggregated");
    }
}
