#!/usr/bin/env bash
# Installs everything the project and its tests need on a fresh Debian bookworm machine:
# Debian's Chromium (never `playwright install`: it downloads a browser), the Python
# package with its test extras, and the pinned wa-js bundle from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m pip check
npm ci --no-audit --no-fund --silent
