#!/usr/bin/env bash
# Builds or finds the binaries of the tests' real node and prints the directory that holds
# them (the only line on stdout; progress goes to stderr):
#   kubelet, kube-scheduler, kube-proxy  built from k8s.io/kubernetes (tools/k8s/go.mod, the
#                                        same module and version as the control plane)
#   kube-router                          github.com/cloudnativelabs/kube-router (NetworkPolicy)
#   pause                                k8s.io/kubernetes's build/pause/linux/pause.c, static
# Cached like scripts/control_plane.sh, in ${WA_TOOLS_CACHE:-~/.cache/whatsapp-sessions},
# keyed by version. The first build takes about 5 minutes on 2 cores after the control plane's
# (which fills Go's build cache with most packages); later runs return at once.
# NetworkPolicy is enforced by kube-router's firewall alone (iptables + ipset): the usual
# sigs.k8s.io/kube-network-policies needs the nftables `queue` expression (CONFIG_NFT_QUEUE),
# which this machine type's kernel lacks. v2.1.0 is the one v2 release the Go proxy serves;
# it runs only on the test bridge, with no port open.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/k8s_commands.sh"

CACHE=${WA_TOOLS_CACHE:-$HOME/.cache/whatsapp-sessions}
KUBE_ROUTER_VERSION=v2.1.0
BIN="$CACHE/node-$K8S_VERSION/bin"
mkdir -p "$BIN"
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"

log() { echo "node_binaries.sh: $*" >&2; }

exec 9>"$CACHE/.node_binaries.lock"
flock 9

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ ! -x "$BIN/kubelet" || ! -x "$BIN/kube-scheduler" || ! -x "$BIN/kube-proxy" ]]; then
  command -v go >/dev/null || { log "Go >= 1.24 is required to build the kubelet"; exit 3; }
  log "building kubelet, kube-scheduler and kube-proxy $K8S_VERSION"
  start=$SECONDS
  build_k8s_commands "$CACHE" "$BIN" "$WORK" kubelet kube-scheduler kube-proxy
  log "built in $((SECONDS - start)) s"
fi

if [[ ! -x "$BIN/kube-router" ]]; then
  log "building kube-router $KUBE_ROUTER_VERSION (NetworkPolicy only; about 5 minutes)"
  start=$SECONDS
  # Its go.mod has no replace lines, so `go install module@version` builds it as released.
  GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0 GOBIN="$WORK/kube-router" \
    go install -trimpath -ldflags "-s -w" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  mv "$WORK/kube-router/kube-router" "$BIN/kube-router"
  log "built in $((SECONDS - start)) s"
fi

if [[ ! -x "$BIN/pause" ]]; then
  command -v cc >/dev/null || { log "a C compiler is required for the pause binary"; exit 3; }
  src=$(cd "$TOOLS_MOD" && GOFLAGS=-modcacherw go mod download -json k8s.io/kubernetes \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c
  cc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION" -o "$WORK/pause" "$src"
  strip "$WORK/pause"
  install -m 755 "$WORK/pause" "$BIN/pause"
fi

echo "$BIN"
