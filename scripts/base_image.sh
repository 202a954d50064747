#!/usr/bin/env bash
# Makes debian:bookworm-slim for podman without a registry: debootstrap's minbase of bookworm
# with the same three suites in its sources as the official image (bookworm,
# bookworm-updates, bookworm-security), imported as docker.io/library/debian:bookworm-slim,
# so docker/*.Dockerfile build the same here as on a machine that pulls the official image.
# Skipped when that tag already exists (podman's storage is kept between runs); --force
# rebuilds it. About 40 s the first time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/containers.conf}
IMAGE=docker.io/library/debian:bookworm-slim
MIRROR=http://deb.debian.org/debian

log() { echo "base_image.sh: $*" >&2; }

if [[ ${1:-} != --force ]] && podman image exists "$IMAGE"; then
  exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap is required (apt-get install debootstrap)"; exit 3; }
start=$SECONDS
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
log "debootstrap --variant=minbase bookworm (about 40 s)"
debootstrap --variant=minbase bookworm "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
rm -f "$WORK/root/etc/apt/sources.list"
cat >"$WORK/root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As the official image: no apt caches or lists kept, none written by later layers.
printf 'APT::Install-Recommends "false";\n' >"$WORK/root/etc/apt/apt.conf.d/90no-recommends"
printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n' \
  >"$WORK/root/etc/apt/apt.conf.d/docker-clean"
rm -rf "$WORK/root/var/cache/apt/"* "$WORK/root/var/lib/apt/lists/"* "$WORK/root/var/log/"*.log
tar -C "$WORK/root" -c . | podman import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
log "made $IMAGE in $((SECONDS - start)) s ($(podman image inspect "$IMAGE" --format '{{.Size}}') bytes)"
