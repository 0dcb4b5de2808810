#!/usr/bin/env bash
# GPU checks in one script, sized for one call of at most 9 minutes on one H100 / H200:
#   1. the GPU-marked tests (bf16 steps, cached = online logits, DALI mixed vs CPU decode)
#   2. tools/bench.sh: a MobileNetV3-Large teacher at 224 (1 epoch), cache-teacher (its wall
#      time in cache_teacher.log; teacher_cache vs teacher_bound in bench_kd_*.json), bench
#      loader (every renderer, DALI on CUDA included), bench kd per renderer (decoded, dali)
#      with every student path on the compiled step (COMPILE=on) and a sweep of STUDENTS
#      students, stepped one by one and stacked (STACK=on), against a lone compiled student
#   3. large batches: bench kd --paths student (student bound and cached KD, eager and
#      compiled) at each batch size in LARGE_BATCHES -> bench_kd_b<B>.json
#   4. tools/vww_epoch.sh: the 30-epoch distill over a synthetic set of VWW's sizes
#      (train_wall_s in vww_epoch_summary.json); SKIP_VWW=1 leaves it out
# Everything is written as JSON / logs into OUT_DIR (docs/gpu-<date>/).
#
#   tools/gpu_check.sh OUT_DIR
#
# ALLOW_CPU=1 runs it without CUDA; TINY=1 shrinks every size (a few minutes on a CPU) and
# traces the compiled steps with Dynamo only (no Inductor code generation: the keys and the
# plumbing are what a CPU run checks, not the speed).
#
# vwwfast and its dependencies must be importable: installed, or on PYTHONPATH, or
# installable from local wheels with WHEELS=/path/to/wheels. DALI's wheel (~200 MB) is more
# than one device call carries: split it (`split -b 60M nvidia_dali*.whl WHEEL.part-`), carry
# one part per call into WHEELS, back to back while the machine is warm; the parts are
# joined here (`*.whl.part-*` -> `*.whl`) before installing.
set -uo pipefail
OUT=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHON=$PY
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# one compile cache for every step (the same student graph recurs across them)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/vwwfast-inductor}
if [ "${TINY:-0}" = 1 ]; then
    export N_TRAIN=${N_TRAIN:-48} N_VAL=${N_VAL:-24} BATCH=${BATCH:-8} BATCHES=${BATCHES:-1}
    export WORKERS=${WORKERS:-0} VIEWS=${VIEWS:-1} STUDENTS=${STUDENTS:-2} TEACHER_BATCH=${TEACHER_BATCH:-16}
    LARGE_BATCHES=${LARGE_BATCHES:-16}
    export TORCH_COMPILE_OVERRIDE_BACKENDS=${TORCH_COMPILE_OVERRIDE_BACKENDS:->=0:eager}
fi
LARGE_BATCHES=${LARGE_BATCHES:-1024 2048}
if [ -n "${WHEELS:-}" ]; then
    for first in "$WHEELS"/*.whl.part-aa; do
        [ -e "$first" ] && cat "${first%-aa}"-* > "${first%.part-aa}"
    done
    $PY -m pip install -q --no-index --find-links "$WHEELS" nvidia-dali-cuda130 webdataset zarr
fi
$PY - <<'PY' | tee "$OUT/env.txt"
import torch, zarr, webdataset, vwwfast
try:
    import nvidia.dali
    dali = nvidia.dali.__version__
except ImportError:
    dali = "missing (the dali renderer falls back to PIL; DALI checks are skipped)"
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
print("dali", dali, "zarr", zarr.__version__, "vwwfast", vwwfast.__version__)
PY
[ "${ALLOW_CPU:-0}" = 1 ] || $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device"; exit 1; }

status=0
export WORK=${WORK:-$(mktemp -d)}
echo; echo "== GPU tests ($(date +%T))"
$PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" || status=1
COMPILE=${COMPILE:-on} STACK=${STACK:-on} STUDENTS=${STUDENTS:-8} bash tools/bench.sh "$OUT" || status=1
for b in $LARGE_BATCHES; do
    echo; echo "== bench kd, batch $b, student paths ($(date +%T))"
    $PY -m vwwfast bench kd --shards "$WORK/shards" --teacher "$WORK/teacher.pt" --cache "$WORK/t.zarr" \
        --renderer decoded --decoded-size 224 --paths student --batch-size "$b" \
        --batches "${BATCHES:-15}" --compile "${COMPILE:-on}" --json "$OUT/bench_kd_b$b.json" \
        2>&1 | tee "$OUT/bench_kd_b$b.log" || status=1
done
[ "${SKIP_VWW:-0}" = 1 ] || bash tools/vww_epoch.sh "$OUT" || status=1
echo "== done (status $status)"
exit $status
