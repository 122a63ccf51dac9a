# syntax=docker/dockerfile:1
# One image, two processes (run them as separate containers/deployments):
#   docker run IMAGE                                   # python -m gateway serve (the default)
#   docker run -e ADMIN_PORT=8082 IMAGE python -m consumers run \
#       --config /etc/webhook-gateway/config.yaml --admin-port 8082
# Build:  docker build -t webhook-gateway --build-arg VERSION=... --build-arg REVISION=... .
# A plugin (a sink, verifier or token provider distribution) goes into an image of its own:
#   FROM webhook-gateway
#   RUN pip install --no-cache-dir my-sink-plugin==1.2.0     # the image's virtualenv is on PATH
# (docs/plugins.md, "Installing it in the image").
# The config file (/etc/webhook-gateway/config.yaml) is deploy/config/image.yaml (the
# quick start without the inspector); mount your own.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the project and its runtime dependencies only ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/webhook-gateway
ENV PATH=/opt/webhook-gateway/bin:$PATH
WORKDIR /src
# The lock first, so the dependency layer is rebuilt only when the lock changes. It pins
# every runtime dependency with its hashes (`make lock` regenerates it from
# pyproject.toml): two builds of one commit install the same files, and a changed file on
# the index fails the build instead of entering the image.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY webhook_common ./webhook_common
COPY gateway ./gateway
COPY consumers ./consumers
# Not editable and without the [dev] extra: no test or lint tools reach the image.
RUN pip install --no-deps . \
    && python -m compileall -q /opt/webhook-gateway/lib

# -- runtime: slim base, the virtualenv, a non-root user -----------------------------
FROM ${PYTHON_IMAGE} AS runtime
# Set by the build (docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git
# rev-parse HEAD) --build-arg SOURCE=https://...): which code an image runs.
ARG VERSION=0+unknown
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="webhook-gateway" \
      org.opencontainers.image.description="Queue-backed webhook ingestion gateway and consumers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN groupadd --system --gid 10001 webhookgw \
    && useradd --system --uid 10001 --gid webhookgw --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin webhookgw \
    && mkdir -p /var/lib/webhook-gateway \
    && chown webhookgw:webhookgw /var/lib/webhook-gateway
COPY --from=build /opt/webhook-gateway /opt/webhook-gateway
COPY deploy/config/image.yaml /etc/webhook-gateway/config.yaml
ENV PATH=/opt/webhook-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    EVENTS_FILE=/var/lib/webhook-gateway/events.jsonl \
    ADMIN_PORT=8081
WORKDIR /var/lib/webhook-gateway
USER 10001:10001
# 8080 webhooks (gateway), 8081 gateway admin, 8082 consumer admin.
EXPOSE 8080 8081 8082
# Liveness of whichever process runs: /healthz on ADMIN_PORT (8081 for the gateway;
# set ADMIN_PORT=8082 for a consumer, matching its --admin-port). The slim image has
# no curl, so Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ADMIN_PORT', '8081') + '/healthz', timeout=4)" || exit 1
# SIGTERM starts the graceful shutdown of either process (drain, flush, commit).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway", "serve", "--config", "/etc/webhook-gateway/config.yaml", "--port", "8080", "--admin-port", "8081"]
