//! Build-time facts: the build date for `/version`, and the OpenAPI v3 documents of
//! every built-in group version (generated from k8s-openapi's schemas for the kinds in
//! `src/api/registry/`, with the patch merge keys of `src/api/merge_keys.rs`).

#[allow(dead_code)]
#[path = "src/api/registry/mod.rs"]
mod registry;

#[allow(dead_code)]
#[path = "src/api/merge_keys.rs"]
mod merge_keys;

#[allow(dead_code)]
#[path = "src/api/civil.rs"]
mod civil;

use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/api/registry");
    println!("cargo:rerun-if-changed=src/api/merge_keys.rs");
    println!("cargo:rerun-if-changed=src/api/civil.rs");
    build_date();
    openapi();
}

fn build_date() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=SKUA_BUILD_DATE={}", civil::rfc3339(secs));
    // the target triple (the protobuf schema test asks cargo for this platform's deps)
    println!(
        "cargo:rustc-env=SKUA_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

/// Adds the schema of a kind to `generator`; returns its component name.
fn kind_schema(
    generator: &mut SchemaGenerator,
    group: &str,
    version: &str,
    kind: &str,
) -> Option<String> {
    use k8s_openapi::api::*;
    macro_rules! kinds {
        ($($g:literal $v:literal $k:literal => $t:ty,)*) => {
            match (group, version, kind) {
                $(($g, $v, $k) => {
                    generator.subschema_for::<$t>();
                    Some(<$t as schemars::JsonSchema>::schema_name().into_owned())
                })*
                _ => None,
            }
        };
    }
    kinds! {
        "" "v1" "Binding" => core::v1::Binding,
        "" "v1" "ConfigMap" => core::v1::ConfigMap,
        "" "v1" "Endpoints" => core::v1::Endpoints,
        "" "v1" "Event" => core::v1::Event,
        "" "v1" "LimitRange" => core::v1::LimitRange,
        "" "v1" "Namespace" => core::v1::Namespace,
        "" "v1" "Node" => core::v1::Node,
        "" "v1" "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "" "v1" "PersistentVolume" => core::v1::PersistentVolume,
        "" "v1" "Pod" => core::v1::Pod,
        "" "v1" "ReplicationController" => core::v1::ReplicationController,
        "" "v1" "ResourceQuota" => core::v1::ResourceQuota,
        "" "v1" "Secret" => core::v1::Secret,
        "" "v1" "ServiceAccount" => core::v1::ServiceAccount,
        "" "v1" "Service" => core::v1::Service,
        "apps" "v1" "ControllerRevision" => apps::v1::ControllerRevision,
        "apps" "v1" "DaemonSet" => apps::v1::DaemonSet,
        "apps" "v1" "Deployment" => apps::v1::Deployment,
        "apps" "v1" "ReplicaSet" => apps::v1::ReplicaSet,
        "apps" "v1" "StatefulSet" => apps::v1::StatefulSet,
        "authentication.k8s.io" "v1" "SelfSubjectReview" => authentication::v1::SelfSubjectReview,
        "authentication.k8s.io" "v1" "TokenReview" => authentication::v1::TokenReview,
        "authorization.k8s.io" "v1" "LocalSubjectAccessReview" => authorization::v1::LocalSubjectAccessReview,
        "authorization.k8s.io" "v1" "SelfSubjectAccessReview" => authorization::v1::SelfSubjectAccessReview,
        "authorization.k8s.io" "v1" "SelfSubjectRulesReview" => authorization::v1::SelfSubjectRulesReview,
        "authorization.k8s.io" "v1" "SubjectAccessReview" => authorization::v1::SubjectAccessReview,
        "autoscaling" "v2" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "autoscaling" "v1" "HorizontalPodAutoscaler" => autoscaling::v1::HorizontalPodAutoscaler,
        "batch" "v1" "CronJob" => batch::v1::CronJob,
        "batch" "v1" "Job" => batch::v1::Job,
        "coordination.k8s.io" "v1" "Lease" => coordination::v1::Lease,
        "discovery.k8s.io" "v1" "EndpointSlice" => discovery::v1::EndpointSlice,
        "networking.k8s.io" "v1" "IngressClass" => networking::v1::IngressClass,
        "networking.k8s.io" "v1" "Ingress" => networking::v1::Ingress,
        "networking.k8s.io" "v1" "NetworkPolicy" => networking::v1::NetworkPolicy,
        "policy" "v1" "PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "rbac.authorization.k8s.io" "v1" "ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io" "v1" "RoleBinding" => rbac::v1::RoleBinding,
        "rbac.authorization.k8s.io" "v1" "Role" => rbac::v1::Role,
        "scheduling.k8s.io" "v1" "PriorityClass" => scheduling::v1::PriorityClass,
        "storage.k8s.io" "v1" "StorageClass" => storage::v1::StorageClass,
    }
}

/// Writes the merge strategy of every list property into the schemas.
fn annotate_merge_keys(schemas: &mut Map<String, Value>) {
    for schema in schemas.values_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, prop) in props.iter_mut() {
            if prop.get("type") != Some(&json!("array")) {
                continue;
            }
            let item = prop
                .pointer("/items/$ref")
                .and_then(Value::as_str)
                .map(|r| r.rsplit('/').next().unwrap_or(r).to_string())
                .unwrap_or_default();
            match merge_keys::list_strategy(name, &item) {
                merge_keys::ListStrategy::ByKey(key) if !item.is_empty() => {
                    prop["x-kubernetes-patch-strategy"] = json!("merge");
                    prop["x-kubernetes-patch-merge-key"] = json!(key);
                }
                merge_keys::ListStrategy::Set if item.is_empty() => {
                    prop["x-kubernetes-patch-strategy"] = json!("merge");
                }
                _ => {}
            }
            // server-side apply's view of the same list
            match merge_keys::apply_list(name, &item) {
                merge_keys::ApplyList::Map(keys) if !item.is_empty() => {
                    prop["x-kubernetes-list-type"] = json!("map");
                    prop["x-kubernetes-list-map-keys"] = json!(keys);
                }
                merge_keys::ApplyList::Set if item.is_empty() => {
                    prop["x-kubernetes-list-type"] = json!("set");
                }
                _ => {}
            }
        }
    }
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(action: &str, id: String, gvk: &Value, schema_ref: &str, mutating: bool) -> Value {
    let mut params = Vec::new();
    if mutating {
        params.push(param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."));
        params.push(param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
        ));
    }
    let object = json!({"$ref": schema_ref});
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": object}}}},
    });
    match action {
        "post" | "put" => {
            op["requestBody"] = json!({"content": {"*/*": {"schema": object}}, "required": true})
        }
        "patch" => {
            op["requestBody"] = json!({"content": {
                "application/json-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
                "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
                "application/strategic-merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
            }, "required": true})
        }
        _ => {}
    }
    op
}

