//! The live resource registry: the built-in resources (`api::registry`'s typed
//! constants, where a typo is a compile error) and the entries added while the server
//! runs (CustomResourceDefinitions and APIServices, from later issues). Discovery,
//! OpenAPI, routing, storage and metrics ask it on every request, so an entry added is
//! served at once and an entry removed is a 404 at once; an unknown resource is a 404,
//! never a panic.
//!
//! Entries live for the process (`&'static Resource`, as the built-ins, so storage,
//! watch caches and informers hold them without reference counting). Identical
//! definitions share one entry, so what a definition costs is bounded by the number of
//! distinct definitions ever served, not by how often they come and go.

use crate::api::registry::{self, CRUD, Resource, Subresource};
use std::sync::{Mutex, RwLock};

/// A resource to serve at run time (what a CustomResourceDefinition's `spec.names`,
/// `scope` and `subresources` say of one served version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// `subresources.status`: a `status` subresource.
    pub status: bool,
    /// `subresources.scale`: a `scale` subresource (autoscaling/v1 Scale).
    pub scale: bool,
}

/// Why a definition cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The group, version and plural of a built-in resource (or a built-in group).
    #[error("{0} is served by the API server itself")]
    BuiltIn(String),
    /// A name that is not what upstream allows.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Built-in entries and the ones added at run time (see the module documentation).
