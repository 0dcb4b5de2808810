#!/usr/bin/env bash
# GPU checks in one script: the GPU-marked tests and both benchmarks on a synthetic set made
# here, everything written as JSON / logs into OUT_DIR. Sized for a few minutes on one H100.
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

V="$PY -m vwwfast"
W=${WORK:-$(mktemp -d)}
N_TRAIN=${N_TRAIN:-6000}
N_VAL=${N_VAL:-1000}
BATCH=${BATCH:-512}
status=0
step() { echo; echo "== $1 ($(date +%T))"; }

step "GPU tests"
$PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" || status=1

step "synthetic set: $N_TRAIN train / $N_VAL val, shards at 224 px"
$V synth --out "$W/coco" --train "$N_TRAIN" --val "$N_VAL" || exit 1
$V shard --coco-root "$W/coco" --out "$W/shards" --size 224 --workers "$(nproc)" 2>&1 | tee "$OUT/shard.log" || exit 1

step "teacher (1 epoch at 224 px: speed does not depend on its accuracy)"
$V train-teacher --shards "$W/shards" --input-size 224 --epochs 1 --batch-size 256 \
    --runs-dir "$W/runs" --bn-settle 0 2>&1 | tee "$OUT/train_teacher.log" || exit 1
T=$(ls -d "$W"/runs/*_teacher_* | tail -n 1)/model.pt
step "cache-teacher: 2 views"
/usr/bin/time -v $V cache-teacher --shards "$W/shards" --teacher "$T" --views 2 --out "$W/t.zarr" \
    --batch-size "$BATCH" 2>&1 | tee "$OUT/cache_teacher.log" || exit 1

step "bench loader"
$V bench loader --shards "$W/shards" --renderer all --batch-size "$BATCH" --json "$OUT/bench_loader.json" \
    2>&1 | tee "$OUT/bench_loader.log" || status=1
for r in ${KD_RENDERERS:-decoded dali}; do
    step "bench kd ($r)"
    $V bench kd --shards "$W/shards" --teacher "$T" --cache "$W/t.zarr" --renderer "$r" \
        --batch-size "$BATCH" --batches 15 --workers 8 --decoded-size 224 --json "$OUT/bench_kd_$r.json" \
        2>&1 | tee "$OUT/bench_kd_$r.log" || status=1
done
step "done (status $status)"
exit $status
