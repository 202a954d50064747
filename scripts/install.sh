#!/usr/bin/env bash
# Installs everything the project and its tests need on a fresh Debian bookworm machine:
# Debian's Chromium (never `playwright install`: it downloads a browser), the Python
# package with its test extras, the pinned wa-js bundle from npm, and the tests' Kubernetes
# control plane (kube-apiserver and kube-controller-manager built from source with Go:
# about 5 minutes the first time, then cached in ~/.cache/whatsapp-sessions), the real test
# node (containerd, podman, CNI plugins from Debian; kubelet, kube-scheduler, kube-proxy from
# the same Go module) and the three images (podman, cached by content).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium-headless-shell for the session pod processes (their default
# browser) and chromium of the same version (CHROMIUM_PATH=/usr/lib/chromium/chromium, the
# benchmarks' "before"); podman (images), containerd and the CNI plugins (the real node),
# debootstrap (the base image), nftables (its guard table), ipset (kube-router's
# NetworkPolicy rules).
NODE_PACKAGES=(podman runc conmon containernetworking-plugins iptables nftables ipset uidmap
  slirp4netns fuse-overlayfs catatonit debootstrap containerd)
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromium-headless-shell >/dev/null 2>&1
then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-headless-shell >/dev/null
fi
missing=()
for package in "${NODE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m pip check
npm ci --no-audit --no-fund --silent
scripts/control_plane.sh >/dev/null
# The node's Go builds (CPU) beside the image builds (mostly downloads); both cached.
scripts/node_binaries.sh >/dev/null &
node_binaries=$!
# Prints each image's size; builds only what changed (podman's storage is kept).
scripts/images.sh
wait "$node_binaries"
