#!/usr/bin/env bash
# The whole pipeline on the built-in synthetic set, sized for a 2-core CPU (about 15 minutes):
# synth -> shard -> train-teacher -> cache-teacher -> one distill sweep: the default KD recipe
# and a supervised student (--alpha 0) on the same batches -> export -> runs.
# Smaller than the real defaults, and it says so: 3,000 train / 500 val images stored at
# 128 px, the teacher at 96 px (224 is the real default) for 12 epochs, 4 cached views,
# 14 student epochs, BatchNorm settled on 512 images (2,048 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VWWFAST:-.venv/bin/vwwfast}
OUT=${DEMO_DIR:-demo}
TRAIN=${DEMO_TRAIN:-3000}
VAL=${DEMO_VAL:-500}
TEACHER_EPOCHS=${DEMO_TEACHER_EPOCHS:-12}
STUDENT_EPOCHS=${DEMO_STUDENT_EPOCHS:-14}
VIEWS=${DEMO_VIEWS:-4}

stage() { echo; echo "== $1 ($(date +%T))"; }
SECONDS=0
stage "synth: $TRAIN train / $VAL val images in the COCO 2014 layout"
$V synth --out "$OUT/coco" --train "$TRAIN" --val "$VAL" --seed 0 --overwrite
stage "shard (stored at 128 px; real runs use 224)"
$V shard --coco-root "$OUT/coco" --out "$OUT/shards" --size 128 --samples-per-shard 500 --workers 2 --overwrite
stage "train-teacher: mobilenet_v3_large at 96 px (real runs use 224), $TEACHER_EPOCHS epochs"
$V train-teacher --shards "$OUT/shards" --input-size 96 --epochs "$TEACHER_EPOCHS" --batch-size 64 \
    --lr 3e-3 --bn-settle 512 --runs-dir "$OUT/runs" --tag demo --note "demo teacher"
TEACHER=$(ls -d "$OUT"/runs/*_teacher_* | tail -n 1)/model.pt
stage "cache-teacher: $VIEWS views of every training image"
$V cache-teacher --shards "$OUT/shards" --teacher "$TEACHER" --views "$VIEWS" --out "$OUT/shards/teacher.zarr"
stage "distill: the default KD recipe and a supervised student (--alpha 0) in one sweep, $STUDENT_EPOCHS epochs"
$V distill --shards "$OUT/shards" --cache "$OUT/shards/teacher.zarr" --alpha 0.55,0 --epochs "$STUDENT_EPOCHS" \
    --batch-size 64 --lr 3e-3 --bn-settle 512 --runs-dir "$OUT/runs" --tag demo \
    --note "demo: the default KD recipe against a supervised student on the same views"
KD=$(ls -d "$OUT"/runs/*_student_*_a0.55 | tail -n 1)  # the member with alpha 0.55
stage "export: the distilled student as ONNX and TFLite, float and int8, each file's val accuracy"
$V export "$KD" --format onnx,tflite --calib 256
stage "runs"
$V runs --runs-dir "$OUT/runs"
$V runs --runs-dir "$OUT/runs" --plot "$(ls -d "$OUT"/runs/*_sweep* | tail -n 1)" --out "$OUT/students.png"
echo
echo "demo finished in $((SECONDS / 60)) min $((SECONDS % 60)) s; records in $OUT/runs/, comparison plot $OUT/students.png"
