#!/usr/bin/env bash
# GPU checks in one script: the GPU-marked tests, then tools/bench.sh (both benchmarks on a
# synthetic set made here), everything written as JSON / logs into OUT_DIR. Sized for a few
# minutes on one H100.
#
#   tools/gpu_check.sh OUT_DIR
#
# vwwfast and its dependencies must be importable: installed, or on PYTHONPATH (a machine
# without a package index can unpack wheels into a folder and point PYTHONPATH at it), or
# installable from local wheels with WHEELS=/path/to/wheels.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" nvidia-dali-cuda130 webdataset zarr
fi
$PY - <<'EOF' | tee "$OUT/env.txt"
import torch, zarr, webdataset, vwwfast
try:
    import nvidia.dali
    dali = nvidia.dali.__version__
except ImportError:
    dali = "missing (the dali renderer falls back to PIL; DALI checks are skipped)"
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
print("dali", dali, "zarr", zarr.__version__, "vwwfast", vwwfast.__version__)
EOF
[ "${ALLOW_CPU:-0}" = 1 ] || $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device"; exit 1; }

status=0
echo; echo "== GPU tests ($(date +%T))"
$PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" || status=1
bash tools/bench.sh "$OUT" || status=1
exit $status
