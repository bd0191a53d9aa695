# jepa-serve images (BuildKit: the default builder of Docker 23+; DOCKER_BUILDKIT=1 on 20.10). Stages:
#   export       PyTorch: builds the model repository (ONNX + manifest) from the checkpoints in models/
#   runtime-cpu  the server on ONNX Runtime CPU + faiss-cpu; no torch        (the last stage: `docker build .`)
#   runtime-gpu  the server on CUDA 12: onnxruntime-gpu (CUDA + TensorRT EPs), TensorRT, faiss-gpu; no torch
#     docker build --target runtime-gpu -t jepa-serve:gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS export
# CPU wheels of torch: the export runs on CPU, and CUDA torch would add gigabytes to this build stage.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# Where pip finds packages: unset = PyPI. An internal index (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST) or an
# air-gapped wheelhouse (PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:PORT/ with `docker build --network host`);
# a private CA bundle comes in as the build secret `pip_cert` (docs/deploy.md, "Air-gapped build").
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
WORKDIR /src
RUN --mount=type=secret,id=pip_cert if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY models ./models
COPY export ./export
COPY contract ./contract
COPY service ./service
# The project itself (its dependencies are bounded in pyproject.toml): DL3013 cannot see a local path's pins.
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip_cert if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --no-cache-dir ".[cpu,export]" \
 && jepa-export demo --name demo --out /models

# ---------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS venv-gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu's python3 (3.12) follows the base image's security updates; DL3008 would freeze it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY service ./service
# onnxruntime-gpu < 1.27 is the CUDA 12 build; tensorrt-cu12 and faiss-gpu-cu12 match it (pyproject `gpu` extra).
# ONNX Runtime's TensorRT EP links TensorRT 10 (libnvinfer.so.10): keep tensorrt-cu12 below 11.
# Where pip finds packages: unset = PyPI. An internal index (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST) or an
# air-gapped wheelhouse (PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:PORT/ with `docker build --network host`);
# a private CA bundle comes in as the build secret `pip_cert` (docs/deploy.md, "Air-gapped build").
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
RUN --mount=type=secret,id=pip_cert if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[gpu,otel]" "tensorrt-cu12>=10,<11"

FROM ${CUDA_IMAGE} AS runtime-gpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DEBIAN_FRONTEND=noninteractive \
    JEPA_MODEL_REPOSITORY=/models JEPA_DATA_DIR=/data JEPA_LOG_FORMAT=json JEPA_PROVIDERS=auto \
    ORT_TENSORRT_ENGINE_CACHE_ENABLE=1 ORT_TENSORRT_CACHE_PATH=/var/cache/jepa/engines
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin jepa \
 && mkdir -p /data /run/jepa /var/cache/jepa/engines && chown jepa:jepa /data /run/jepa /var/cache/jepa/engines
COPY --from=venv-gpu /opt/venv /opt/venv
COPY --from=export /models /models
# TensorRT's libraries come in the tensorrt-cu12 wheel; ONNX Runtime's TensorRT EP loads them from here.
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.12/site-packages/tensorrt_libs
USER 10001:10001
WORKDIR /data
VOLUME ["/data", "/var/cache/jepa/engines"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["jepa-serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY service ./service
# Where pip finds packages: unset = PyPI. An internal index (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST) or an
# air-gapped wheelhouse (PIP_NO_INDEX=1 PIP_FIND_LINKS=http://127.0.0.1:PORT/ with `docker build --network host`);
# a private CA bundle comes in as the build secret `pip_cert` (docs/deploy.md, "Air-gapped build").
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
RUN --mount=type=secret,id=pip_cert if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[cpu,otel,milvus]"

FROM ${PYTHON_IMAGE} AS runtime-cpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    JEPA_MODEL_REPOSITORY=/models JEPA_DATA_DIR=/data JEPA_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin jepa \
 && mkdir -p /data /run/jepa && chown jepa:jepa /data /run/jepa
COPY --from=venv-cpu /opt/venv /opt/venv
COPY --from=export /models /models
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["jepa-serve", "--host", "0.0.0.0", "--port", "8000"]
