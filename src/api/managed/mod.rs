//! Field ownership (`metadata.managedFields`) and server-side apply, as upstream's
//! field manager does it:
//!
//! - Every create, update and patch records the fields it set or changed under its
//!   manager (operation `Update`), and takes them away from other managers.
//! - An apply (operation `Apply`) merges the applied configuration into the live
//!   object, removes fields the same manager applied last time but no longer applies
//!   (unless someone else owns them), and refuses (409) to change a field another
//!   manager owns unless forced, which moves the field to the applier.
//!
//! Which lists are keyed, sets or atomic comes from `merge_keys.rs`.

mod walk;

pub use walk::fields_of;

use super::fieldset::{Element, FieldSet, path_string};
use serde_json::{Map, Value, json};
use walk::{Changes, compare, merge, remove_items};

/// Whether a write applies a configuration or updates an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes, and through which path.
#[derive(Clone, Debug)]
pub struct Actor {
    pub manager: String,
    pub operation: Operation,
    /// `""` for the main resource, else `status` or `scale`.
    pub subresource: String,
    /// The group/version the request used, e.g. `apps/v1`.
    pub api_version: String,
}

/// Which part of the object a write may own: the main resource of a kind with a
/// status subresource does not own `status`, and `status` writes own only it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    NoStatus,
    StatusOnly,
}

/// One field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The manager as upstream prints it: `"kubectl"`, or `"x" using apps/v1 at <time>`
    /// for updaters.
    pub manager: String,
    pub path: String,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// Upstream's manager identity: appliers are the same whatever version they use.
    fn same_actor(&self, a: &Actor) -> bool {
        self.manager == a.manager
            && self.operation == a.operation.as_str()
            && self.subresource == a.subresource
            && (a.operation == Operation::Apply || self.api_version == a.api_version)
    }

    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == "Update" {
            s = match &self.time {
                Some(t) => format!("{s} using {} at {t}", self.api_version),
                None => format!("{s} using {}", self.api_version),
            };
        }
        s
    }

    fn decode(v: &Value) -> Result<Entry, EntryError> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let operation = text("operation");
        if operation != "Apply" && operation != "Update" {
            return Err(EntryError::Operation(operation));
        }
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f)?,
            None => FieldSet::default(),
        };
        Ok(Entry {
            manager: text("manager"),
            operation,
            api_version: text("apiVersion"),
            subresource: text("subresource"),
            time: v.get("time").and_then(Value::as_str).map(String::from),
            set,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// Why a managedFields entry cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// An operation other than Apply and Update.
    #[error("operation {0:?} must be `Apply` or `Update`")]
    Operation(String),
    /// Its fieldsV1.
    #[error(transparent)]
    Fields(#[from] crate::api::fieldset::FieldSetError),
}

/// The entries of `obj`, or `None` if it has none or they cannot be read.
fn entries_of(obj: &Value) -> Option<Vec<Entry>> {
    let list = obj.pointer("/metadata/managedFields")?.as_array()?;
    if list.is_empty() {
        return None;
    }
    list.iter()
        .map(Entry::decode)
        .collect::<Result<_, _>>()
        .ok()
}

/// Writes `entries` into `obj` in upstream's order (appliers first, then by time).
fn store_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::encode).collect()),
        );
    }
}

/// Removes what no write owns (upstream's strip-meta and reset fields).
fn strip(set: &mut FieldSet, scope: Scope) {
    for f in ["apiVersion", "kind"] {
        set.children.remove(&Element::Field(f.into()));
    }
    if let Some(meta) = set.children.get_mut(&Element::Field("metadata".into())) {
        meta.member = false;
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.children.remove(&Element::Field(f.into()));
        }
    }
    let status = Element::Field("status".into());
    match scope {
        Scope::All => {}
        Scope::NoStatus => {
            set.children.remove(&status);
        }
        Scope::StatusOnly => set.children.retain(|e, _| *e == status),
    }
    set.member = false;
    set.prune_empty();
}

fn changes(old: Option<&Value>, new: &Value, scope: Scope) -> Changes {
    let mut ch = Changes::default();
    compare(old, Some(new), "", false, &mut Vec::new(), &mut ch);
    strip(&mut ch.added, scope);
    strip(&mut ch.modified, scope);
    strip(&mut ch.removed, scope);
    ch
}

