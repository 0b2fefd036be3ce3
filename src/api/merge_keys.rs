//! How list fields of built-in kinds merge in strategic merge patches (upstream's
//! `patchStrategy`/`patchMergeKey` struct tags), by field name. Strategic merge patch
//! reads this table, and build.rs writes it into the OpenAPI documents as
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`, so clients and
//! server agree. This file has no dependencies: build.rs includes it directly.

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Lists of objects merged by this key.
    ByKey(&'static str),
    /// Lists of scalars merged as a set (e.g. `metadata.finalizers`).
    Set,
    /// Replaced wholesale (no merge key upstream).
    Replace,
}

/// The strategy of list field `name`; `item_type` (the element's schema name or a
/// field an element has) tells container ports from service ports.
pub fn list_strategy(name: &str, item_type: &str) -> ListStrategy {
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListStrategy::ByKey("name"),
        "volumeMounts" => ListStrategy::ByKey("mountPath"),
        "volumeDevices" => ListStrategy::ByKey("devicePath"),
        "hostAliases" => ListStrategy::ByKey("ip"),
        "conditions" => ListStrategy::ByKey("type"),
        "ownerReferences" => ListStrategy::ByKey("uid"),
        "finalizers" => ListStrategy::Set,
        "ports" if item_type.contains("ContainerPort") || item_type == "containerPort" => {
            ListStrategy::ByKey("containerPort")
        }
        "ports" if item_type.ends_with("ServicePort") || item_type == "port" => {
            ListStrategy::ByKey("port")
        }
        _ => ListStrategy::Replace,
    }
}