#[derive(Default)]
pub struct Registry {
    /// Served now, in the order they were added.
    added: RwLock<Vec<&'static Resource>>,
    /// Every entry ever made, so an identical definition reuses its entry.
    made: Mutex<Vec<&'static Resource>>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_all(v: &[String]) -> &'static [&'static str] {
    Box::leak(
        v.iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// Whether `r` is what `d` defines.
fn same(r: &Resource, d: &Definition) -> bool {
    let subs: Vec<&str> = r.subresources.iter().map(|s| s.name).collect();
    let wanted: Vec<&str> = [(d.status, "status"), (d.scale, "scale")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    r.group == d.group
        && r.version == d.version
        && r.kind == d.kind
        && r.plural == d.plural
        && r.singular == d.singular
        && r.namespaced == d.namespaced
        && r.short_names.iter().eq(d.short_names.iter())
        && r.categories.iter().eq(d.categories.iter())
        && subs == wanted
}

/// A DNS-1035 label, as upstream wants of plural and singular names.
fn label(field: &'static str, s: &str) -> Result<(), RegistryError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            field,
            message: format!(
                "{s:?}: a lowercase RFC 1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"
            ),
        })
    }
}

fn check(d: &Definition) -> Result<(), RegistryError> {
    let builtin_group = registry::group_versions()
        .iter()
        .any(|(g, _)| *g == d.group)
        || d.group.is_empty();
    if builtin_group {
        return Err(RegistryError::BuiltIn(format!("group {:?}", d.group)));
    }
    label("spec.names.plural", &d.plural)?;
    label("spec.names.singular", &d.singular)?;
    label("spec.versions[].name", &d.version)?;
    if !d.group.contains('.') || d.group.starts_with('.') || d.group.ends_with('.') {
        return Err(RegistryError::Invalid {
            field: "spec.group",
            message: format!("{:?}: should be a domain with at least one dot", d.group),
        });
    }
    for part in d.group.split('.') {
        label("spec.group", part)?;
    }
    let kind_ok = d.kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && d.kind.len() <= 63
        && d.kind.chars().all(|c| c.is_ascii_alphanumeric());
    if !kind_ok {
        return Err(RegistryError::Invalid {
            field: "spec.names.kind",
            message: format!(
                "{:?}: may have mixed case, but should otherwise match the plural",
                d.kind
            ),
        });
    }
    Ok(())
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn added(&self) -> std::sync::RwLockReadGuard<'_, Vec<&'static Resource>> {
        self.added.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `d` from now on (replacing what served its group, version and plural);
    /// the entry the verbs will use.
    pub fn add(&self, d: &Definition) -> Result<&'static Resource, RegistryError> {
        check(d)?;
        let entry = {
            let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
            match made.iter().find(|r| same(r, d)) {
                Some(r) => *r,
                None => {
                    let mut subs = Vec::new();
                    if d.status {
                        subs.push(Subresource {
                            name: "status",
                            response: (leak(&d.group), leak(&d.version), leak(&d.kind)),
                            verbs: &["get", "patch", "update"],
                        });
                    }
                    if d.scale {
                        subs.push(Subresource {
                            name: "scale",
                            response: ("autoscaling", "v1", "Scale"),
                            verbs: &["get", "patch", "update"],
                        });
                    }
                    let r: &'static Resource = Box::leak(Box::new(Resource {
                        group: leak(&d.group),
                        version: leak(&d.version),
                        kind: leak(&d.kind),
                        plural: leak(&d.plural),
                        singular: leak(&d.singular),
                        namespaced: d.namespaced,
                        verbs: CRUD,
                        short_names: leak_all(&d.short_names),
                        categories: leak_all(&d.categories),
                        subresources: Box::leak(subs.into_boxed_slice()),
                    }));
                    made.push(r);
                    r
                }
            }
        };
        let mut added = self.added.write().unwrap_or_else(|e| e.into_inner());
        match added
            .iter_mut()
            .find(|r| r.group == d.group && r.version == d.version && r.plural == d.plural)
        {
            Some(slot) => *slot = entry,
            None => added.push(entry),
        }
        Ok(entry)
    }

    /// Stops serving `group`/`version`/`plural`; what served it, if anything.
    pub fn remove(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        let mut added = self.added.write().unwrap_or_else(|e| e.into_inner());
        let i = added
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)?;
        Some(added.remove(i))
    }

    /// The resource serving `group`/`version`/`plural`, if any.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        registry::find(group, version, plural).or_else(|| {
            self.added()
                .iter()
                .copied()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
        })
    }

    /// The preferred version of a resource by group and plural: the built-in one, else
    /// the first version added.
    pub fn preferred(&self, group: &str, plural: &str) -> Option<&'static Resource> {
        registry::preferred(group, plural).or_else(|| {
            self.added()
                .iter()
                .copied()
                .find(|r| r.group == group && r.plural == plural)
        })
    }

    /// Group versions in the order discovery lists them: the built-in ones, then
    /// those added.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = registry::group_versions();
        for r in self.added().iter() {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }

    /// The resources of one group version.
    pub fn resources_of(&self, group: &str, version: &str) -> Vec<&'static Resource> {
        let mut out: Vec<&'static Resource> = registry::resources_of(group, version).collect();
        out.extend(
            self.added()
                .iter()
                .copied()
                .filter(|r| r.group == group && r.version == version),
        );
        out
    }

    /// Whether `group`/`version` is served by entries added at run time only.
    pub fn is_added_group_version(&self, group: &str, version: &str) -> bool {
        registry::resources_of(group, version).next().is_none()
            && self
                .added()
                .iter()
                .any(|r| r.group == group && r.version == version)
    }

    /// Every resource served now.
    pub fn all(&self) -> Vec<&'static Resource> {
        let mut out: Vec<&'static Resource> = registry::RESOURCES.to_vec();
        out.extend(self.added().iter().copied());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widgets() -> Definition {
        Definition {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            namespaced: true,
            short_names: vec!["wd".into()],
            categories: vec!["all".into()],
            status: true,
            scale: false,
        }
    }

    #[test]
    fn an_added_entry_is_found_until_it_is_removed() {
        let reg = Registry::new();
        assert!(reg.find("example.com", "v1", "widgets").is_none());
        let w = reg.add(&widgets()).unwrap();
        assert!(std::ptr::eq(
            reg.find("example.com", "v1", "widgets").unwrap(),
            w
        ));
        assert!(std::ptr::eq(
            reg.preferred("example.com", "widgets").unwrap(),
            w
        ));
        assert!(reg.group_versions().contains(&("example.com", "v1")));
        assert_eq!(reg.resources_of("example.com", "v1").len(), 1);
        assert!(reg.is_added_group_version("example.com", "v1"));
        assert!(!reg.is_added_group_version("apps", "v1"));
        assert_eq!(w.subresources.len(), 1);
        assert_eq!(w.subresources[0].response, ("example.com", "v1", "Widget"));
        assert!(reg.all().iter().any(|r| std::ptr::eq(*r, w)));
        assert!(reg.find("", "v1", "pods").is_some(), "built-ins stay");
        assert!(std::ptr::eq(
            reg.remove("example.com", "v1", "widgets").unwrap(),
            w
        ));
        assert!(reg.find("example.com", "v1", "widgets").is_none());
        assert!(!reg.group_versions().contains(&("example.com", "v1")));
        assert!(reg.remove("example.com", "v1", "widgets").is_none());
    }

    #[test]
    fn the_same_definition_reuses_its_entry_and_a_changed_one_replaces_it() {
        let reg = Registry::new();
        let first = reg.add(&widgets()).unwrap();
        reg.remove("example.com", "v1", "widgets");
        let again = reg.add(&widgets()).unwrap();
        assert!(
            std::ptr::eq(first, again),
            "no new entry for the same definition"
        );
        let mut scaled = widgets();
        scaled.scale = true;
        let changed = reg.add(&scaled).unwrap();
        assert!(!std::ptr::eq(first, changed));
        assert_eq!(
            reg.resources_of("example.com", "v1").len(),
            1,
            "replaced, not added"
        );
        assert!(std::ptr::eq(
            reg.find("example.com", "v1", "widgets").unwrap(),
            changed
        ));
        assert_eq!(reg.made.lock().unwrap().len(), 2);
    }

    #[test]
    fn built_in_groups_and_bad_names_are_refused() {
        let reg = Registry::new();
        type Change = fn(&mut Definition);
        let cases: [(Change, &str); 10] = [
            (|d: &mut Definition| d.group = "apps".into(), ""),
            (|d: &mut Definition| d.group = String::new(), ""),
            (|d: &mut Definition| d.group = "nodots".into(), "spec.group"),
            (
                |d: &mut Definition| d.group = "Example.COM".into(),
                "spec.group",
            ),
            (
                |d: &mut Definition| d.plural = "../pods".into(),
                "spec.names.plural",
            ),
            (
                |d: &mut Definition| d.plural = "Widgets".into(),
                "spec.names.plural",
            ),
            (
                |d: &mut Definition| d.plural = "a".repeat(64),
                "spec.names.plural",
            ),
            (
                |d: &mut Definition| d.singular = "wid/get".into(),
                "spec.names.singular",
            ),
            (
                |d: &mut Definition| d.kind = "Wid get".into(),
                "spec.names.kind",
            ),
            (
                |d: &mut Definition| d.version = "v1/../x".into(),
                "spec.versions[].name",
            ),
        ];
        for (change, field) in cases {
            let mut d = widgets();
            change(&mut d);
            match reg.add(&d) {
                Err(RegistryError::BuiltIn(_)) => assert_eq!(field, "", "{d:?}"),
                Err(RegistryError::Invalid { field: f, .. }) => assert_eq!(f, field, "{d:?}"),
                Ok(_) => panic!("accepted {d:?}"),
            }
        }
        assert!(
            reg.all().len() == registry::RESOURCES.len(),
            "nothing was added"
        );
    }

    use crate::apiserver::testing::{call, context};
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    fn names(list: &Value) -> Vec<&str> {
        list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect()
    }

    #[tokio::test]
    async fn an_added_resource_is_discovered_and_served_at_once_and_gone_at_once() {
        let ctx = context().await;
        let widgets_path = "/apis/example.com/v1/namespaces/default/widgets";
        let unknown = [
            widgets_path,
            "/apis/example.com/v1",
            "/apis/example.com",
            "/openapi/v3/apis/example.com/v1",
            "/apis/example.com/v1/namespaces/default/widgets/w1/status",
        ];
        for path in unknown {
            assert_eq!(
                call(&ctx, Method::GET, path, None).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        ctx.registry.add(&widgets()).unwrap();

        let (code, list) = call(&ctx, Method::GET, "/apis/example.com/v1", None).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(names(&list), ["widgets", "widgets/status"]);
        let (_, groups) = call(&ctx, Method::GET, "/apis", None).await;
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "example.com")
        );
        let (_, index) = call(&ctx, Method::GET, "/openapi/v3", None).await;
        assert!(index["paths"]["apis/example.com/v1"]["serverRelativeURL"].is_string());
        let (code, doc) = call(&ctx, Method::GET, "/openapi/v3/apis/example.com/v1", None).await;
        assert_eq!(code, StatusCode::OK);
        let patch =
            &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let (_, v2) = call(&ctx, Method::GET, "/openapi/v2", None).await;
        assert!(
            v2["paths"]
                .get("/apis/example.com/v1/namespaces/{namespace}/widgets/{name}")
                .is_some()
        );

        // the generic verbs serve it, keeping every field (no schema yet)
        let w1 = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"size": 3, "deep": {"a": [1, {"b": "x"}]}}});
        let (code, created) = call(&ctx, Method::POST, widgets_path, Some(&w1)).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        assert_eq!(created["spec"], w1["spec"]);
        assert_eq!(created["metadata"]["namespace"], "default");
        let one = format!("{widgets_path}/w1");
        let (code, got) = call(&ctx, Method::GET, &one, None).await;
        assert_eq!((code, &got["spec"]), (StatusCode::OK, &w1["spec"]));
        let (code, patched) = call(
            &ctx,
            Method::PATCH,
            &one,
            Some(&json!({"spec": {"size": 5}, "status": {"ready": true}})),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{patched}");
        assert_eq!(patched["spec"]["size"], 5);
        assert!(
            patched.get("status").is_none(),
            "status is the subresource's: {patched}"
        );
        let (code, with_status) = call(
            &ctx,
            Method::PATCH,
            &format!("{one}/status"),
            Some(&json!({"status": {"ready": true}})),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{with_status}");
        assert_eq!(with_status["status"]["ready"], true);
        let (code, list) = call(&ctx, Method::GET, "/apis/example.com/v1/widgets", None).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["kind"], "WidgetList");
        let wrong =
            json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "w2"}});
        let (code, _) = call(&ctx, Method::POST, widgets_path, Some(&wrong)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "a body of another kind");

        ctx.registry.remove("example.com", "v1", "widgets");
        for path in unknown {
            assert_eq!(
                call(&ctx, Method::GET, path, None).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        let (_, groups) = call(&ctx, Method::GET, "/apis", None).await;
        assert!(
            !groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "example.com")
        );
        // served again: the object is still stored, as upstream keeps a CRD's objects
        // only while it exists (the CRD issue deletes them with the definition)
        ctx.registry.add(&widgets()).unwrap();
        assert_eq!(call(&ctx, Method::GET, &one, None).await.0, StatusCode::OK);
    }
}
