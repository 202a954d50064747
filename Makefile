# Container images and chart chores. `make images` needs docker or podman.
REGISTRY ?= ghcr.io/whatsapp-sessions
TAG ?= $(shell awk '/^appVersion:/ { gsub(/"/, "", $$2); print $$2 }' charts/whatsapp-sessions/Chart.yaml)
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

.PHONY: images chart-crds

# The three images (docker/*.Dockerfile), built from the repository root.
images:
ifeq ($(ENGINE),)
	@echo "make images: no container engine (docker or podman) found; no image was built." >&2
	@exit 1
else
	@$(ENGINE) info >/dev/null 2>&1 || { echo "make images: $(ENGINE) is installed but does not answer (no daemon?); no image was built." >&2; exit 1; }
	$(ENGINE) build -f docker/session-pod.Dockerfile -t $(REGISTRY)/session-pod:$(TAG) .
	$(ENGINE) build -f docker/operator.Dockerfile -t $(REGISTRY)/operator:$(TAG) .
	$(ENGINE) build -f docker/router.Dockerfile -t $(REGISTRY)/router:$(TAG) .
endif

# crds/ is the one source of the CRDs; the chart holds copies (tests/test_chart.py compares them).
chart-crds:
	cp crds/*.yaml charts/whatsapp-sessions/crds/