/// Records an update (create, PUT, patch, status or scale write) in `new`'s
/// `managedFields`. `old` is the live object (`None` on create). Entries the client
/// sent in `new` are the starting point if they can be read, else `old`'s are.
pub fn track_update(old: Option<&Value>, new: &mut Value, actor: &Actor, scope: Scope, now: &str) {
    let mut entries = entries_of(new)
        .or_else(|| old.and_then(entries_of))
        .unwrap_or_default();
    let ch = changes(old, new, scope);
    let mut changed = ch.added.clone();
    changed.union_with(&ch.modified);
    for e in entries.iter_mut().filter(|e| !e.same_actor(actor)) {
        e.set = e.set.difference(&changed).difference(&ch.removed);
    }
    let pos = match entries.iter().position(|e| e.same_actor(actor)) {
        Some(p) => p,
        None => {
            entries.push(Entry {
                manager: actor.manager.clone(),
                operation: actor.operation.as_str().into(),
                api_version: actor.api_version.clone(),
                subresource: actor.subresource.clone(),
                time: None,
                set: FieldSet::default(),
            });
            entries.len() - 1
        }
    };
    let mine = &mut entries[pos];
    let mut set = mine.set.difference(&ch.removed);
    set.union_with(&changed);
    set.prune_empty();
    if set != mine.set || mine.time.is_none() {
        mine.time = Some(now.to_string());
    }
    mine.set = set;
    mine.api_version = actor.api_version.clone();
    store_entries(new, entries);
}

/// Applies `config` for `actor` to `live` (`None`: the object does not exist yet).
/// Returns the object to write, with its `managedFields`, or the conflicts when
/// another manager owns a field the configuration changes and `force` is not set.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    actor: &Actor,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.and_then(entries_of).unwrap_or_default();
    let mut applied = fields_of(config);
    strip(&mut applied, scope);
    let last_entry = entries.iter().find(|e| e.same_actor(actor));
    let last = last_entry.map(|e| e.set.clone());
    let last_time = last_entry.and_then(|e| e.time.clone());
    let mut merged = match live {
        Some(l) => merge(l, config, ""),
        None => config.clone(),
    };
    // the applier's new set replaces its last one
    entries.retain(|e| !e.same_actor(actor));
    let mut owned = applied.clone();
    for e in &entries {
        owned.union_with(&e.set);
    }
    if let Some(last) = &last {
        let gone = last.difference(&owned);
        remove_items(&mut merged, &gone, Some(&owned), "", &[]);
    }
    let ch = changes(live, &merged, scope);
    let mut changed = ch.added.clone();
    changed.union_with(&ch.modified);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        let clash = e.set.intersection(&changed);
        if !clash.is_empty() {
            if !force {
                conflicts.extend(clash.paths().iter().map(|p| Conflict {
                    manager: e.printed(),
                    path: path_string(p),
                }));
            }
            e.set = e.set.difference(&clash);
        }
        e.set = e.set.difference(&ch.removed);
    }
    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
        return Err(conflicts);
    }
    // as upstream, the time moves only when the apply changed the object
    let without_fields = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        v
    };
    let noop = live.is_some_and(|l| without_fields(l) == without_fields(&merged));
    let time = match last_time {
        Some(t) if noop => t,
        _ => now.to_string(),
    };
    entries.push(Entry {
        manager: actor.manager.clone(),
        operation: "Apply".into(),
        api_version: actor.api_version.clone(),
        subresource: actor.subresource.clone(),
        time: Some(time),
        set: applied,
    });
    store_entries(&mut merged, entries);
    Ok(merged)
}

