#!/usr/bin/env bash
# Regenerate the image's lock files (pip --require-hashes) from pyproject.toml.
#
#   bash deploy/tools/lock.sh            # keeps the versions the current locks or .venv pin
#   UPGRADE=1 bash deploy/tools/lock.sh  # newest versions pyproject.toml allows
#
# Writes, for CPython 3.11 on x86_64 manylinux (the image's python:3.11-slim base):
#   deploy/docker/requirements-cuda.lock  every runtime dependency, torch from PyPI with its
#                                         CUDA wheels (nvidia-*, triton): the CUDA image
#   deploy/docker/requirements-cpu.lock   the same without torch and its CUDA wheels: the CPU
#                                         image installs torch==<pinned>+cpu from PyTorch's
#                                         CPU index on top (Dockerfile, TORCH_VARIANT=cpu)
# Both include the build backend (build-requirements.in). Resolution reads package metadata
# and index hashes only: no wheel is downloaded. Versions already in .venv are preferred, so
# the image runs what the tests ran. uv comes from a throwaway venv, not the project's.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.9
out=deploy/docker
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m venv "$tmp/uv" && "$tmp/uv/bin/pip" install --quiet "uv==$UV_VERSION"
  uv="$tmp/uv/bin/uv"
fi

constraints=()
if [ -z "${UPGRADE:-}" ] && [ -x .venv/bin/pip ]; then
  .venv/bin/pip freeze --exclude-editable | grep -v -e '^-e' -e ' @ ' > "$out/.venv-pins.txt"
  constraints=(--constraint "$out/.venv-pins.txt")
fi
trap 'rm -f "$out/.venv-pins.txt"' EXIT

common=(pyproject.toml "$out/build-requirements.in" --generate-hashes --no-header
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet --no-annotate "${constraints[@]}")
[ -n "${UPGRADE:-}" ] && common+=(--upgrade)

"$uv" pip compile "${common[@]}" --output-file "$out/requirements-cuda.lock"

# torch and everything only torch's CUDA build needs: the names in the CUDA lock.
no_emit=(--no-emit-package torch)
while read -r name; do
  no_emit+=(--no-emit-package "$name")
done < <(grep -oE '^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==' "$out/requirements-cuda.lock" \
  | tr -d '=')
"$uv" pip compile "${common[@]}" "${no_emit[@]}" --output-file "$out/requirements-cpu.lock"

for lock in "$out"/requirements-*.lock; do
  echo "$lock: $(grep -cE '^[a-z0-9]' "$lock") packages"
done
grep -E '^torch==' "$out/requirements-cuda.lock"