fn openapi() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut index = String::from(
        "/// (path, document, hash) of every group version's OpenAPI v3 document.\npub static DOCS: &[(&str, &str, &str)] = &[\n",
    );
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    for r in registry::RESOURCES {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    let mut zero_shapes = ZeroShapes::default();
    for (group, version) in gvs {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut paths = Map::new();
        let mut kinds = Vec::new();
        for r in registry::RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let Some(schema) = kind_schema(&mut generator, group, version, r.kind) else {
                panic!("no schema for {group}/{version} {}", r.kind)
            };
            kinds.push((schema.clone(), r));
            let gvk = json!({"group": group, "version": version, "kind": r.kind});
            let schema_ref = format!("#/components/schemas/{schema}");
            let base = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let collection = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}", r.plural)
            } else {
                format!("{base}/{}", r.plural)
            };
            let op_name = |verb: &str, suffix: &str| {
                let gv: String = format!("{group}{version}")
                    .split(['.', '-'])
                    .map(|p| {
                        let mut c = p.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect();
                format!(
                    "{verb}{gv}{}{}{suffix}",
                    if r.namespaced { "Namespaced" } else { "" },
                    r.kind
                )
            };
            let mut coll = Map::new();
            let mut item = Map::new();
            for verb in r.verbs {
                match *verb {
                    "list" => {
                        coll.insert(
                            "get".into(),
                            operation("list", op_name("list", ""), &gvk, &schema_ref, false),
                        );
                    }
                    "create" => {
                        coll.insert(
                            "post".into(),
                            operation("post", op_name("create", ""), &gvk, &schema_ref, true),
                        );
                    }
                    "deletecollection" => {
                        coll.insert(
                            "delete".into(),
                            operation(
                                "deletecollection",
                                op_name("deleteCollection", ""),
                                &gvk,
                                &schema_ref,
                                false,
                            ),
                        );
                    }
                    "get" => {
                        item.insert(
                            "get".into(),
                            operation("get", op_name("read", ""), &gvk, &schema_ref, false),
                        );
                    }
                    "update" => {
                        item.insert(
                            "put".into(),
                            operation("put", op_name("replace", ""), &gvk, &schema_ref, true),
                        );
                    }
                    "patch" => {
                        item.insert(
                            "patch".into(),
                            operation("patch", op_name("patch", ""), &gvk, &schema_ref, true),
                        );
                    }
                    "delete" => {
                        item.insert(
                            "delete".into(),
                            operation("delete", op_name("delete", ""), &gvk, &schema_ref, false),
                        );
                    }
                    _ => {}
                }
            }
            if !coll.is_empty() {
                paths.insert(collection.clone(), Value::Object(coll));
            }
            if !item.is_empty() {
                paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
            }
        }
        // the kinds of subresources served under this group-version, as upstream's
        // documents carry them (serviceaccounts/token, pods/eviction, */scale)
        {
            use k8s_openapi::api::*;
            match (group, version) {
                ("", "v1") => {
                    generator.subschema_for::<authentication::v1::TokenRequest>();
                    generator.subschema_for::<policy::v1::Eviction>();
                    generator.subschema_for::<autoscaling::v1::Scale>();
                }
                ("apps", "v1") => {
                    generator.subschema_for::<autoscaling::v1::Scale>();
                }
                _ => {}
            }
        }
        let mut schemas = generator.take_definitions(true);
        annotate_merge_keys(&mut schemas);
        schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(), json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }));
        for (schema, r) in &kinds {
            zero_shapes.add_kind(&schemas, group, version, r.kind, schema);
        }
        for (schema, r) in kinds {
            if let Some(s) = schemas.get_mut(&schema) {
                s["x-kubernetes-group-version-kind"] =
                    json!([{"group": group, "kind": r.kind, "version": version}]);
            }
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0+skua"},
            "paths": paths,
            "components": {"schemas": schemas},
        });
        let text = doc.to_string();
        let path = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let file = format!("openapi-{}.json", path.replace('/', "_"));
        std::fs::write(out_dir.join(&file), &text).expect("write OpenAPI document");
        // FNV-1a, uppercase hex like upstream's hash parameter
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let _ = writeln!(
            index,
            "    ({path:?}, include_str!(concat!(env!(\"OUT_DIR\"), \"/{file}\")), \"{hash:016X}\"),"
        );
    }
    index.push_str("];\n");
    std::fs::write(out_dir.join("openapi_docs.rs"), index).expect("write OpenAPI index");
    std::fs::write(
        out_dir.join("zero_shapes.json"),
        zero_shapes.finish().to_string(),
    )
    .expect("write zero shapes");
}

