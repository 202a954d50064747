# The session pod: one location's WhatsApp Web session (python -m session_pod).
# Build from the repository root: docker build -f docker/session-pod.Dockerfile .
# No browser download: Chromium is Debian's package, wa-js the pinned npm bundle.

# The pinned wa-js bundle (package-lock.json), fetched by npm; only its one file is kept.
FROM node:20-bookworm-slim AS wajs
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation \
    && rm -rf /var/lib/apt/lists/*
# The operator runs session pods as uid 10001 (runAsUser, fsGroup).
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home app
WORKDIR /app
COPY pyproject.toml ./
COPY session_pod session_pod
COPY operator operator
COPY router router
RUN pip install --no-cache-dir . && rm -rf /app/*
COPY --from=wajs /build/node_modules/@wppconnect/wa-js/dist/wppconnect-wa.js /opt/wa-js/wppconnect-wa.js
ENV WAJS_BUNDLE=/opt/wa-js/wppconnect-wa.js \
    CHROMIUM_PATH=/usr/bin/chromium \
    DATA_DIR=/data \
    PYTHONUNBUFFERED=1
RUN mkdir /data && chown app:app /data
USER 10001:10001
EXPOSE 8093
CMD ["python3", "-m", "session_pod"]
