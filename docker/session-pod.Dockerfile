# The session pod: one location's WhatsApp Web session (python -m session_pod).
# Build from the repository root with scripts/images.sh (or `make images`): it passes this
# machine's CA, if any, as a build secret. Plain `podman build -f docker/session-pod.Dockerfile .`
# works where PyPI's and npm's certificates are trusted as they are.
# Debian only: FROM debian:bookworm-slim, Debian's chromium (no browser download), a
# venv with `.[session-pod]`, and the pinned wa-js bundle (package-lock.json's integrity).

FROM docker.io/library/debian:bookworm-slim AS build
LABEL io.whatsapp-sessions.stage=build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package-lock.json docker/wajs_bundle.py ./
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export SSL_CERT_FILE=/run/secrets/build-ca; fi \
    && python3 wajs_bundle.py package-lock.json /opt/wa-js/wppconnect-wa.js
COPY pyproject.toml ./
# The shared package and this program's own: never the other programs' code.
COPY whatsapp_common whatsapp_common
COPY session_pod session_pod
# The CA is mounted for this one step (a build secret): it is in no layer.
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check '.[session-pod]' \
    && /opt/venv/bin/pip uninstall -q -y pip setuptools \
    && /opt/venv/bin/python3 -m compileall -q /opt/venv/lib

FROM docker.io/library/debian:bookworm-slim
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/whatsapp-sessions/whatsapp-sessions
LABEL org.opencontainers.image.title="whatsapp-sessions session pod" \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.source=$SOURCE \
      org.opencontainers.image.licenses=Apache-2.0
# chromium-headless-shell: the pod's browser (Debian's, the same version as chromium; about
# 160 MB less memory per pod, README "Memory levers"). libatomic1: Playwright's bundled node
# driver needs it and Debian's Chromium does not pull it in.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 chromium-headless-shell \
        fonts-liberation libatomic1 \
    && rm -rf /var/lib/apt/lists/* /var/log/*.log /var/cache/debconf/*-old
# The operator runs session pods as uid 10001 (runAsUser, fsGroup).
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent app \
    && mkdir /data && chown app:app /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/wa-js /opt/wa-js
# HOME on /tmp: the pod mounts an emptyDir there, so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    WAJS_BUNDLE=/opt/wa-js/wppconnect-wa.js \
    CHROMIUM_PATH=/usr/lib/chromium/chromium-headless-shell \
    DATA_DIR=/data \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8093
CMD ["python3", "-m", "session_pod"]
