#!/usr/bin/env bash
# GPU check (see experiments/gpu_check.py): run from anywhere; arguments pass through, e.g.
#   bash experiments/gpu_check.sh --data-dir /data/cifar10-jpeg --max-minutes 8
#   bash experiments/gpu_check.sh --smoke --out /tmp/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
exec "$PYTHON" experiments/gpu_check.py "$@"
