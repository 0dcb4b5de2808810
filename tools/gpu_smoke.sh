#!/usr/bin/env bash
# A short GPU check for when only a few minutes of device time are left (tools/gpu_check.sh
# is the full one): the compiled, CUDA-graphed training step in a real distill sweep (a KD
# and a supervised student), then bench kd with the compiled step and a sweep of 8.
#   WHEELS=.wheels tools/gpu_smoke.sh OUT_DIR
set -uo pipefail
OUT=${1:?usage: tools/gpu_smoke.sh OUT_DIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -n "${WHEELS:-}" ] && $PY -m pip install -q --no-index --find-links "$WHEELS" zarr webdataset rich pyyaml matplotlib 2>&1 | tail -2
V="$PY -m vwwfast"
W=$(mktemp -d)
N=${N_TRAIN:-4000}
B=${BATCH:-256}
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$OUT/env.txt"
echo "== data ($(date +%T))"
$V synth --out "$W/coco" --train "$N" --val 500 --workers "$(nproc)" > /dev/null || exit 1
$V shard --coco-root "$W/coco" --out "$W/shards" --size 128 --workers "$(nproc)" > /dev/null || exit 1
$V train-teacher --shards "$W/shards" --arch mobilenet_v3_small --input-size 96 --epochs 1 \
    --batch-size "$B" --compile off --runs-dir "$W/runs" > /dev/null || exit 1
T=$(ls -d "$W"/runs/*_teacher_* | tail -n 1)/model.pt
$V cache-teacher --shards "$W/shards" --teacher "$T" --views 2 --out "$W/t.zarr" > /dev/null || exit 1
echo "== compiled distill sweep ($(date +%T))"
$V distill --shards "$W/shards" --cache "$W/t.zarr" --alpha 0.55,0 --epochs "${EPOCHS:-3}" \
    --batch-size "$B" --compile on --runs-dir "$W/runs" 2>&1 | grep -v "^\s*$" | tail -12 | tee "$OUT/distill.log"
for s in "$W"/runs/*_student_*/summary.json; do
    $PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['id'], s['status'], s.get('error'), 'compile_s', s.get('compile_s'), 'img/s', s.get('img_per_s'), 'val', s.get('best_val_acc'))" "$s"
done | tee "$OUT/students.txt"
echo "== bench kd ($(date +%T))"
$V bench kd --shards "$W/shards" --teacher "$T" --cache "$W/t.zarr" --renderer decoded \
    --batch-size "$B" --batches "${BATCHES:-20}" --workers 8 --students 8 --compile on \
    --json "$OUT/bench_kd.json" 2>&1 | tail -30 | tee "$OUT/bench_kd.log"
echo "== done ($(date +%T))"
