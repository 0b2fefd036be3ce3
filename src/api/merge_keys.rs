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

/// How a list field is tracked by server-side apply (upstream's `+listType` /
/// `+listMapKey` markers): its items owned one by one by their keys, its scalars owned
/// one by one as a set, or the whole list owned as one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyList {
    /// `listType=map`: items identified by these fields (a missing `protocol` key
    /// counts as its default, `TCP`, as upstream's default keys do).
    Map(&'static [&'static str]),
    /// `listType=set`.
    Set,
    /// `listType=atomic`, the default.
    Atomic,
}

/// The server-side apply list type of list field `name`; `item_type` as for
/// [`list_strategy`].
pub fn apply_list(name: &str, item_type: &str) -> ApplyList {
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "claims" => ApplyList::Map(&["name"]),
        "volumeMounts" => ApplyList::Map(&["mountPath"]),
        "volumeDevices" => ApplyList::Map(&["devicePath"]),
        "hostAliases" => ApplyList::Map(&["ip"]),
        "conditions" => ApplyList::Map(&["type"]),
        "ownerReferences" => ApplyList::Map(&["uid"]),
        "topologySpreadConstraints" => ApplyList::Map(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ApplyList::Set,
        "ports" if item_type.contains("ContainerPort") || item_type == "containerPort" => {
            ApplyList::Map(&["containerPort", "protocol"])
        }
        "ports" if item_type.ends_with("ServicePort") || item_type == "port" => {
            ApplyList::Map(&["port", "protocol"])
        }
        _ => ApplyList::Atomic,
    }
}

/// Object fields that server-side apply owns as one value (upstream's
/// `+structType=atomic` / `+mapType=atomic`): label selectors, key references.
pub fn apply_atomic_object(name: &str) -> bool {
    matches!(
        name,
        "selector"
            | "nodeSelector"
            | "podSelector"
            | "namespaceSelector"
            | "labelSelector"
            | "configMapKeyRef"
            | "secretKeyRef"
            | "fieldRef"
            | "resourceFieldRef"
            | "roleRef"
            | "requiredDuringSchedulingIgnoredDuringExecution"
    )
}

/// Object fields that are maps of user keys (labels, data, resource lists), not
/// structs: a newly set map is owned itself as well as its entries.
pub fn is_map_field(name: &str) -> bool {
    matches!(
        name,
        "labels"
            | "annotations"
            | "data"
            | "binaryData"
            | "stringData"
            | "limits"
            | "requests"
            | "capacity"
            | "allocatable"
            | "hard"
            | "used"
            | "parameters"
            | "matchLabels"
    )
}
