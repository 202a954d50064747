# The operator: kopf reconciling WhatsAppSessions into session pods.
# Build from the repository root with scripts/images.sh (or `make images`): it passes this
# machine's CA, if any, as a build secret. Plain `podman build -f docker/operator.Dockerfile .`
# works where PyPI's certificate is trusted as it is.
# Debian only: FROM debian:bookworm-slim (scripts/base_image.sh makes it where no registry
# can be reached), Debian's python3, a venv with `.[operator]`: no Playwright, no Chromium.

FROM docker.io/library/debian:bookworm-slim AS build
LABEL io.whatsapp-sessions.stage=build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY session_pod session_pod
COPY whatsapp_common whatsapp_common
COPY operator operator
COPY router router
# The CA is mounted for this one step (a build secret): it is in no layer.
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[operator]' \
    && /opt/venv/bin/pip uninstall -q -y pip setuptools \
    && /opt/venv/bin/python3 -m compileall -q /opt/venv/lib

FROM docker.io/library/debian:bookworm-slim
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/whatsapp-sessions/whatsapp-sessions
LABEL org.opencontainers.image.title="whatsapp-sessions operator" \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.licenses=Apache-2.0
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
# The chart passes --peering, --priority and --namespace.
CMD ["python3", "-m", "kopf", "run", "--module=whatsapp_operator.handlers", \
     "--liveness=http://0.0.0.0:8080/healthz", "--log-format=json"]