/// Where upstream writes zero values: the fields each schema requires (Go fields
/// without `omitempty`, serialised even when zero), and the nested objects that have
/// such fields. `src/api/zero.rs` reads the result.
#[derive(Default)]
struct ZeroShapes {
    /// "group/version/Kind" → component
    kinds: Map<String, Value>,
    /// component → {"r": {field: zero}, "o": {field: component}, "a": {field: component}}
    shapes: Map<String, Value>,
}

fn component_ref(prop: &Value) -> Option<&str> {
    let r = prop
        .get("$ref")
        .or_else(|| prop.pointer("/allOf/0/$ref"))?
        .as_str()?;
    r.strip_prefix("#/components/schemas/")
}

impl ZeroShapes {
    fn add_kind(
        &mut self,
        schemas: &Map<String, Value>,
        group: &str,
        version: &str,
        kind: &str,
        component: &str,
    ) {
        if self.shape(schemas, component, &mut Vec::new()) {
            self.kinds
                .insert(format!("{group}/{version}/{kind}"), json!(component));
        }
    }

    /// Records the shape of `component`; whether it has anything to fill.
    fn shape(
        &mut self,
        schemas: &Map<String, Value>,
        component: &str,
        path: &mut Vec<String>,
    ) -> bool {
        if let Some(known) = self.shapes.get(component) {
            return !known.is_null();
        }
        if path.iter().any(|c| c == component) {
            return false; // recursive schemas (JSONSchemaProps) have nothing required to fill
        }
        let Some(schema) = schemas.get(component) else {
            return false;
        };
        path.push(component.to_string());
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let (mut zeros, mut objects, mut arrays) = (Map::new(), Map::new(), Map::new());
        for (field, prop) in schema["properties"].as_object().into_iter().flatten() {
            let zero = match (prop["type"].as_str(), component_ref(prop)) {
                (Some("integer" | "number"), _) => Some(json!(0)),
                (Some("string"), _) if prop["format"] != "date-time" => Some(json!("")),
                (Some("boolean"), _) => Some(json!(false)),
                (Some("array"), _) => Some(json!([])),
                (None, Some(c)) if schemas.get(c).is_some_and(|s| s["type"] == "object") => {
                    Some(json!({}))
                }
                _ => None,
            };
            if let Some(zero) = zero.filter(|_| required.contains(&field.as_str())) {
                zeros.insert(field.clone(), zero);
            }
            if let Some(c) = component_ref(prop) {
                if self.shape(schemas, c, path) {
                    objects.insert(field.clone(), json!(c));
                }
            } else if let Some(c) = prop.get("items").and_then(component_ref) {
                if self.shape(schemas, c, path) {
                    arrays.insert(field.clone(), json!(c));
                }
            }
        }
        path.pop();
        let useful = !(zeros.is_empty() && objects.is_empty() && arrays.is_empty());
        let mut shape = Map::new();
        for (key, part) in [("r", zeros), ("o", objects), ("a", arrays)] {
            if !part.is_empty() {
                shape.insert(key.into(), Value::Object(part));
            }
        }
        self.shapes.insert(
            component.to_string(),
            if useful {
                Value::Object(shape)
            } else {
                Value::Null
            },
        );
        useful
    }

    fn finish(mut self) -> Value {
        self.shapes.retain(|_, v| !v.is_null());
        json!({"kinds": self.kinds, "shapes": self.shapes})
    }
}
