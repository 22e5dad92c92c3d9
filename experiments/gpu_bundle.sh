#!/usr/bin/env bash
# Build .gpu-carry/ (ignored) for experiments/gpu_check.sh on a lent GPU machine, which has torch,
# pandas, pyarrow and aiohttp but not ray, optuna or fvcore, and no package registry; a run may carry
# at most 64 MiB (see /work/shared/design/gpu-notes.md). Contents:
#   site.tar.xz          cp312 manylinux wheels of what cspnas needs beyond that, unpacked and trimmed
#                        (ray without its Java jars, rllib and *.js.map), as one archive
#   cifar10-jpeg.tar.gz  the CIFAR-10 tarball from ../shared/data (or $CSPNAS_CIFAR10_JPEG)
# Versions are this environment's (pip download needs a package index; fvcore and iopath are sdists,
# built into wheels here with `pip wheel --no-deps`). Usage:  bash experiments/gpu_bundle.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
PYVER="${1:-3.12}"
OUT=.gpu-carry
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
BINARY=(ray optuna alembic sqlalchemy mako colorlog pydantic pydantic-core annotated-types typing-inspection
        typing_extensions jsonschema jsonschema-specifications referencing rpds-py tensorboardX termcolor yacs
        psutil safetensors PyYAML rich markdown-it-py mdurl pygments msgpack filelock protobuf click tabulate
        portalocker tqdm attrs packaging)
SPECS=()
for p in "${BINARY[@]}"; do SPECS+=("$p==$(version "$p")"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$WORK/wheels" "${SPECS[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/wheels" "fvcore==$(version fvcore)" "iopath==$(version iopath)"
mkdir -p "$WORK/site"
for w in "$WORK"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$w" "$WORK/site"; done
# Tune runs without these (about 65 MB unpacked): Java workers, RLlib, Serve, the LLM libraries, the
# dashboard's web client and source maps
rm -rf "$WORK"/site/ray/jars "$WORK"/site/ray/rllib "$WORK"/site/ray/serve "$WORK"/site/ray/llm \
       "$WORK"/site/ray/dashboard/client
find "$WORK/site" -name "*.js.map" -delete
find "$WORK/site" -name "__pycache__" -type d -prune -exec rm -rf {} +
chmod -R u+rwX,go+rX "$WORK/site"
find "$WORK/site/ray" -path "*/core/src/ray/*" -type f -exec chmod +x {} +  # raylet, gcs_server
mkdir -p "$OUT"
tar -cf - -C "$WORK" site | xz -T0 -6 > "$OUT/site.tar.xz"
TARBALL="${CSPNAS_CIFAR10_JPEG:-../shared/data/cifar10-jpeg.tar.gz}"
[ -f "$TARBALL" ] || TARBALL=/work/shared/data/cifar10-jpeg.tar.gz
cp "$TARBALL" "$OUT/cifar10-jpeg.tar.gz"
SIZE=$(du -cb "$OUT"/* | tail -1 | cut -f1)
echo "gpu_bundle: $OUT is $((SIZE / 1048576)) MiB (limit 64): $(ls "$OUT" | tr '\n' ' ')"
[ "$SIZE" -lt $((64 * 1048576)) ] || { echo "gpu_bundle: over the 64 MiB carry limit" >&2; exit 1; }
