#!/usr/bin/env bash
# The VWW-sized distillation run of docs/BENCHMARKS.md: a synthetic set of VWW's sizes
# (115,228 train + 8,059 val), a quick teacher and a 1-view cache, then
# `vwwfast distill --epochs EPOCHS` with the compiled step; its summary.json gives the
# training wall time (train_wall_s), the whole run's (wall_time_s) and compile_s.
#   tools/vww_epoch.sh OUT_DIR
# A warm-up run of one epoch fills the compile cache first (TORCHINDUCTOR_CACHE_DIR), as
# the figure asks for a warm cache. Sizes are knobs: N_TRAIN, N_VAL, EPOCHS, BATCH, WORKERS.
set -uo pipefail
OUT=${1:?usage: tools/vww_epoch.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/vwwfast-inductor}
V="$PY -m vwwfast"
W=${WORK:-$(mktemp -d)}
N_TRAIN=${N_TRAIN:-115228}
N_VAL=${N_VAL:-8059}
EPOCHS=${EPOCHS:-30}
BATCH=${BATCH:-1024}
WORKERS=${WORKERS:-$(nproc)}
step() { echo; echo "== $1 ($(date +%T))"; }
timed() { local t0=$SECONDS; "$@"; local rc=$?; echo "wall seconds: $((SECONDS - t0))"; return $rc; }

step "synthetic set: $N_TRAIN train / $N_VAL val ($WORKERS processes), shards at 128 px"
timed $V synth --out "$W/coco" --train "$N_TRAIN" --val "$N_VAL" --workers "$WORKERS" --overwrite || exit 1
timed $V shard --coco-root "$W/coco" --out "$W/shards" --size 128 --workers "$WORKERS" --overwrite || exit 1
rm -rf "$W/coco"
step "teacher: one epoch at 96 px, then a 1-view cache"
$V train-teacher --shards "$W/shards" --input-size 96 --epochs 1 --batch-size "${TEACHER_BATCH:-512}" --bn-settle 2048 \
    --runs-dir "$W/runs" --tag vww_teacher || exit 1
T=$(ls -d "$W"/runs/*_teacher_* | tail -n 1)/model.pt
timed $V cache-teacher --shards "$W/shards" --teacher "$T" --views 1 --out "$W/t.zarr" --batch-size 1024 || exit 1
common=(--shards "$W/shards" --cache "$W/t.zarr" --batch-size "$BATCH" --lr 2e-3 --lr-scaling sqrt
        --compile on --runs-dir "$W/runs")
step "warm-up: one epoch (fills the compile cache)"
$V distill "${common[@]}" --epochs 1 --tag warmup || exit 1
step "distill: $EPOCHS epochs, batch $BATCH, compiled step"
timed $V distill "${common[@]}" --epochs "$EPOCHS" --tag vww_epochs || exit 1
R=$(ls -d "$W"/runs/*_vww_epochs | tail -n 1)
cp "$R/summary.json" "$OUT/vww_epoch_summary.json"
cp "$R/metrics.jsonl" "$OUT/vww_epoch_metrics.jsonl"
$PY - "$R/summary.json" <<'PY' | tee "$OUT/vww_epoch.txt"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"train_wall_s {s['train_wall_s']:.1f}  wall_time_s {s['wall_time_s']:.1f}  "
      f"compile_s {s.get('compile_s', 0):.1f}  img/s {s['img_per_s']:,.0f}  "
      f"best val acc {s['best_val_acc']:.4f}  device {s['device']}")
PY
