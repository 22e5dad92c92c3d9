#!/usr/bin/env bash
# GPU check (see experiments/gpu_check.py): run from anywhere; arguments pass through, e.g.
#   bash experiments/gpu_check.sh                      # the evidence run (steps + 200-trial search), ~12.5 min
#   bash experiments/gpu_check.sh --data-dir /data/cifar10-jpeg --max-minutes 8
#   bash experiments/gpu_check.sh --smoke --out /tmp/gpu_check.json
# On a lent GPU machine, carry .gpu-carry (built by experiments/gpu_bundle.sh): its site.tar.xz is
# unpacked to a temporary folder put first on PYTHONPATH, its CIFAR-10 tarball is the data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
if [ -f .gpu-carry/site.tar.xz ]; then
    SITE="$(mktemp -d)"
    tar -xJf .gpu-carry/site.tar.xz -C "$SITE"
    export PYTHONPATH="$SITE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$SITE/site/bin:$PATH"
fi
if [ -f .gpu-carry/cifar10-jpeg.tar.gz ] && [ -z "${CSPNAS_CIFAR10_JPEG:-}" ]; then
    export CSPNAS_CIFAR10_JPEG="$PWD/.gpu-carry/cifar10-jpeg.tar.gz"
fi
exec "$PYTHON" experiments/gpu_check.py "$@"
