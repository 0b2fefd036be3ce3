//! The benchmarks run end to end in small sizes, so a broken benchmark is caught here
//! and not when someone needs its figures. (Nothing is timed: the figures themselves
//! live in BENCHMARKS.md.)
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_skua"))
        .args(args)
        .output()
        .expect("run skua");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "skua {args:?} failed: {text}");
    text
}

#[test]
fn bench_api_measures_every_operation_and_the_fan_out() {
    let out = run(&[
        "bench",
        "api",
        "--ops",
        "20",
        "--watchers",
        "5",
        "--changes",
        "3",
    ]);
    for row in [
        "| create | 1 |",
        "| update | 64 |",
        "| list ",
        "(watch cache) | 64 |",
        "(datastore) | 64 |",
        "| watch fan-out: change seen by all 5 |",
        "first start median",
    ] {
        assert!(out.contains(row), "missing {row:?} in:\n{out}");
    }
}

#[test]
fn bench_rbac_decides_from_the_index_both_ways() {
    let out = run(&[
        "bench",
        "rbac",
        "--cluster-roles",
        "50",
        "--role-bindings",
        "500",
        "--namespaces",
        "10",
        "--decisions",
        "2000",
    ]);
    assert!(out.contains("| decisions / s"), "{out}");
    // half the requests are what the callers' bindings grant, half mostly not: both
    // paths are measured
    let allowed: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("| allowed | "))
        .and_then(|v| v.trim_end_matches(" % |").parse().ok())
        .unwrap_or(-1.0);
    assert!(
        (40.0..70.0).contains(&allowed),
        "allowed {allowed} %:\n{out}"
    );
}

#[test]
fn bench_store_compares_sled_with_etcd_side_by_side() {
    let out = run(&[
        "bench",
        "store",
        "--rounds",
        "1",
        "--creates",
        "20",
        "--list-size",
        "50",
    ]);
    assert!(out.contains("sled") && out.contains("etcd"), "{out}");
}

#[test]
fn bench_scale_runs_pods_on_simulated_nodes_to_the_end() {
    let out = run(&[
        "bench",
        "scale",
        "--nodes",
        "2",
        "--deployments",
        "2",
        "--replicas",
        "3",
        "--timeout",
        "120",
    ]);
    for row in [
        "| all 6 pods running and ready |",
        "| scheduler throughput",
        "| server peak RSS",
    ] {
        assert!(out.contains(row), "missing {row:?} in:\n{out}");
    }
}
