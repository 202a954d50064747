# Sourced by control_plane.sh and node_binaries.sh: the Kubernetes version pinned by
# tools/k8s/go.mod, and one way to build its commands from that module.
TOOLS_MOD="$ROOT/tools/k8s"
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$TOOLS_MOD/go.mod")
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)

# build_k8s_commands CACHE BIN WORK NAME... builds k8s.io/kubernetes/cmd/NAME for each NAME,
# with the version stamped in (else /version says v0.0.0-master, which breaks Helm's
# kubeVersion checks), using Go's caches under CACHE, and moves the binaries into BIN.
build_k8s_commands() {
  local cache=$1 bin=$2 work=$3
  shift 3
  local ldflags="-s -w" v name packages=()
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$K8S_MINOR"
    ldflags+=" -X $v.gitTreeState=clean"
  done
  for name in "$@"; do packages+=("k8s.io/kubernetes/cmd/$name"); done
  (
    cd "$TOOLS_MOD"
    export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
    GOFLAGS="-modcacherw -mod=readonly -buildvcs=false" CGO_ENABLED=0 \
      go build -trimpath -ldflags "$ldflags" -o "$work/go/" "${packages[@]}"
  )
  for name in "$@"; do mv "$work/go/$name" "$bin/"; done
}
