//! The official Python `kubernetes` client against a real skua server: create, list
//! (selectors, paging), watch with resume, conflicts, a Deployment's scale.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::SkuaServer;
use std::process::Command;

#[test]
fn the_python_kubernetes_client_works_unchanged() {
    let server = SkuaServer::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&server.kubeconfig)
        .output()
        .expect("python3 (scripts/test.sh installs the kubernetes package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
