#!/usr/bin/env bash
# One-shot GPU benchmark (benchmarks/bench_gpu.py) with its dependencies, runnable on a bare GPU image.
#
#   bash benchmarks/bench_gpu.sh --prepare    # HERE, on the dev machine (pip access): fill .pydeps/ and .whl/
#   bash benchmarks/bench_gpu.sh [ARGS...]    # THERE, on the GPU machine, from a copy of the checkout; ARGS go to
#                                             # bench_gpu.py (--smoke: tiny sizes on any device, the CPU rehearsal)
#
# A bare GPU image has torch, torchvision, numpy, Pillow, matplotlib, PyYAML and tensorboard, but not
# siambench itself (not pip-installed there), fvcore/yacs/iopath (which every siambench config needs),
# detectron2, pycocotools or faster-coco-eval. This script therefore
#   * builds the `siambench` namespace in a temporary directory (symlinks siambench/<folder> -> ./<folder>,
#     the layout `pip install -e .` gives) and puts it on PYTHONPATH;
#   * with --prepare, copies the pure-Python dependencies from this Python into .pydeps/ (detectron2
#     included: the pure-Python v0.6 that transfer/d2compat.py patches) and downloads the binary ones as
#     cp312 manylinux wheels into .whl/ (SIAMBENCH_PREPARE_WHEELS=0 skips the download). Both are
#     git-ignored, so copy them to the GPU machine with the checkout.
# Without detectron2 the transfer section is skipped with a message. tests/benchmarks/test_bench_gpu_bare.py
# rehearses the whole thing in a Python holding only the GPU image's packages.
# Results: $OUT/bench_gpu.json if OUT is set, else ./bench_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PURE_DEPS="detectron2 fvcore iopath yacs termcolor omegaconf antlr4 hydra tabulate portalocker tqdm cloudpickle"

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p .pydeps .whl
  if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then
    mkdir -p "$(dirname "$exclude")"
    for d in /.pydeps/ /.whl/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
  fi
  for pkg in $PURE_DEPS; do  # where this Python imports it from (a venv's own site or a .pth-linked one)
    dir=$("$PY" -c "import importlib.util as u, os, sys; s = u.find_spec(sys.argv[1]); \
print(os.path.dirname(s.origin) if s and s.origin and s.submodule_search_locations else '')" "$pkg" 2>/dev/null || true)
    if [[ -n "$dir" && -d "$dir" ]]; then rm -rf ".pydeps/$pkg"; cp -rL "$dir" ".pydeps/$pkg"
    else echo "bench_gpu.sh: $pkg is not importable by $PY (skipped)"; fi
  done
  find .pydeps -name '__pycache__' -prune -exec rm -rf {} +
  if [[ "${SIAMBENCH_PREPARE_WHEELS:-1}" != 0 ]]; then
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl pycocotools faster-coco-eval || echo "bench_gpu.sh: wheel download failed; COCO needs them"
  fi
  du -sh .pydeps .whl
  echo "carry: [\".pydeps\", \".whl\"] and run: bash benchmarks/bench_gpu.sh"
  exit 0
fi

ns=$(mktemp -d "${TMPDIR:-/tmp}/siambench_ns.XXXXXX")  # the `siambench` namespace, without pip install
trap 'rm -rf "$ns"' EXIT
mkdir "$ns/siambench"
for f in pretrain transfer convert benchmarks configs; do ln -s "$PWD/$f" "$ns/siambench/$f"; done
export PYTHONUNBUFFERED=1 PYTHONPATH="$ns${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$ns/site" .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$ns/site" || echo "bench_gpu.sh: installing .whl/ failed; continuing"
fi
[[ -d .pydeps ]] && export PYTHONPATH="$PYTHONPATH:$PWD/.pydeps"
echo "python: $("$PY" -c 'import sys, torch, torchvision; print(sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__)')"
if ! "$PY" -c "import fvcore, yacs" 2>/dev/null; then
  echo "bench_gpu.sh: fvcore/yacs missing: run 'bash benchmarks/bench_gpu.sh --prepare' where pip works and carry .pydeps" >&2
  exit 2
fi
if ! "$PY" -c "import detectron2" 2>/dev/null; then
  echo "bench_gpu.sh: detectron2 is not installed: the transfer section will be skipped" \
       "(run --prepare on a machine with it, then carry .pydeps)"
fi
"$PY" -m siambench.benchmarks.bench_gpu --out "${OUT:-.}/bench_gpu.json" "$@"
