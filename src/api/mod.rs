//! Pure Kubernetes API knowledge, no I/O: which resources exist and how they are
//! named and scoped, object metadata rules, label and field selectors, patches.

pub mod civil;
pub mod convert;
pub mod cron;
pub mod defaults;
pub mod fieldset;
pub mod lifecycle;
pub mod managed;
pub mod merge_keys;
pub mod meta;
pub mod patch;
pub mod pod_refs;
pub mod printers;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod scheduling;
pub mod selector;
pub mod strategic;
pub mod users;
pub mod validation;
pub mod zero;
