//! Pure Kubernetes API knowledge, no I/O: which resources exist and how they are
//! named and scoped, object metadata rules, label and field selectors, patches.

pub(crate) mod audit_policy;
pub(crate) mod civil;
pub(crate) mod convert;
pub(crate) mod cron;
pub(crate) mod defaults;
pub(crate) mod fieldset;
pub(crate) mod lifecycle;
pub(crate) mod managed;
pub(crate) mod merge_keys;
pub mod meta;
pub(crate) mod patch;
pub(crate) mod pod_refs;
pub(crate) mod pod_security;
pub(crate) mod printers;
pub(crate) mod quantity;
pub(crate) mod quota;
pub(crate) mod rbac;
pub mod registry;
pub(crate) mod scheduling;
pub(crate) mod selector;
pub(crate) mod strategic;
pub(crate) mod users;
pub(crate) mod validation;
pub(crate) mod zero;
