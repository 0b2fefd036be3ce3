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
pub mod client;
pub mod config;
pub mod controllers;
pub mod cri;
pub mod dns;
pub mod host;
pub mod kubelet;
pub mod net;
pub mod overlay;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod store;
pub mod util;
