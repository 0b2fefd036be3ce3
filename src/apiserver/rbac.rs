//! The RBAC authorizer's index: every Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding in memory, kept current by datastore watches, so a decision reads
//! no datastore. Bindings are indexed by subject (user or group, service accounts as
//! their user names), so a decision looks only at the bindings naming the caller,
//! whatever their total number. The rule evaluation itself is `api::rbac`.

use crate::api::rbac::{Request, RoleRef, Rule, Subject, rule_allows, subjects};
use crate::api::registry::{self, Resource};
use crate::apiserver::resources::object::prefix;
use crate::store::Store;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// A binding, reduced to what decisions read.
struct Binding {
    role: RoleRef,
    subjects: Vec<Subject>,
}

/// The bindings of one scope (the cluster, or one namespace), indexed by subject.
#[derive(Default)]
struct Scope {
    bindings: HashMap<String, Binding>,
    /// subject → names of the bindings naming it
    by_subject: HashMap<Subject, BTreeSet<String>>,
}

impl Scope {
    fn remove(&mut self, name: &str) {
        let Some(old) = self.bindings.remove(name) else {
            return;
        };
        for s in old.subjects {
            if let Some(set) = self.by_subject.get_mut(&s) {
                set.remove(name);
                if set.is_empty() {
                    self.by_subject.remove(&s);
                }
            }
        }
    }

    fn insert(&mut self, name: String, binding: Binding) {
        self.remove(&name);
        for s in &binding.subjects {
            self.by_subject
                .entry(s.clone())
                .or_default()
                .insert(name.clone());
        }
        self.bindings.insert(name, binding);
    }

    /// The roles the bindings naming any of `subjects` refer to.
    fn roles_for<'a>(&'a self, subjects: &'a [Subject]) -> impl Iterator<Item = &'a RoleRef> {
        subjects
            .iter()
            .filter_map(|s| self.by_subject.get(s))
            .flatten()
            .filter_map(|b| self.bindings.get(b))
            .map(|b| &b.role)
    }
}

#[derive(Default)]
struct Index {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    /// namespace → name → rules
    roles: HashMap<String, HashMap<String, Arc<Vec<Rule>>>>,
    /// the ClusterRoleBindings
    cluster: Scope,
    /// namespace → its RoleBindings
    namespaces: HashMap<String, Scope>,
}

/// Which of the four kinds a change is about.
#[derive(Clone, Copy, Debug)]
enum Kind {
    ClusterRole,
    Role,
    ClusterRoleBinding,
    RoleBinding,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::ClusterRole,
        Kind::Role,
        Kind::ClusterRoleBinding,
        Kind::RoleBinding,
    ];

    fn resource(self) -> &'static Resource {
        match self {
            Kind::ClusterRole => &registry::CLUSTERROLES,
            Kind::Role => &registry::ROLES,
            Kind::ClusterRoleBinding => &registry::CLUSTERROLEBINDINGS,
            Kind::RoleBinding => &registry::ROLEBINDINGS,
        }
    }
}

/// The caller, as RBAC matches it.
pub struct Caller<'a> {
    /// The user name.
    pub name: &'a str,
    /// The groups.
    pub groups: &'a [String],
}

impl Caller<'_> {
    fn subjects(&self) -> Vec<Subject> {
        std::iter::once(Subject::User(self.name.to_string()))
            .chain(self.groups.iter().map(|g| Subject::Group(g.clone())))
            .collect()
    }
}

fn names(namespaced_key: &str) -> (String, String) {
    // a key's tail is `<namespace>/<name>` for namespaced kinds, `<name>` otherwise
    match namespaced_key.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), namespaced_key.to_string()),
    }
}

impl Index {
    /// Applies one object (`None`: deleted) named by its key tail.
    fn apply(&mut self, kind: Kind, tail: &str, obj: Option<&Value>) {
        let (ns, name) = names(tail);
        match kind {
            Kind::ClusterRole => match obj {
                Some(o) => {
                    self.cluster_roles.insert(name, Arc::new(Rule::all_of(o)));
                }
                None => {
                    self.cluster_roles.remove(&name);
                }
            },
            Kind::Role => match obj {
                Some(o) => {
                    let rules = Arc::new(Rule::all_of(o));
                    self.roles.entry(ns).or_default().insert(name, rules);
                }
                None => {
                    if let Some(roles) = self.roles.get_mut(&ns) {
                        roles.remove(&name);
                        if roles.is_empty() {
                            self.roles.remove(&ns);
                        }
                    }
                }
            },
            Kind::ClusterRoleBinding | Kind::RoleBinding => {
                let binding = obj.and_then(|o| {
                    Some(Binding {
                        role: RoleRef::of(o)?,
                        subjects: subjects(o, &ns),
                    })
                });
                if let Kind::ClusterRoleBinding = kind {
                    match binding {
                        Some(b) => self.cluster.insert(name, b),
                        None => self.cluster.remove(&name),
                    }
                    return;
                }
                match binding {
                    Some(b) => self.namespaces.entry(ns).or_default().insert(name, b),
                    None => {
                        if let Some(scope) = self.namespaces.get_mut(&ns) {
                            scope.remove(&name);
                            if scope.bindings.is_empty() {
                                self.namespaces.remove(&ns);
                            }
                        }
                    }
                }
            }
        }
    }

