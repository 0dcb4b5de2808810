#!/usr/bin/env bash
# The whole pipeline on the built-in synthetic set, sized for a 2-core CPU (about 12 minutes),
# set up the way KD is used for real: a teacher that knows more than its students.
#   synth -> shard -> train-teacher (more pixels, more data) -> cache-teacher -> one distill
#   sweep: the default KD recipe and a supervised student (--alpha 0) on the same batches
#   -> export -> runs -> the paired test of the two students.
# Smaller than the real defaults, and it says so:
#   - 6,000 train / 1,500 val synthetic images stored at 128 px;
#   - the teacher (MobileNetV3-Small, 128 px) trains on all 6,000 for 8 epochs: it sees 4x the
#     pixels and 4x the images of its students (real runs: MobileNetV3-Large at 224 on COCO);
#   - the students (MobileNetV3-Small at 64 px) see 1,500 train images (the second shard set,
#     made with --limit; its val set is the same 1,500 images), 12 cached views, 30 epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
V=${VWWFAST:-.venv/bin/vwwfast}
OUT=${DEMO_DIR:-demo}
TRAIN=${DEMO_TRAIN:-6000}
VAL=${DEMO_VAL:-1500}
STUDENT_TRAIN=${DEMO_STUDENT_TRAIN:-1500}
TEACHER_EPOCHS=${DEMO_TEACHER_EPOCHS:-8}
STUDENT_EPOCHS=${DEMO_STUDENT_EPOCHS:-30}
VIEWS=${DEMO_VIEWS:-12}

stage() { echo; echo "== $1 ($(date +%T))"; }
SECONDS=0
stage "synth: $TRAIN train / $VAL val images in the COCO 2014 layout"
$V synth --out "$OUT/coco" --train "$TRAIN" --val "$VAL" --seed 0 --overwrite
stage "shard: every image for the teacher, the first $STUDENT_TRAIN of each split for the students (128 px)"
$V shard --coco-root "$OUT/coco" --out "$OUT/shards" --size 128 --samples-per-shard 500 --workers 2 --overwrite
$V shard --coco-root "$OUT/coco" --out "$OUT/shards-students" --size 128 --limit "$STUDENT_TRAIN" \
    --samples-per-shard 500 --workers 2 --overwrite
stage "train-teacher: mobilenet_v3_small at 128 px on $TRAIN images, $TEACHER_EPOCHS epochs"
$V train-teacher --shards "$OUT/shards" --arch mobilenet_v3_small --input-size 128 \
    --epochs "$TEACHER_EPOCHS" --batch-size 64 --lr 3e-3 --bn-settle 512 --runs-dir "$OUT/runs" \
    --tag demo --note "demo teacher: 4x the pixels and the images of its students"
TEACHER=$(ls -d "$OUT"/runs/*_teacher_* | tail -n 1)
stage "cache-teacher: $VIEWS views of each of the students' $STUDENT_TRAIN training images"
$V cache-teacher --shards "$OUT/shards-students" --teacher "$TEACHER/model.pt" --views "$VIEWS" \
    --out "$OUT/shards-students/teacher.zarr"
stage "distill: the default KD recipe and a supervised student (--alpha 0) in one sweep, 64 px, $STUDENT_EPOCHS epochs"
$V distill --shards "$OUT/shards-students" --cache "$OUT/shards-students/teacher.zarr" --alpha 0.55,0 \
    --input-size 64 --epochs "$STUDENT_EPOCHS" --batch-size 64 --lr 3e-3 --bn-settle 512 \
    --runs-dir "$OUT/runs" --tag demo \
    --note "demo: the default KD recipe against a supervised student on the same views"
KD=$(ls -d "$OUT"/runs/*_student_*_a0.55 | tail -n 1)
SUP=$(ls -d "$OUT"/runs/*_student_*_a0 | tail -n 1)
stage "export: the distilled student as ONNX and TFLite, float and int8, each file's val accuracy"
$V export "$KD" --format onnx,tflite --calib 256
stage "the teacher on the students' val images (the first $STUDENT_TRAIN of its own val set)"
$V eval "$TEACHER" --shards "$OUT/shards-students"
stage "runs, and the paired test: is the distilled student's gain over the supervised one real?"
$V runs --runs-dir "$OUT/runs"
$V runs --runs-dir "$OUT/runs" --diff "$SUP" "$KD"
$V runs --runs-dir "$OUT/runs" --plot "$(ls -d "$OUT"/runs/*_sweep* | tail -n 1)" --out "$OUT/students.png"
echo
echo "demo finished in $((SECONDS / 60)) min $((SECONDS % 60)) s; records in $OUT/runs/, comparison plot $OUT/students.png"
