# shellcheck shell=sh
# What install.sh does with secrets, kept apart so the test suite can run it
# (tests/install.rs): --token, --agent-token and --datastore-endpoint leave the
# argument list and become SKUA_* variables, which go into a 0600 environment file,
# never into the world-readable unit or onto a command line `ps` shows.
# The caller defines fatal().

secrets=""

add_secret() {
    case "$2" in *"
"*) fatal "$1 must not contain a newline" ;; esac
    export "$1=$2"
    escaped=$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
    secrets="${secrets}$1=\"$escaped\"
"
}

# split_args FILE ARGS...: ARGS without their secrets, one per line, into FILE.
split_args() {
    out=$1
    shift
    : > "$out"
    while [ $# -gt 0 ]; do
        case "$1" in
            --token|-t) [ $# -ge 2 ] || fatal "$1 needs a value"; add_secret SKUA_TOKEN "$2"; shift 2 ;;
            --token=*|-t=*) add_secret SKUA_TOKEN "${1#*=}"; shift ;;
            --agent-token) [ $# -ge 2 ] || fatal "$1 needs a value"; add_secret SKUA_AGENT_TOKEN "$2"; shift 2 ;;
            --agent-token=*) add_secret SKUA_AGENT_TOKEN "${1#*=}"; shift ;;
            --datastore-endpoint) [ $# -ge 2 ] || fatal "$1 needs a value"; add_secret SKUA_DATASTORE_ENDPOINT "$2"; shift 2 ;;
            --datastore-endpoint=*) add_secret SKUA_DATASTORE_ENDPOINT "${1#*=}"; shift ;;
            *"
"*) fatal "an argument must not contain a newline" ;;
            *) printf '%s\n' "$1" >> "$out"; shift ;;
        esac
    done
}

# write_env PATH: the SKUA_* variables (the caller's, then those from arguments) as
# a systemd environment file, mode 0600 from the start.
write_env() {
    old_umask=$(umask)
    umask 077
    {
        env | grep -E '^SKUA_' | grep -vE "^($(printf '%s' "$secrets" | sed -n 's/=.*//p' | tr '\n' '|')NONE)=" \
            | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/=\(.*\)/="\1"/' || true
        printf '%s' "$secrets"
    } > "$1.tmp"
    chmod 0600 "$1.tmp"
    mv -f "$1.tmp" "$1"
    umask "$old_umask"
}
