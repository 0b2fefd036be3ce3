//! Pure Kubernetes API knowledge, no I/O: which resources exist and how they are
//! named and scoped, object metadata rules, label selectors.

pub mod registry;
