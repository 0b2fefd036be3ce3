//! skua: a lightweight, k3s-style Kubernetes distribution in one binary.
//!
//! Modules follow the map in `docs/architecture.md`; dependencies point down the list.
#![forbid(unsafe_code)]

/// The version `skua --version` prints.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod cli;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod controllers;
pub(crate) mod cri;
pub(crate) mod dns;
pub(crate) mod host;
pub(crate) mod kubelet;
pub mod net;
pub(crate) mod overlay;
pub mod pki;
pub(crate) mod policy;
pub mod proxy;
pub(crate) mod runtime;
pub(crate) mod scheduler;
pub(crate) mod server;
pub(crate) mod sim;
pub mod store;
pub(crate) mod util;
