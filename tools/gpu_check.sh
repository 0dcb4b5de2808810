#!/usr/bin/env bash
# GPU checks in one script, sized for one call of at most 9 minutes on one H100 / H200:
#   1. the GPU-marked tests (bf16 steps, cached = online logits, DALI mixed vs CPU decode)
#   2. tools/bench.sh: bench loader (every renderer) and bench kd (decoded and dali) with
#      the compiled step (COMPILE=on) and a sweep of STUDENTS students
#   3. tools/vww_epoch.sh: the 30-epoch distill over a synthetic set of VWW's sizes
# Everything is written as JSON / logs into OUT_DIR.
#
#   tools/gpu_check.sh OUT_DIR
#
# vwwfast and its dependencies must be importable: installed, or on PYTHONPATH, or
# installable from local wheels with WHEELS=/path/to/wheels. DALI's wheel (~200 MB) is more
# than one device call carries: split it (`split -b 60M nvidia_dali*.whl WHEEL.part-`), carry
# one part per call into WHEELS, back to back while the machine is warm; the parts are
# joined here (`*.whl.part-*` -> `*.whl`) before installing.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    for first in "$WHEELS"/*.whl.part-aa; do
        [ -e "$first" ] && cat "${first%-aa}"-* > "${first%.part-aa}"
    done
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
COMPILE=${COMPILE:-on} STUDENTS=${STUDENTS:-8} bash tools/bench.sh "$OUT" || status=1
[ "${SKIP_VWW:-0}" = 1 ] || bash tools/vww_epoch.sh "$OUT" || status=1
exit $status
