#!/bin/sh
# skua installer.
#
#   ./install.sh                 from a checkout: build skua, install it, start the server
#   curl -sfL <url> | sh -       (release downloads are not published yet)
#
# Environment (k3s' installer names, with SKUA):
#   INSTALL_SKUA_BIN_DIR=/usr/local/bin   where the binary goes
#   INSTALL_SKUA_SKIP_START=true          install only, do not start
#   INSTALL_SKUA_EXEC="server --debug"    command and flags to run (default: server); put no
#                                         secret here: it is written into the unit as it is
#   SKUA_TOKEN, SKUA_URL, ...             any SKUA_* variable is kept for the service
#   Arguments to this script are added to the command, e.g. ./install.sh --tls-san my.host
#
# Secrets (--token, --agent-token, --datastore-endpoint and every SKUA_* variable) go
# into /etc/systemd/system/skua.service.env, mode 0600, as k3s does: never into the
# world-readable unit, and never onto a command line that `ps` shows.
set -eu

info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR] $*" >&2; exit 1; }

BIN_DIR=${INSTALL_SKUA_BIN_DIR:-/usr/local/bin}
EXEC=${INSTALL_SKUA_EXEC:-server}
LOG=/var/log/skua.log
PID_FILE=/run/skua.pid

[ "$(id -u)" = 0 ] || fatal "run the installer as root (it installs packages and writes to $BIN_DIR, /etc/skua, /var/lib/skua)"

src_dir=$(cd "$(dirname "$0")" 2>/dev/null && pwd || true)
if [ -z "$src_dir" ] || [ ! -f "$src_dir/Cargo.toml" ] || ! grep -q '^name = "skua"' "$src_dir/Cargo.toml"; then
    fatal "no skua release binaries are published yet; run ./install.sh from a skua source checkout"
fi

command -v cargo >/dev/null 2>&1 || fatal "cargo not found: install Rust 1.85 or later (https://rustup.rs), then run ./install.sh again"
info "installing build and node dependencies (containerd, runc, CNI plugins, ...)"
"$src_dir/scripts/install-deps.sh" node
info "building skua (release)"
(cd "$src_dir" && cargo build --release --locked --quiet)

stop_running() {
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        info "stopping the running skua (pid $(cat "$PID_FILE"))"
        kill "$(cat "$PID_FILE")"
        i=0
        while kill -0 "$(cat "$PID_FILE")" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    fi
}

ENV_FILE=/etc/systemd/system/skua.service.env

# the arguments without their secrets; the secrets as SKUA_* variables
. "$src_dir/scripts/install-lib.sh"
args_file=$(mktemp)
trap 'rm -f "$args_file"' EXIT
split_args "$args_file" "$@"
set --
while IFS= read -r a; do set -- "$@" "$a"; done < "$args_file"

# the data directory holds the datastore, the CAs' keys and the token: root only
# (k3s and CIS 1.1.11); an existing install is tightened too
mkdir -p "$BIN_DIR" /etc/skua /var/lib/skua
chmod 0700 /var/lib/skua
stop_running
install -m 0755 "$src_dir/target/release/skua" "$BIN_DIR/skua.new"
mv -f "$BIN_DIR/skua.new" "$BIN_DIR/skua"
info "installed $BIN_DIR/skua ($("$BIN_DIR/skua" --version))"

if [ "${INSTALL_SKUA_SKIP_START:-false}" = true ]; then
    info "INSTALL_SKUA_SKIP_START=true: not starting skua"
    exit 0
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    info "writing $ENV_FILE (0600) and the systemd unit /etc/systemd/system/skua.service"
    write_env "$ENV_FILE"
    cat > /etc/systemd/system/skua.service <<UNIT
[Unit]
Description=skua - lightweight Kubernetes
Documentation=https://github.com/skua-dev/skua
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=-$ENV_FILE
ExecStart=$BIN_DIR/skua $EXEC $*
KillMode=process
Restart=always
RestartSec=5s
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable skua >/dev/null 2>&1
    systemctl restart skua
    info "skua is running under systemd: journalctl -u skua -f"
    exit 0
fi

info "no systemd here: starting skua in the background (log: $LOG)"
: > "$LOG"
# the secrets reach skua through its environment (exported above), not its command line
# shellcheck disable=SC2086
nohup "$BIN_DIR/skua" $EXEC "$@" >> "$LOG" 2>&1 &
echo $! > "$PID_FILE"
i=0
while [ $i -lt 150 ]; do
    if grep -q "datastore ready" "$LOG"; then
        info "skua is running (pid $(cat "$PID_FILE")); stop it with: kill \$(cat $PID_FILE)"
        exit 0
    fi
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || { tail -n 20 "$LOG" >&2; fatal "skua exited during start-up (see $LOG)"; }
    sleep 0.2
    i=$((i + 1))
done
tail -n 20 "$LOG" >&2
fatal "skua did not report ready within 30 s (see $LOG)"
