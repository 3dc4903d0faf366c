# Sightline API image.
#   CPU (default):  docker build -t sightline .
#   GPU:            docker build --build-arg BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 -t sightline:gpu .
#                   docker run --gpus all -p 8000:8000 sightline:gpu
# The image installs with the Makefile's own `make install` (the tested path is the shipped path):
# the server only, no torch. onnxruntime-gpu uses CUDA when the base image and `--gpus` provide it,
# and falls back to the CPU otherwise (GET /models says which provider each model runs on).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# python3.11 + venv + make on either base (the CUDA base is Ubuntu with no Python).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make curl ca-certificates libgomp1 \
 && (command -v python3.11 >/dev/null || apt-get install -y --no-install-recommends software-properties-common gpg-agent \
     && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
     && apt-get install -y --no-install-recommends python3.11 python3.11-venv) \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/sightline
COPY pyproject.toml README.md Makefile ./
COPY app ./app
COPY training/__init__.py ./training/__init__.py
RUN make install PYTHON=python3.11
COPY models ./models

RUN useradd --system --uid 10001 sightline && mkdir -p /data && chown sightline /data
USER sightline
ENV SIGHTLINE_HOST=0.0.0.0 SIGHTLINE_PORT=8000 SIGHTLINE_MODELS_DIR=/srv/sightline/models SIGHTLINE_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD [".venv/bin/python", "-m", "app"]