    fn reset(&mut self, kind: Kind) {
        match kind {
            Kind::ClusterRole => self.cluster_roles.clear(),
            Kind::Role => self.roles.clear(),
            Kind::ClusterRoleBinding => self.cluster = Scope::default(),
            Kind::RoleBinding => self.namespaces.clear(),
        }
    }

    /// Visits the rules `caller` holds in `namespace` (`""`: cluster-wide only) until
    /// `visit` says stop; as upstream's `VisitRulesFor`, cluster bindings first.
    fn visit(&self, caller: &Caller, namespace: &str, visit: &mut dyn FnMut(&Rule) -> bool) {
        let subjects = caller.subjects();
        // a ClusterRoleBinding may only name a ClusterRole
        let cluster = self.cluster.roles_for(&subjects).filter_map(|r| match r {
            RoleRef::ClusterRole(role) => self.cluster_roles.get(role),
            RoleRef::Role(_) => None,
        });
        let scope = self
            .namespaces
            .get(namespace)
            .filter(|_| !namespace.is_empty());
        let local = scope
            .into_iter()
            .flat_map(|s| s.roles_for(&subjects))
            .filter_map(|r| match r {
                RoleRef::ClusterRole(role) => self.cluster_roles.get(role),
                RoleRef::Role(role) => self.roles.get(namespace)?.get(role),
            });
        for rules in cluster.chain(local) {
            for r in rules.iter() {
                if !visit(r) {
                    return;
                }
            }
        }
    }
}

/// The RBAC authorizer's state, shared by every request.
#[derive(Default)]
pub struct Rbac {
    index: RwLock<Index>,
    /// Set once every kind's first list is in.
    ready: std::sync::atomic::AtomicBool,
    filled: tokio::sync::Notify,
}

