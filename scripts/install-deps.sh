#!/bin/sh
# Installs the Debian packages skua needs, only those missing.
#   scripts/install-deps.sh build   what building skua needs
#   scripts/install-deps.sh node    that, plus what a node runs pods with (containerd, ...)
#   scripts/install-deps.sh test    all of that, plus what the test suite runs (etcd, ...)
# Services that packages would start on install (etcd) are kept from starting: tests
# start their own on 127.0.0.1 with random ports.
set -eu

want=${1:-build}
missing=""
need() { # need <command-or-file> <package>
    case "$1" in
        /*) [ -e "$1" ] || missing="$missing $2" ;;
        *) command -v "$1" >/dev/null 2>&1 || missing="$missing $2" ;;
    esac
}
need cc gcc
need protoc protobuf-compiler
need /usr/include/google/protobuf/descriptor.proto libprotobuf-dev
if [ "$want" = test ] || [ "$want" = node ]; then
    # what a node runs pods with (the agent issue), and the tests' images are built from
    need containerd containerd
    need runc runc
    need /usr/lib/cni/bridge containernetworking-plugins
    need nft nftables
    need conntrack conntrack
    need ip iproute2
    need nsenter util-linux
    need tar tar
    need /bin/busybox busybox-static
fi
if [ "$want" = test ]; then
    need etcd etcd-server
    need openssl openssl
    need curl curl
    need skopeo skopeo
    need docker-registry docker-registry
    need htpasswd apache2-utils
    # the Python client tests and the Helm CLI (fetched from PyPI by the test harness)
    need python3 python3
    need pip3 python3-pip
fi
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root to install:$missing" >&2; exit 1; }
    SUDO=sudo
fi
echo "[deps] installing:$missing"
added_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    added_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
[ -n "$added_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
