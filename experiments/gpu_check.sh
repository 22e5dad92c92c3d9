#!/usr/bin/env bash
# GPU check (see experiments/gpu_check.py): run from anywhere; arguments pass through, e.g.
#   bash experiments/gpu_check.sh                      # the evidence run (steps + 200-trial search), 9 min
#   bash experiments/gpu_check.sh --data-dir /data/cifar10-jpeg --max-minutes 8
#   bash experiments/gpu_check.sh --smoke --out /tmp/gpu_check.json
# On a lent GPU machine, carry .gpu-carry (built by experiments/gpu_bundle.sh): its site.tar.xz is
# unpacked to a temporary folder put first on PYTHONPATH, its CIFAR-10 tarball is the data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 || echo python )}"
if [ -f .gpu-carry/site.tar.xz ]; then
    SITE="$(mktemp -d)"
    # Python's tarfile, not tar -J: the machine may lack the xz binary
    "$PYTHON" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='tar')" \
        .gpu-carry/site.tar.xz "$SITE"
    export PYTHONPATH="$SITE/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f .gpu-carry/cifar10-jpeg.tar.gz ] && [ -z "${CSPNAS_CIFAR10_JPEG:-}" ]; then
    export CSPNAS_CIFAR10_JPEG="$PWD/.gpu-carry/cifar10-jpeg.tar.gz"
fi
exec "$PYTHON" experiments/gpu_check.py "$@"
