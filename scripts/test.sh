#!/bin/sh
# The whole test suite, on a fresh Debian 12 machine: installs what the tests need
# (Debian packages included), then runs formatting checks, unit, integration,
# conformance and crash tests. CI (.ci/run) runs exactly this.
set -eu
cd "$(dirname "$0")/.."

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.85 or later (rustup)" >&2; exit 1; }
scripts/install-deps.sh test
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "[test] installing cargo-nextest (tests rely on one process per test)"
    cargo install cargo-nextest --locked
fi

if ! python3 -c "import kubernetes" >/dev/null 2>&1; then
    echo "[test] installing the Python kubernetes client (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check kubernetes
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked --quiet -- -D warnings
cargo nextest run --locked --no-fail-fast "$@"
