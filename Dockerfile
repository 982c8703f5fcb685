# kvs-analytics consumer image.
#
#   GPU (YOLO on CUDA, the default):
#     docker build -t kvs-analytics .
#   CPU (MediaPipe pose, or no model):
#     docker build -t kvs-analytics:cpu --build-arg BASE=python:3.11-slim --build-arg EXTRAS= .
#   models baked in at build time (comma-separated URLs, each saved in /models by its file name):
#     docker build --build-arg MODELS_URL=https://example.com/yolov8n-pose.pt -t kvs-analytics .
#
#   docker run --gpus all -v $PWD/consumer.yaml:/etc/kvs-analytics/consumer.yaml:ro \
#       [-v $PWD/models:/models:ro] IMAGE run --config /etc/kvs-analytics/consumer.yaml
#
# Config: the file, and/or KVSA_* variables (KVSA_OUTPUTS__S3__BUCKET=...). Models are read from
# /models (mount a folder there, or bake them with MODELS_URL). README.md, "Deploy to AWS", has the rest.

ARG BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- the base: Python (3.12 from Ubuntu on the CUDA image; the slim image's own 3.11) and the
# shared libraries OpenCV (pulled in by MediaPipe and Ultralytics) loads.
FROM ${BASE} AS base
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 ca-certificates \
    && if ! command -v python3 >/dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-venv; fi \
    && rm -rf /var/lib/apt/lists/*

# --- build: the package and its extras in a virtual environment
FROM base AS build
ARG EXTRAS=yolo
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY .ci/constraints.txt .ci/constraints.txt
COPY consumer consumer
COPY processors processors
COPY producer_sim producer_sim
COPY infra infra
RUN pip install --no-cache-dir -c .ci/constraints.txt ".${EXTRAS:+[$EXTRAS]}"

# --- models: baked from MODELS_URL when given, else an empty folder to mount over
FROM base AS models
ARG MODELS_URL=""
RUN mkdir -p /models \
    && if [ -n "$MODELS_URL" ]; then \
         python3 -c 'import os, sys, urllib.request; [urllib.request.urlretrieve(u, os.path.join("/models", os.path.basename(u.split("?")[0]))) for u in sys.argv[1].split(",") if u]' "$MODELS_URL"; \
       fi

# --- the image
FROM base
COPY --from=build /opt/venv /opt/venv
COPY --from=models /models /models
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/kvsa kvsa \
    && mkdir -p /etc/kvs-analytics \
    && chown kvsa:kvsa /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    YOLO_CONFIG_DIR=/home/kvsa/.config/ultralytics \
    KVSA_PROCESSING__POSE__MODELS_DIR=/models \
    KVSA_PROCESSING__YOLO__MODELS_DIR=/models \
    KVSA_HEALTH__PORT=8080
USER 10001:10001
WORKDIR /home/kvsa
# health.port: /healthz (the check below), /readyz, /metrics; with --processes N, child i
# listens on 8080 + i and the check asks child 0
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "consumer"]
CMD ["run", "--config", "/etc/kvs-analytics/consumer.yaml"]
