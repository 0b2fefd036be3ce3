//! The built-in resources: group, version, kind, plural, singular, scope, verbs, short
//! names, categories and subresources, as kube-apiserver v1.33 serves them. Discovery,
//! routing and storage all read this one table.

/// The verbs of an ordinary stored resource.
pub const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
const CRUD_NO_COLLECTION: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const CREATE: &[&str] = &["create"];
const STATUS: &[&str] = &["get", "patch", "update"];

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Debug)]
pub struct Subresource {
    /// The part after the slash: `status`, `scale`, `log`.
    pub name: &'static str,
    /// (group, version, kind) of what it returns.
    pub response: (&'static str, &'static str, &'static str),
    /// The verbs it serves.
    pub verbs: &'static [&'static str],
}

/// One resource of one group version.
#[derive(Debug)]
pub struct Resource {
    /// The API group: empty for the core group, else e.g. `apps`.
    pub group: &'static str,
    /// The version within the group, e.g. `v1`.
    pub version: &'static str,
    /// The kind of its objects, e.g. `Deployment`.
    pub kind: &'static str,
    /// The name in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// The lower-case singular name, e.g. `deployment`.
    pub singular: &'static str,
    /// Whether its objects live in a namespace (else cluster-scoped).
    pub namespaced: bool,
    /// The verbs it serves.
    pub verbs: &'static [&'static str],
    /// Abbreviations kubectl accepts, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Groupings such as `all` that kubectl expands.
    pub categories: &'static [&'static str],
    /// Its subresources, such as `status` and `scale`.
    pub subresources: &'static [Subresource],
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether a DELETE that removes an object answers with the object itself rather
    /// than a `Status` (upstream's `ReturnDeletedObject: true`).
    pub fn returns_deleted_object(&self) -> bool {
        RETURN_DELETED_OBJECT.contains(&(self.group, self.plural))
    }

    /// Whether objects of this kind are kept in the store (review kinds are not).
    pub fn is_stored(&self) -> bool {
        self.verbs.contains(&"get")
    }
}

/// (group, plural) of the resources whose registry sets `ReturnDeletedObject: true`
/// upstream (`pkg/registry/*/*/storage/storage.go`, v1.33).
const RETURN_DELETED_OBJECT: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("", "persistentvolumeclaims"),
    ("", "podtemplates"),
    ("", "resourcequotas"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "volumeattachments"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattributesclasses"),
];

const fn sub(
    name: &'static str,
    response: (&'static str, &'static str, &'static str),
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource {
        name,
        response,
        verbs,
    }
}

#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        verbs,
        short_names,
        categories,
        subresources,
    }
}

mod builtin;
pub use builtin::*;

/// Group versions in the order discovery lists them (kube-apiserver puts the most
/// used groups first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resources of one group version.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .copied()
        .filter(move |r| r.group == group && r.version == version)
}

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The preferred version of a built-in resource by group and plural (what clients
/// name), if there is one.
pub fn preferred(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.group == group && r.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_entries_are_the_tables_and_lookups_find_them() {
        assert!(std::ptr::eq(find("", "v1", "pods").unwrap(), &PODS));
        assert!(std::ptr::eq(
            preferred("autoscaling", "horizontalpodautoscalers").unwrap(),
            &HORIZONTALPODAUTOSCALERS
        ));
        assert_eq!(HORIZONTALPODAUTOSCALERS.version, "v2");
        assert_eq!(HORIZONTALPODAUTOSCALERS_V1.version, "v1");
        assert!(preferred("example.com", "widgets").is_none());
        assert!(find("", "v1", "nothings").is_none());
        // every entry of the table is one of the named statics, once
        for (i, r) in RESOURCES.iter().enumerate() {
            assert!(
                !RESOURCES[i + 1..].iter().any(|o| std::ptr::eq(*o, *r)),
                "{} listed twice",
                r.plural
            );
        }
    }

    #[test]
    fn the_table_is_consistent() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert_eq!(r.plural.to_ascii_lowercase(), r.plural);
            assert!(!r.singular.is_empty() && !r.kind.is_empty());
            for other in &RESOURCES[i + 1..] {
                assert!(
                    !(other.group == r.group
                        && other.version == r.version
                        && other.plural == r.plural),
                    "{} listed twice",
                    r.plural
                );
                // one resource served at several versions keeps its short names
                let same = other.group == r.group && other.plural == r.plural;
                for s in r.short_names {
                    assert!(
                        same || !other.short_names.contains(s),
                        "short name {s} used twice"
                    );
                }
            }
        }
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert!(find("", "v1", "tokenreviews").is_none());
        assert!(!find("", "v1", "bindings").unwrap().is_stored());
        assert!(group_versions().contains(&("apps", "v1")));
    }
}
