#!/usr/bin/env bash
# One-shot GPU benchmark (benchmarks/bench_gpu.py) with its dependencies.
#
#   bash benchmarks/bench_gpu.sh --prepare    # HERE, on the dev machine (pip access): fill .pydeps/ and .whl/
#   bash benchmarks/bench_gpu.sh [ARGS...]    # THERE, on the GPU machine, from the repo root; ARGS go to bench_gpu.py
#
# A bare GPU machine has torch/torchvision but not fvcore/yacs/iopath (which every siambench config
# needs), detectron2, pycocotools or faster-coco-eval. --prepare copies the pure-Python ones from this
# venv into .pydeps/ (detectron2 included: the pure-Python v0.6 that transfer/d2compat.py patches) and
# downloads the binary ones as cp312 manylinux wheels into .whl/; both are git-ignored, so carry them
# to the GPU machine too (a checkout copy has only tracked files). Without detectron2 the transfer and COCO sections are
# skipped with a message. Results: $OUT/bench_gpu.json if OUT is set, else ./bench_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p .pydeps .whl
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  for d in /.pydeps/ /.whl/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for pkg in detectron2 fvcore iopath yacs termcolor omegaconf antlr4 hydra tabulate portalocker; do
    [[ -d "$site/$pkg" ]] && cp -r "$site/$pkg" .pydeps/ || echo "bench_gpu.sh: $pkg not in $site (skipped)"
  done
  find .pydeps -name '__pycache__' -prune -exec rm -rf {} +
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pycocotools faster-coco-eval || echo "bench_gpu.sh: wheel download failed; COCO needs them"
  du -sh .pydeps .whl
  echo "carry: [\".pydeps\", \".whl\"] and run: bash benchmarks/bench_gpu.sh"
  exit 0
fi

export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || echo "bench_gpu.sh: installing .whl/ failed; continuing"
fi
[[ -d .pydeps ]] && export PYTHONPATH="$PYTHONPATH:$PWD/.pydeps"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
df -h /dev/shm 2>/dev/null | tail -1 | awk '{print "shared memory (DataLoader batches): " $2}' || true
if ! "$PY" -c "import fvcore, yacs" 2>/dev/null; then
  echo "bench_gpu.sh: fvcore/yacs missing: run 'bash benchmarks/bench_gpu.sh --prepare' where pip works and carry .pydeps" >&2
  exit 2
fi
if ! "$PY" -c "import detectron2" 2>/dev/null; then
  echo "bench_gpu.sh: detectron2 is not installed: transfer and COCO sections will be skipped" \
       "(run --prepare on a machine with it, then carry .pydeps)"
fi
"$PY" -m benchmarks.bench_gpu --out "${OUT:-.}/bench_gpu.json" "$@"
