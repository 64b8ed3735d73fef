#!/usr/bin/env bash
# Install the deploy checks' tools that are not Python packages (make tools; make test runs it).
#
#   bash deploy/tools/install-tools.sh [BIN_DIR]     # BIN_DIR for kube-score: default .venv/bin
#
# - promtool (promtool check/test rules): Debian's `prometheus` package, with apt-get as root.
# - kube-score (manifest scoring): built from the Go module proxy with `go install`, into
#   BIN_DIR.
# hadolint, kubernetes-validate and check-jsonschema come from PyPI with the dev extra.
# Each tool is skipped when present; when one cannot be installed the script fails and says
# what to do, since the tests that use it fail without it (they never skip).
set -euo pipefail

KUBE_SCORE_VERSION=v1.20.0
bin_dir=${1:-.venv/bin}

fail() { echo "install-tools: $*" >&2; exit 1; }

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    fail "promtool is missing: run 'apt-get install prometheus' as root, or put a promtool" \
      "binary (from a Prometheus release) on the PATH"
  fi
  command -v apt-get >/dev/null 2>&1 || fail "promtool is missing and apt-get is not available"
  echo "install-tools: apt-get install prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null 2>&1 || fail "the prometheus package installed no promtool"
fi

if [ ! -x "$bin_dir/kube-score" ] && ! command -v kube-score >/dev/null 2>&1; then
  command -v go >/dev/null 2>&1 || fail "kube-score is missing and there is no Go toolchain" \
    "to build it: install Go, or put kube-score $KUBE_SCORE_VERSION on the PATH"
  mkdir -p "$bin_dir"
  echo "install-tools: go install kube-score@$KUBE_SCORE_VERSION into $bin_dir"
  GOBIN="$(cd "$bin_dir" && pwd)" GOFLAGS=-mod=mod \
    go install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
fi

echo "install-tools: $(promtool --version 2>&1 | head -n1)"
echo "install-tools: kube-score in $bin_dir or on the PATH"
