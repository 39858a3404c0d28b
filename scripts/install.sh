#!/usr/bin/env bash
# Install everything the project needs on a fresh machine: a JDK and Maven (for the
# local Kafka broker), Prometheus (the test that scrapes a worker) and iptables (the partition
# tests) if missing, then a virtualenv with the pinned Python packages.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  echo "installing a JDK and Maven (needed to fetch and run the Kafka broker)..."
  apt-get update -qq && apt-get install -y -qq default-jre-headless maven >/dev/null
fi

if ! command -v prometheus >/dev/null; then
  echo "installing Prometheus (tests/test_prometheus.py scrapes a worker with it)..."
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Only the binary is wanted: the package's service would listen on every interface.
  if command -v systemctl >/dev/null; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

if ! command -v iptables >/dev/null; then
  echo "installing iptables (tests/regions partition tests cut links and add loss with it)..."
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q pip==26.3
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
# compile the default ensemble's kernel once, into numba's cache (a worker's first batch would otherwise wait for it)
.venv/bin/python -c 'import models.detectors.fast_ensemble as f; f.warm_up()'
.venv/bin/python -c 'import models.forecasting.fast_forecast as f; f.warm_up()'  # and the forecasting kernel
echo "installed: $(.venv/bin/m1 --help >/dev/null && echo 'm1 CLI ok')"
