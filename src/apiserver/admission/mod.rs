//! The admission chain, as upstream's: every write that reaches a stored object —
//! create, update, patch, apply, delete, and the `status`, `scale`, `finalize`,
//! `binding` and `eviction` subresources — passes first through every plugin's
//! mutating phase, then (after the kind's strategy has prepared and validated the
//! object) through every plugin's validating phase. A plugin sees the operation, the
//! resource and subresource, the caller, the object and the old object, and refuses
//! with a `Status`. The built-in plugins run in upstream's order: NamespaceLifecycle,
//! ServiceAccount, NodeRestriction, PodSecurity, Priority, LimitRanger, ResourceQuota
//! (and RBAC's escalation checks). The admission webhooks plug in here.

mod limit_ranger;
mod namespace_lifecycle;
pub mod node_restriction;
pub mod notes;
pub mod pod_security;
mod priority;
mod rbac_escalation;
mod resource_quota;
pub mod service_account;

use crate::api::registry::Resource;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::status::{ApiStatus, qualified};
use crate::store::Store;
use async_trait::async_trait;
use http::StatusCode;
use serde_json::Value;

/// What a request does to an object (upstream's `admission.Operation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// As upstream names it (`CREATE`, `UPDATE`, `DELETE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// What a plugin is told about a request (upstream's `admission.Attributes`).
pub struct Attributes<'a> {
    pub operation: Operation,
    pub resource: &'a Resource,
    /// `""` for the resource itself, else `status`, `scale`, `binding`, …
    pub subresource: &'a str,
    pub namespace: Option<&'a str>,
    /// The object's name; on a create, what the client sent (its name or, if it
    /// has none yet, its `generateName`).
    pub name: &'a str,
    pub user: &'a UserInfo,
    /// The object as stored before an update or delete.
    pub old: Option<&'a Value>,
}

impl Attributes<'_> {
    /// Whether this is a request on `group`/`plural` itself (not a subresource).
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.subresource.is_empty()
            && self.resource.group == group
            && self.resource.plural == plural
    }

    /// Upstream's admission refusal: 403 `<resource> "<name>" is forbidden: <why>`.
    pub fn forbidden(&self, why: impl std::fmt::Display) -> ApiStatus {
        ApiStatus::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} {:?} is forbidden: {why}",
                qualified(self.resource.plural, self.resource.group),
                self.name
            ),
        )
    }
}

/// An admission plugin. Both phases default to admitting everything.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's name, as upstream's `--enable-admission-plugins` spells it.
    fn name(&self) -> &'static str;

    /// The mutating phase: may change `obj` (for a delete, the object as stored).
    async fn admit(
        &self,
        _attrs: &Attributes<'_>,
        _obj: &mut Value,
        _store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        Ok(())
    }

    /// The validating phase: may only refuse.
    async fn validate(
        &self,
        _attrs: &Attributes<'_>,
        _obj: &Value,
        _store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        Ok(())
    }
}

/// The plugins, in the order they run.
pub struct Chain {
    plugins: Vec<Box<dyn Plugin>>,
}

impl Chain {
    /// Upstream's default plugins that this server implements, in upstream's order.
    pub fn builtin() -> Chain {
        Chain {
            plugins: vec![
                Box::new(namespace_lifecycle::NamespaceLifecycle),
                Box::new(service_account::ServiceAccount),
                Box::new(node_restriction::NodeRestriction),
                Box::new(priority::Priority),
                Box::new(limit_ranger::LimitRanger),
                Box::new(resource_quota::ResourceQuota),
            ],
        }
    }

    /// The chain the API server runs: the built-in plugins with PodSecurity (after
    /// NodeRestriction, as upstream's order has it) over `pod_security`, and RBAC's
    /// escalation prevention over `rbac`.
    pub fn server(
        rbac: std::sync::Arc<crate::apiserver::rbac::Rbac>,
        pod_security: pod_security::PodSecurityConfig,
    ) -> Chain {
        let mut chain = Chain::builtin();
        let at = chain
            .plugins
            .iter()
            .position(|p| p.name() == "NodeRestriction")
            .map_or(chain.plugins.len(), |i| i + 1);
        chain.plugins.insert(
            at,
            Box::new(pod_security::PodSecurity {
                config: pod_security,
            }),
        );
        chain
            .plugins
            .push(Box::new(rbac_escalation::RbacEscalation { rbac }));
        chain
    }

    /// A chain of the given plugins, in order.
    pub fn new(plugins: Vec<Box<dyn Plugin>>) -> Chain {
        Chain { plugins }
    }

    /// The names of the plugins, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Runs every plugin's mutating phase.
    pub async fn admit(
        &self,
        attrs: &Attributes<'_>,
        obj: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        for p in &self.plugins {
            p.admit(attrs, obj, store).await?;
        }
        Ok(())
    }

    /// Runs every plugin's validating phase.
    pub async fn validate(
        &self,
        attrs: &Attributes<'_>,
        obj: &Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        for p in &self.plugins {
            p.validate(attrs, obj, store).await?;
        }
        Ok(())
    }

    /// Both phases, for writes whose object needs no preparation between them
    /// (updates inside the guaranteed-update loop, deletes, subresources).
    pub async fn run(
        &self,
        attrs: &Attributes<'_>,
        obj: &mut Value,
        store: &dyn Store,
    ) -> Result<(), ApiStatus> {
        self.admit(attrs, obj, store).await?;
        self.validate(attrs, obj, store).await
    }
}
