#!/usr/bin/env bash
# Both benchmarks on a synthetic set made here, on whatever device torch sees:
#   tools/bench.sh OUT_DIR
# synth -> shard at 224 px -> a MobileNetV3-Large teacher at 224 (1 epoch: its speed does not
# depend on its accuracy) -> cache-teacher (VIEWS views) -> bench loader -> bench kd (per
# renderer in KD_RENDERERS). WORK: the folder for the set, teacher (WORK/teacher.pt) and store
# (WORK/t.zarr), kept for later steps. Logs and JSON go to OUT_DIR; the one-off costs (shard and
# cache-teacher wall time, store size) are in shard.log / cache_teacher.log.
set -uo pipefail
OUT=${1:?usage: tools/bench.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
V="$PY -m vwwfast"
W=${WORK:-$(mktemp -d)}
N_TRAIN=${N_TRAIN:-6000}
N_VAL=${N_VAL:-1000}
BATCH=${BATCH:-512}
BATCHES=${BATCHES:-15}
WORKERS=${WORKERS:-8}
VIEWS=${VIEWS:-2}
STUDENTS=${STUDENTS:-1}     # bench kd: also time a sweep of this many students
COMPILE=${COMPILE:-off}    # bench kd: also time every student path with the compiled step (on / auto / off)
STACK=${STACK:-off}        # bench kd: also time the sweep stacked into one batched step (on / off)
status=0
step() { echo; echo "== $1 ($(date +%T))"; }
timed() { local t0=$SECONDS; "$@"; local rc=$?; echo "wall seconds: $((SECONDS - t0))"; return $rc; }

step "synthetic set: $N_TRAIN train / $N_VAL val, shards at 224 px"
$V synth --out "$W/coco" --train "$N_TRAIN" --val "$N_VAL" --overwrite || exit 1
timed $V shard --coco-root "$W/coco" --out "$W/shards" --size 224 --workers "$(nproc)" --overwrite \
    2>&1 | tee "$OUT/shard.log" || exit 1
step "teacher: 1 epoch at 224 px"
$V train-teacher --shards "$W/shards" --input-size 224 --epochs 1 --batch-size "${TEACHER_BATCH:-64}" \
    --runs-dir "$W/runs" --bn-settle 0 2>&1 | tee "$OUT/train_teacher.log" || exit 1
T=$(ls -d "$W"/runs/*_teacher_* | tail -n 1)/model.pt
cp "$T" "$W/teacher.pt"
step "cache-teacher: $VIEWS views"
rm -rf "$W/t.zarr"
timed $V cache-teacher --shards "$W/shards" --teacher "$T" --views "$VIEWS" --out "$W/t.zarr" \
    --batch-size "$BATCH" --decoded-size 224 2>&1 | tee "$OUT/cache_teacher.log" || exit 1
step "bench loader"
$V bench loader --shards "$W/shards" --renderer all --batch-size "$BATCH" --json "$OUT/bench_loader.json" \
    2>&1 | tee "$OUT/bench_loader.log" || status=1
for r in ${KD_RENDERERS:-decoded dali}; do
    step "bench kd ($r)"
    $V bench kd --shards "$W/shards" --teacher "$T" --cache "$W/t.zarr" --renderer "$r" \
        --batch-size "$BATCH" --batches "$BATCHES" --workers "$WORKERS" --decoded-size 224 \
        --students "$STUDENTS" --compile "$COMPILE" --stack-students "$STACK" --json "$OUT/bench_kd_$r.json" 2>&1 | tee "$OUT/bench_kd_$r.log" || status=1
done
step "done (status $status)"
exit $status