/// Upstream's message for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.path
        );
    }
    let mut lines = Vec::new();
    let mut last = None;
    for c in conflicts {
        if last != Some(&c.manager) {
            lines.push(format!("conflicts with {}:", c.manager));
            last = Some(&c.manager);
        }
        lines.push(format!("- {}", c.path));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(manager: &str, operation: Operation) -> Actor {
        Actor {
            manager: manager.into(),
            operation,
            subresource: String::new(),
            api_version: "apps/v1".into(),
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "web", "image": image, "ports": [{"containerPort": 80}]}
                ]}}
            }
        })
    }

    fn managers(obj: &Value) -> Vec<(String, String)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| {
                        (
                            e["manager"].as_str().unwrap().to_string(),
                            e["operation"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn applied_fields_are_keyed_as_upstream() {
        let fields = fields_of(&deployment(2, "nginx")).to_fields_v1();
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}
            }})
        );
        assert_eq!(
            fields["f:spec"]["f:selector"],
            json!({}),
            "selectors are atomic"
        );
        assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn apply_creates_then_conflicts_with_another_manager_until_forced() {
        let a = actor("kubectl", Operation::Apply);
        let created = apply(
            None,
            &deployment(2, "nginx"),
            &a,
            false,
            Scope::NoStatus,
            "t1",
        )
        .unwrap();
        assert_eq!(managers(&created), [("kubectl".into(), "Apply".into())]);
        // the same applier again with the same config: no conflict, nothing changes
        let again = apply(
            Some(&created),
            &deployment(2, "nginx"),
            &a,
            false,
            Scope::NoStatus,
            "t2",
        )
        .unwrap();
        assert_eq!(
            again, created,
            "an apply that changes nothing keeps even the time"
        );
        // another applier changing replicas conflicts
        let b = actor("other", Operation::Apply);
        let partial = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let err = apply(Some(&created), &partial, &b, false, Scope::NoStatus, "t3").unwrap_err();
        assert_eq!(
            err,
            [Conflict {
                manager: "\"kubectl\"".into(),
                path: ".spec.replicas".into()
            }]
        );
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
        );
        // the same value is shared, not a conflict
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
        let shared = apply(Some(&created), &same, &b, false, Scope::NoStatus, "t3").unwrap();
        assert_eq!(managers(&shared).len(), 2);
        // forced: the value changes and the field moves to the forcing applier
        let forced = apply(Some(&created), &partial, &b, true, Scope::NoStatus, "t4").unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let kubectl = &forced["metadata"]["managedFields"][0];
        assert_eq!(kubectl["manager"], "kubectl");
        assert!(kubectl["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert_eq!(forced["spec"]["template"], created["spec"]["template"]);
    }

    #[test]
    fn fields_an_applier_stops_applying_are_removed_unless_someone_else_owns_them() {
        let a = actor("kubectl", Operation::Apply);
        let mut cfg = deployment(2, "nginx");
        cfg["metadata"]["labels"]["tier"] = json!("front");
        cfg["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "busybox"}));
        let live = apply(None, &cfg, &a, false, Scope::NoStatus, "t1").unwrap();
        // someone labels the object by hand (an update)
        let mut edited = live.clone();
        edited["metadata"]["labels"]["owner"] = json!("ops");
        track_update(
            Some(&live),
            &mut edited,
            &actor("kubectl-label", Operation::Update),
            Scope::NoStatus,
            "t2",
        );
        assert_eq!(managers(&edited).len(), 2);
        // the applier drops its tier label and the side container
        let next = apply(
            Some(&edited),
            &deployment(2, "nginx"),
            &a,
            false,
            Scope::NoStatus,
            "t3",
        )
        .unwrap();
        assert_eq!(
            next["metadata"]["labels"],
            json!({"app": "web", "owner": "ops"})
        );
        let names: Vec<&str> = next["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web"]);
    }

    #[test]
    fn updates_take_changed_fields_from_appliers_and_later_applies_conflict() {
        let a = actor("kubectl", Operation::Apply);
        let live = apply(
            None,
            &deployment(2, "nginx"),
            &a,
            false,
            Scope::NoStatus,
            "t1",
        )
        .unwrap();
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(4);
        let scaler = Actor {
            subresource: "scale".into(),
            ..actor("kubectl-scale", Operation::Update)
        };
        track_update(
            Some(&live),
            &mut scaled,
            &scaler,
            Scope::NoStatus,
            "2026-01-01T00:00:00Z",
        );
        let entries = scaled["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["subresource"], "scale");
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        let err = apply(
            Some(&scaled),
            &deployment(3, "nginx"),
            &a,
            false,
            Scope::NoStatus,
            "t3",
        )
        .unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" with subresource \"scale\" using apps/v1 at 2026-01-01T00:00:00Z: .spec.replicas"
        );
        // an update that changes nothing adds no entry; status is never owned here
        let mut same = scaled.clone();
        same["status"] = json!({"replicas": 4});
        track_update(
            Some(&scaled),
            &mut same,
            &actor("kubectl-edit", Operation::Update),
            Scope::NoStatus,
            "t4",
        );
        assert_eq!(managers(&same).len(), 2);
    }

    #[test]
    fn sets_and_client_written_managed_fields() {
        let a = actor("kubectl", Operation::Update);
        let mut new = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}});
        track_update(None, &mut new, &a, Scope::All, "t");
        assert_eq!(
            new["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}}})
        );
        let mut next = new.clone();
        next["metadata"]["finalizers"] = json!(["b"]);
        track_update(Some(&new), &mut next, &a, Scope::All, "t");
        assert_eq!(
            next["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}})
        );
        // a client that rewrites managedFields (kubectl's migration to apply) is obeyed
        let mut migrated = next.clone();
        migrated["metadata"]["managedFields"] = json!([{"manager": "mine", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}}}]);
        track_update(Some(&next), &mut migrated, &a, Scope::All, "t");
        assert_eq!(managers(&migrated), [("mine".into(), "Apply".into())]);
    }
}
