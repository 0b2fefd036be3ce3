//! RBAC's escalation prevention (upstream's `policybased` role and binding storage):
//! nobody grants what they do not hold.
//!
//! - A Role or ClusterRole whose rules change needs every new rule held by the caller
//!   in that scope, or the `escalate` verb on it; an aggregated ClusterRole needs
//!   `escalate` (its rules are computed).
//! - A RoleBinding or ClusterRoleBinding needs the caller to hold every rule of the
//!   role it names (in the binding's namespace, cluster-wide for a ClusterRoleBinding),
//!   or the `bind` verb on that role. Its `roleRef` cannot change.
//! - `system:masters` may do all of it (upstream's `EscalationAllowed`).

use super::{Attributes, Operation, Plugin};
use crate::api::rbac::{Request, RoleRef, Rule, escalation_message, uncovered};
use crate::apiserver::auth::UserInfo;
use crate::apiserver::rbac::{Caller, Rbac};
use crate::apiserver::status::ApiStatus;
use crate::store::Store;
use async_trait::async_trait;
use http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const GROUP: &str = "rbac.authorization.k8s.io";

/// The plugin, over the authorizer's index.
pub struct RbacEscalation {
    /// The roles and bindings callers hold.
    pub rbac: Arc<Rbac>,
}

impl RbacEscalation {
    /// Whether the caller's RBAC rules allow `verb` on the role `plural`/`name`.
    fn may(&self, user: &UserInfo, verb: &str, plural: &str, namespace: &str, name: &str) -> bool {
        let caller = Caller {
            name: &user.name,
            groups: &user.groups,
        };
        let request = Request {
            verb,
            resource_request: true,
            group: GROUP,
            resource: plural,
            subresource: "",
            name,
            path: "",
        };
        self.rbac.allows(&caller, namespace, &request)
    }

    fn escalates(
        &self,
        attrs: &Attributes<'_>,
        namespace: &str,
        wanted: &[Rule],
    ) -> Result<(), ApiStatus> {
        let caller = Caller {
            name: &attrs.user.name,
            groups: &attrs.user.groups,
        };
        let missing = uncovered(&self.rbac.rules_for(&caller, namespace), wanted);
        if missing.is_empty() {
            return Ok(());
        }
        Err(attrs.forbidden(escalation_message(
            &attrs.user.name,
            &attrs.user.groups,
            &missing,
        )))
    }

    fn role(&self, attrs: &Attributes<'_>, obj: &Value, namespace: &str) -> Result<(), ApiStatus> {
        let aggregated = obj["aggregationRule"].is_object();
        if let Some(old) = attrs.old {
            // only a change of what the role grants is checked
            if old["rules"] == obj["rules"] && old["aggregationRule"] == obj["aggregationRule"] {
                return Ok(());
            }
        }
        let plural = attrs.resource.plural;
        if self.may(attrs.user, "escalate", plural, namespace, attrs.name) {
            return Ok(());
        }
        if aggregated {
            return Err(
                attrs.forbidden("must have cluster-admin privileges to use the aggregationRule")
            );
        }
        self.escalates(attrs, namespace, &Rule::all_of(obj))
    }

    fn binding(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        namespace: &str,
    ) -> Result<(), ApiStatus> {
        let Some(role_ref) = RoleRef::of(obj) else {
            return Ok(()); // validation's to refuse
        };
        let (plural, role_name, rules) = match &role_ref {
            RoleRef::ClusterRole(n) => ("clusterroles", n, self.rbac.cluster_role(n)),
            RoleRef::Role(n) => ("roles", n, self.rbac.role(namespace, n)),
        };
        if self.may(attrs.user, "bind", plural, namespace, role_name) {
            return Ok(());
        }
        // a role that does not exist (yet) grants nothing
        let rules = rules.map(|r| r.to_vec()).unwrap_or_default();
        self.escalates(attrs, namespace, &rules)
    }
}

/// Upstream's refusal of a changed roleRef (422, with the field's cause).
fn role_ref_changed(attrs: &Attributes<'_>, role_ref: &Value) -> ApiStatus {
    let kind = attrs.resource.kind;
    let value = format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        role_ref["apiGroup"].as_str().unwrap_or(""),
        role_ref["kind"].as_str().unwrap_or(""),
        role_ref["name"].as_str().unwrap_or("")
    );
    let message = format!("Invalid value: {value}: cannot change roleRef");
    ApiStatus::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{kind}.{GROUP} {:?} is invalid: roleRef: {message}",
            attrs.name
        ),
    )
    .with_details(json!({"name": attrs.name, "group": GROUP, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "roleRef"}]}))
}

#[async_trait]
impl Plugin for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        _store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        if attrs.operation == Operation::Delete
            || !attrs.subresource.is_empty()
            || attrs.resource.group != GROUP
        {
            return Ok(());
        }
        let binding = matches!(
            attrs.resource.plural,
            "rolebindings" | "clusterrolebindings"
        );
        if let Some(old) = attrs.old.filter(|_| binding) {
            // immutable for everybody, as upstream's validation
            if old["roleRef"] != obj["roleRef"] {
                return Err(role_ref_changed(attrs, &obj["roleRef"]));
            }
        }
        if attrs.user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let namespace = attrs.namespace.unwrap_or("");
        match attrs.resource.plural {
            "roles" | "clusterroles" => self.role(attrs, obj, namespace),
            "rolebindings" | "clusterrolebindings" => self.binding(attrs, obj, namespace),
            _ => Ok(()),
        }
    }
}
