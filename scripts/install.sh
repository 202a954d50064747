#!/usr/bin/env bash
# Installs everything the project and its tests need on a fresh Debian bookworm machine:
# Debian's Chromium (never `playwright install`: it downloads a browser), the Python
# package with its test extras, the pinned wa-js bundle from npm, and the tests' Kubernetes
# control plane (kube-apiserver and kube-controller-manager built from source with Go:
# about 5 minutes the first time, then cached in ~/.cache/whatsapp-sessions).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m pip check
npm ci --no-audit --no-fund --silent
scripts/control_plane.sh >/dev/null
