# The router: the API Rails calls, forwarded to each location's session pod.
# Build from the repository root: docker build -f docker/router.Dockerfile .
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
EXPOSE 8093
CMD ["python3", "-m", "whatsapp_router"]
