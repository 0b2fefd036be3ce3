#!/bin/sh
# Builds the container images the tests run, from Debian's busybox-static: no image
# ever comes from the internet. Writes docker-archive tarballs (what an agent imports
# from <data-dir>/agent/images/, and what skopeo pushes to a local registry):
#   <out>/busybox.tar   docker.io/library/busybox:latest  (busybox and all its applets)
#   <out>/pause.tar     registry.k8s.io/pause:3.10        (a sandbox that sleeps)
# Usage: scripts/build-images.sh [out-dir]   (default: target/images)
set -eu
cd "$(dirname "$0")/.."
out=${1:-target/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-images: $busybox missing: install busybox-static (scripts/install-deps.sh node)" >&2; exit 1; }
command -v skopeo >/dev/null 2>&1 || { echo "build-images: skopeo missing (scripts/install-deps.sh test)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c <"$1" | tr -d ' '; }

# image <name> <ref> <tag> <config-json-fragment> <rootfs-dir>
image() {
    name=$1 ref=$2 tag=$3 config=$4 rootfs=$5
    layout="$work/$name-layout"
    mkdir -p "$layout/blobs/sha256"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
    layer=$(sha "$work/layer.tar")
    cp "$work/layer.tar" "$layout/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$config" "$layer" >"$work/config.json"
    cfg=$(sha "$work/config.json")
    cp "$work/config.json" "$layout/blobs/sha256/$cfg"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cfg" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar")" >"$work/manifest.json"
    man=$(sha "$work/manifest.json")
    cp "$work/manifest.json" "$layout/blobs/sha256/$man"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$man" "$(size "$work/manifest.json")" "$tag" >"$layout/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    rm -f "$out/$name.tar"
    skopeo copy --quiet --insecure-policy "oci:$layout:$tag" "docker-archive:$out/$name.tar:$ref:$tag"
    echo "[images] $out/$name.tar ($ref:$tag)"
}

# busybox: the binary and a link for each applet, a passwd for `id`, /tmp
root="$work/busybox-root"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
image busybox docker.io/library/busybox latest \
    '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}' "$root"

# pause: only busybox, sleeping for as long as the pod lives
root="$work/pause-root"
mkdir -p "$root/bin"
cp "$busybox" "$root/bin/busybox"
image pause registry.k8s.io/pause 3.10 \
    '{"Entrypoint":["/bin/busybox","sleep","2147483647"]}' "$root"