impl Rbac {
    /// Waits until the index holds every role and binding (at most `limit`), so no
    /// request is refused for want of a binding not read yet.
    pub async fn filled(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + limit;
        while !self.ready.load(Ordering::Acquire) {
            let notified = self.filled.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    fn set_filled(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        self.filled.notify_waiters();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // every change under the lock is a whole insert or removal
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any rule `caller` holds in `namespace` allows `request`.
    pub fn allows(&self, caller: &Caller, namespace: &str, request: &Request) -> bool {
        let mut allowed = false;
        self.read().visit(caller, namespace, &mut |r| {
            allowed = rule_allows(r, request);
            !allowed
        });
        allowed
    }

    /// Every rule `caller` holds in `namespace` (escalation checks, rules reviews).
    pub fn rules_for(&self, caller: &Caller, namespace: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        self.read().visit(caller, namespace, &mut |r| {
            out.push(r.clone());
            true
        });
        out
    }

    /// The rules of the ClusterRole `name` (absent: none).
    pub fn cluster_role(&self, name: &str) -> Option<Arc<Vec<Rule>>> {
        self.read().cluster_roles.get(name).cloned()
    }

    /// The rules of the Role `namespace/name` (absent: none).
    pub fn role(&self, namespace: &str, name: &str) -> Option<Arc<Vec<Rule>>> {
        self.read().roles.get(namespace)?.get(name).cloned()
    }

    /// Loads a ClusterRole or Role, binding or cluster binding object directly (tests
    /// and benchmarks build an index without a datastore).
    pub fn insert(&self, object: &Value) {
        let kind = match object["kind"].as_str() {
            Some("ClusterRole") => Kind::ClusterRole,
            Some("Role") => Kind::Role,
            Some("ClusterRoleBinding") => Kind::ClusterRoleBinding,
            Some("RoleBinding") => Kind::RoleBinding,
            _ => return,
        };
        let m = &object["metadata"];
        let name = m["name"].as_str().unwrap_or("");
        let tail = match m["namespace"].as_str().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        self.write().apply(kind, &tail, Some(object));
    }
}

/// Keeps `rbac` current with the datastore until the store shuts down; it is filled
/// ([`Rbac::filled`]) once every kind's first list is in.
pub async fn follow(store: Arc<dyn Store>, rbac: Arc<Rbac>) {
    let [a, b, c, d] = Kind::ALL;
    let (synced, mut listed) = tokio::sync::mpsc::channel(4);
    let filled = rbac.clone();
    let all_in = async move {
        for _ in 0..4 {
            listed.recv().await;
        }
        filled.set_filled();
    };
    tokio::join!(
        all_in,
        follow_one(store.clone(), rbac.clone(), a, synced.clone()),
        follow_one(store.clone(), rbac.clone(), b, synced.clone()),
        follow_one(store.clone(), rbac.clone(), c, synced.clone()),
        follow_one(store, rbac, d, synced),
    );
}

/// The index as seen through one of the four kinds.
struct Part<'a>(&'a Rbac, Kind);

impl crate::apiserver::follow::View for Part<'_> {
    fn reset(&self) {
        self.0.write().reset(self.1);
    }

    fn apply(&self, tail: &str, object: Option<&Value>) {
        self.0.write().apply(self.1, tail, object);
    }

    fn replace(&self, objects: Vec<(String, Option<Value>)>) {
        let mut index = self.0.write();
        index.reset(self.1);
        for (tail, obj) in &objects {
            index.apply(self.1, tail, obj.as_ref());
        }
    }
}

async fn follow_one(
    store: Arc<dyn Store>,
    rbac: Arc<Rbac>,
    kind: Kind,
    synced: tokio::sync::mpsc::Sender<()>,
) {
    let view = Part(&rbac, kind);
    let prefix = prefix(kind.resource(), None);
    crate::apiserver::follow::follow(&*store, &prefix, "RBAC index", &view, Some(synced)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(resource: &'a str, group: &'a str) -> Request<'a> {
        Request {
            verb: "get",
            resource_request: true,
            group,
            resource,
            subresource: "",
            name: "x",
            path: "",
        }
    }

    #[test]
    fn bindings_grant_their_roles_to_their_subjects_only() {
        let rbac = Rbac::default();
        rbac.insert(&json!({"kind": "ClusterRole", "metadata": {"name": "view"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}));
        rbac.insert(
            &json!({"kind": "Role", "metadata": {"name": "deployer", "namespace": "team"},
            "rules": [{"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}]}),
        );
        rbac.insert(&json!({"kind": "RoleBinding", "metadata": {"name": "b1", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "ci"}]}));
        rbac.insert(
            &json!({"kind": "RoleBinding", "metadata": {"name": "b2", "namespace": "team"},
            "roleRef": {"kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "Group", "name": "devs"}]}),
        );
        let alice = Caller {
            name: "alice",
            groups: &["system:authenticated".into()],
        };
        let dev = Caller {
            name: "bob",
            groups: &["devs".into()],
        };
        let ci = Caller {
            name: "system:serviceaccount:team:ci",
            groups: &[],
        };
        // a RoleBinding to a ClusterRole grants it in its namespace only
        assert!(rbac.allows(&alice, "team", &get("pods", "")));
        assert!(!rbac.allows(&alice, "other", &get("pods", "")));
        assert!(!rbac.allows(&alice, "", &get("pods", "")));
        assert!(rbac.allows(&ci, "team", &get("pods", "")));
        assert!(!rbac.allows(&ci, "team", &get("deployments", "apps")));
        assert!(rbac.allows(&dev, "team", &get("deployments", "apps")));
        assert!(!rbac.allows(&dev, "team", &get("pods", "")));
        // a ClusterRoleBinding grants everywhere; deleting it takes it back
        rbac.insert(
            &json!({"kind": "ClusterRoleBinding", "metadata": {"name": "c"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "devs"}]}),
        );
        assert!(rbac.allows(&dev, "other", &get("pods", "")));
        assert!(rbac.allows(&dev, "", &get("pods", "")));
        rbac.write().apply(Kind::ClusterRoleBinding, "c", None);
        assert!(!rbac.allows(&dev, "other", &get("pods", "")));
        // a binding's subjects can change: the old ones lose the grant
        rbac.insert(
            &json!({"kind": "RoleBinding", "metadata": {"name": "b1", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "carol"}]}),
        );
        assert!(!rbac.allows(&alice, "team", &get("pods", "")));
        // a role's rules change in place; a missing role grants nothing
        rbac.insert(&json!({"kind": "ClusterRole", "metadata": {"name": "view"}, "rules": []}));
        let carol = Caller {
            name: "carol",
            groups: &[],
        };
        assert!(!rbac.allows(&carol, "team", &get("pods", "")));
        assert_eq!(rbac.rules_for(&dev, "team").len(), 1);
        // a ClusterRoleBinding naming a Role grants nothing
        rbac.insert(
            &json!({"kind": "ClusterRoleBinding", "metadata": {"name": "odd"},
            "roleRef": {"kind": "Role", "name": "deployer"},
            "subjects": [{"kind": "User", "name": "carol"}]}),
        );
        assert!(!rbac.allows(&carol, "team", &get("deployments", "apps")));
    }

    fn url(path: &str) -> Request<'_> {
        Request {
            verb: "get",
            resource_request: false,
            group: "",
            resource: "",
            subresource: "",
            name: "",
            path,
        }
    }

    fn verb<'a>(verb: &'a str, resource: &'a str, group: &'a str) -> Request<'a> {
        Request {
            verb,
            ..get(resource, group)
        }
    }

    /// The default policy with admin, edit and view aggregated, as the server holds it.
    fn defaults() -> Rbac {
        use crate::api::rbac::reconcile::{aggregate, policy};
        let mut objects = policy().expect("the policy");
        // aggregate until nothing changes (view, then edit, then admin)
        loop {
            let roles: Vec<Value> = objects
                .iter()
                .filter(|o| o["kind"] == "ClusterRole")
                .cloned()
                .collect();
            let mut changed = false;
            let refs: Vec<&Value> = roles.iter().collect();
            for o in objects.iter_mut().filter(|o| o["kind"] == "ClusterRole") {
                if let Some(rules) = aggregate(o, &refs) {
                    o["rules"] = Value::Array(rules);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let rbac = Rbac::default();
        for o in &objects {
            rbac.insert(o);
        }
        rbac
    }

    #[test]
    fn the_default_policy_grants_what_upstream_grants() {
        let rbac = defaults();
        let authenticated = ["system:authenticated".to_string()];
        let unauthenticated = ["system:unauthenticated".to_string()];
        let alice = Caller {
            name: "alice",
            groups: &authenticated,
        };
        let anonymous = Caller {
            name: "system:anonymous",
            groups: &unauthenticated,
        };
        for path in [
            "/api",
            "/apis/apps/v1",
            "/openapi/v2",
            "/version",
            "/healthz",
        ] {
            assert!(rbac.allows(&alice, "", &url(path)), "{path}");
        }
        for path in ["/version", "/healthz", "/livez", "/readyz"] {
            assert!(rbac.allows(&anonymous, "", &url(path)), "{path}");
        }
        assert!(!rbac.allows(&anonymous, "", &url("/api")));
        assert!(!rbac.allows(&alice, "", &url("/metrics")));
        let ask = |r| verb("create", r, "authorization.k8s.io");
        assert!(rbac.allows(&alice, "", &ask("selfsubjectaccessreviews")));
        assert!(rbac.allows(&alice, "", &ask("selfsubjectrulesreviews")));
        assert!(!rbac.allows(&anonymous, "", &ask("selfsubjectaccessreviews")));
        assert!(!rbac.allows(&alice, "default", &verb("list", "pods", "")));

        // skua's agents read what the overlay and network policies need, no more
        let agent = Caller {
            name: crate::api::users::AGENT_CONTROLLER_USER,
            groups: &authenticated,
        };
        assert!(rbac.allows(&agent, "", &verb("list", "pods", "")));
        assert!(rbac.allows(&agent, "", &verb("watch", "namespaces", "")));
        assert!(rbac.allows(
            &agent,
            "",
            &verb("list", "networkpolicies", "networking.k8s.io")
        ));
        assert!(!rbac.allows(&agent, "default", &verb("delete", "pods", "")));
        assert!(!rbac.allows(&agent, "default", &get("secrets", "")));

        // a namespace admin (admin aggregated from edit and view): everything usual in
        // its namespace, secrets included, nothing outside; view reads no secrets
        rbac.insert(
            &json!({"kind": "RoleBinding", "metadata": {"name": "a", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}]}),
        );
        rbac.insert(
            &json!({"kind": "RoleBinding", "metadata": {"name": "v", "namespace": "team"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "victor"}]}),
        );
        assert!(rbac.allows(&alice, "team", &verb("create", "deployments", "apps")));
        assert!(rbac.allows(
            &alice,
            "team",
            &verb("create", "rolebindings", "rbac.authorization.k8s.io")
        ));
        assert!(rbac.allows(&alice, "team", &get("secrets", "")));
        assert!(!rbac.allows(&alice, "other", &verb("create", "deployments", "apps")));
        assert!(!rbac.allows(&alice, "", &verb("list", "nodes", "")));
        let victor = Caller {
            name: "victor",
            groups: &authenticated,
        };
        assert!(rbac.allows(&victor, "team", &verb("list", "deployments", "apps")));
        assert!(!rbac.allows(&victor, "team", &get("secrets", "")));
        assert!(!rbac.allows(&victor, "team", &verb("delete", "pods", "")));
    }
}
