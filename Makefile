# Container images and chart chores. `make images` needs podman (or docker).
.PHONY: images chart-crds

# The three images (docker/*.Dockerfile), each built only when its inputs changed
# (scripts/images.sh: content hash label, base image made by scripts/base_image.sh).
# REGISTRY, TAG and ENGINE are read from the environment, e.g. `make images ENGINE=docker`.
images:
	ENGINE=$(ENGINE) REGISTRY=$(REGISTRY) TAG=$(TAG) scripts/images.sh

# crds/ is the one source of the CRDs; the chart holds copies (tests/test_chart.py compares them).
chart-crds:
	cp crds/*.yaml charts/whatsapp-sessions/crds/
