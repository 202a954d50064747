# The operator: kopf reconciling WhatsAppSessions into session pods.
# Build from the repository root: docker build -f docker/operator.Dockerfile .
FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home app
WORKDIR /app
COPY pyproject.toml ./
COPY session_pod session_pod
COPY operator operator
COPY router router
RUN pip install --no-cache-dir . && rm -rf /app/*
ENV PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
# The chart passes --peering, --priority and --namespace.
CMD ["python3", "-m", "kopf", "run", "--module=whatsapp_operator.handlers", \
     "--liveness=http://0.0.0.0:8080/healthz", "--log-format=json"]
