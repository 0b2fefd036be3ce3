#!/bin/sh
# Fuzzes every parser an attacker feeds (skua debug fuzz; a stable-Rust harness, see
# src/cli/fuzz.rs), one target after another, two at a time.
#
#   scripts/fuzz.sh                 10 minutes per target (what issue 15 asks)
#   FUZZ_TIME=30s scripts/fuzz.sh   shorter
#   FUZZ_SEED=7 scripts/fuzz.sh     another sequence of inputs
#
# Findings go to fuzz-findings/; the script fails if any target crashed.
set -eu
cd "$(dirname "$0")/.."
TIME=${FUZZ_TIME:-10m}
SEED=${FUZZ_SEED:-1}
OUT=${FUZZ_OUT:-fuzz-findings}
cargo build --release --locked --quiet
BIN=target/release/skua
TARGETS="json-patch merge-patch strategic-merge label-selector field-selector manifest protobuf dns x509 quantity"
mkdir -p "$OUT"
status=0
set -- $TARGETS
while [ $# -gt 0 ]; do
    a=$1; shift
    b=${1:-}; [ $# -gt 0 ] && shift
    "$BIN" debug fuzz "$a" --time "$TIME" --seed "$SEED" --out "$OUT" > "$OUT/$a.log" 2>&1 &
    pa=$!
    pb=
    if [ -n "$b" ]; then
        "$BIN" debug fuzz "$b" --time "$TIME" --seed "$SEED" --out "$OUT" > "$OUT/$b.log" 2>&1 &
        pb=$!
    fi
    wait $pa || status=1
    [ -z "$pb" ] || wait $pb || status=1
    cat "$OUT/$a.log"
    [ -z "$b" ] || cat "$OUT/$b.log"
done
if [ $status -ne 0 ]; then
    echo "fuzzing found crashes: see $OUT/" >&2
fi
exit $status
