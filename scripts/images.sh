#!/usr/bin/env bash
# Builds the three images (docker/*.Dockerfile) with podman, or docker where that is what
# exists, and prints one line per image: NAME IMAGE SIZE built|cached SECONDS.
#   scripts/images.sh [session-pod|operator|router ...]     (default: all three)
# Cached by content: the sha256 of every build input (the Dockerfile, .dockerignore, the
# files it copies, the base image's id) is the image's label io.whatsapp-sessions.inputs and
# its second tag (src-<hash>); an image with that label is not built again. podman's storage
# is kept between runs, so an unchanged tree builds nothing.
# With podman and no debian:bookworm-slim, scripts/base_image.sh makes it first.
# The machine's CA bundle (WA_BUILD_CA, default /etc/ssl/certs/ca-certificates.crt) is passed
# as a build secret: pip and the wa-js fetch trust it, no layer keeps it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/containers.conf}
ENGINE=${ENGINE:-$(command -v podman || command -v docker || true)}
REGISTRY=${REGISTRY:-ghcr.io/whatsapp-sessions}
TAG=${TAG:-$(awk '/^appVersion:/ { gsub(/"/, "", $2); print $2 }' charts/whatsapp-sessions/Chart.yaml)}
CA=${WA_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
BASE=docker.io/library/debian:bookworm-slim
LABEL=io.whatsapp-sessions.inputs

log() { echo "images.sh: $*" >&2; }
[[ -n $ENGINE ]] || { log "no container engine (podman or docker) found; no image was built"; exit 3; }
"$ENGINE" info >/dev/null 2>&1 || { log "$ENGINE does not answer (no daemon?); no image was built"; exit 3; }

if [[ $(basename "$ENGINE") == podman ]]; then
  "$ROOT/scripts/base_image.sh"
fi
base_id=$("$ENGINE" image inspect --format '{{.Id}}' "$BASE")

inputs() { # NAME -> the files its Dockerfile copies, plus itself
  local files=(".dockerignore" "docker/$1.Dockerfile" pyproject.toml session_pod whatsapp_common operator router)
  [[ $1 == session-pod ]] && files+=(package-lock.json docker/wajs_bundle.py)
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -- "${files[@]}"
  else # a source tree without git: the same files, less the caches .dockerignore drops
    find "${files[@]}" -type f
  fi | grep -v -e '__pycache__' -e '\.pyc$' -e '\.egg-info/' | sort
}

content_hash() { # NAME -> sha256 of its inputs' names and contents and of the base image
  { echo "base $base_id"; inputs "$1" | while read -r f; do [[ -f $f ]] && sha256sum "$f"; done; } \
    | sha256sum | cut -c1-64
}

size() { "$ENGINE" image inspect --format '{{.Size}}' "$1" | numfmt --to=si --suffix=B; }

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(session-pod operator router)
for name in "${names[@]}"; do
  [[ -f docker/$name.Dockerfile ]] || { log "no docker/$name.Dockerfile"; exit 2; }
  hash=$(content_hash "$name")
  image="$REGISTRY/$name:$TAG"
  start=$SECONDS
  have=$("$ENGINE" image inspect --format "{{ index .Labels \"$LABEL\" }}" "$image" 2>/dev/null || true)
  if [[ $have == "$hash" ]]; then
    state=cached
  else
    log "building $image (inputs $hash)"
    secret=()
    [[ -s $CA ]] && secret=(--secret "id=build-ca,src=$CA")
    # --network=host: RUN steps reach Debian and PyPI without a bridge or NAT rules of podman's.
    "$ENGINE" build -q --network=host -f "docker/$name.Dockerfile" "${secret[@]}" \
      --build-arg "VERSION=$TAG" --label "$LABEL=$hash" \
      -t "$image" -t "$REGISTRY/$name:src-${hash:0:16}" . >/dev/null
    state=built
    # The images of older inputs, and the build stages, are of no further use.
    for old in $("$ENGINE" images --format '{{.Repository}}:{{.Tag}}' "$REGISTRY/$name"); do
      [[ $old == *:src-* && $old != *:src-${hash:0:16} ]] && "$ENGINE" rmi "$old" >/dev/null
    done
    "$ENGINE" image prune -f --filter "label=io.whatsapp-sessions.stage=build" >/dev/null
  fi
  echo "$name $REGISTRY/$name:src-${hash:0:16} $(size "$image") $state $((SECONDS - start))"
done
