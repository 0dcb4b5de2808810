#!/usr/bin/env bash
# Peak memory and throughput of `vwwfast shard --wake-vision` on a generated multi-GB archive,
# against the COCO path (`--coco-root`) on the same images, both with WORKERS processes.
# Run it on an idle machine (timings on a busy one mean little):
#   tools/wake_vision_scale.sh [WORK_DIR]
# Settings (environment): GB=3 (size of the generated train archives), ARCHIVES=4 (train
# archives, one per worker at a time: Wake Vision ships 90 of ~3 GB), WORKERS=2, SIZE=224
# (--size of both shard runs), DISTINCT=1500 (distinct photos, repeated under new names
# to fill the archive), COCO_IMAGES=20000 (images of the COCO run: links to the same photos).
# Memory is sampled every 0.1 s over the whole process tree (main process, fork server,
# workers): peak of the sum of PSS (shared pages counted once) and the largest single RSS.
# Prints a table; writes WORK_DIR/scale.json. Deletes what it generated unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
GB=${GB:-3}
WORKERS=${WORKERS:-2}
SIZE=${SIZE:-224}
DISTINCT=${DISTINCT:-1500}
COCO_IMAGES=${COCO_IMAGES:-20000}
ARCHIVES=${ARCHIVES:-4}
W=${1:-$(mktemp -d /tmp/wake-vision-scale.XXXXXX)}
mkdir -p "$W"
# the archive, the shards of both runs (well under the archive at 224 px) and the spills
need_kb=$($PY -c "print(int($GB * 2.2 * 2**20))")
free_kb=$(df -Pk "$W" | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt "$need_kb" ]; then
    echo "$W has $((free_kb / 1024)) MiB free; GB=$GB needs about $((need_kb / 1024)) MiB" >&2
    exit 1
fi
echo "work folder: $W ($(df -h "$W" | awk 'NR == 2 {print $4}') free), $(nproc) cores"

echo "== generating $GB GB of photos in $ARCHIVES .tar.gz archives, and a COCO layout of the same photos"
$PY - "$W" "$GB" "$DISTINCT" "$COCO_IMAGES" "$ARCHIVES" <<'EOF'
import io, json, os, sys, tarfile
from pathlib import Path
import numpy as np
from PIL import Image
from vwwfast.data.sources.synthetic import draw_scene
from vwwfast.data.sources.wake_vision import BENCHMARK_HEADER

work, gb, distinct, coco_n = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
archives = int(sys.argv[5])
wv, photos = work / "wake-vision", work / "photos"
wv.mkdir(exist_ok=True)
photos.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
data = []
for i in range(distinct):  # Open Images photos are about 50 KB: a scene at 2x plus grain
    im, _ = draw_scene(np.random.default_rng(i))
    im = im.resize((im.width * 2, im.height * 2), Image.BICUBIC)
    a = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, (im.height, im.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=88)
    data.append(buf.getvalue())
    (photos / f"{i}.jpg").write_bytes(buf.getvalue())
names, total, i = [], 0, 0
for part in range(1, archives + 1):  # as Wake Vision ships its train set: several archives
    with tarfile.open(wv / f"wake-vision-train-{part}.tar.gz", "w:gz") as tar:
        while total < gb * 1e9 * part / archives:
            name = f"{100000 + i}_{i:010x}_o.jpg"
            jpeg = data[i % distinct]
            info = tarfile.TarInfo(name)
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
            names.append(name)
            total += len(jpeg)
            i += 1
labels = rng.integers(0, 2, len(names))
(wv / "wake_vision_train_quality.csv").write_text(
    "filename,person,depiction,body_part\n" + "".join(f"{n},{p},0,0\n" for n, p in zip(names, labels)))
(wv / "wake_vision_train_large.csv").write_text(
    "filename,person\n" + "".join(f"{n},{p}\n" for n, p in zip(names, labels)))
for split in ("validation", "test"):
    small = [f"{9000 + k}_{split}_o.jpg" for k in range(20)]
    with tarfile.open(wv / f"wake-vision-{split}.tar.gz", "w:gz") as tar:
        for k, name in enumerate(small):
            info = tarfile.TarInfo(name)
            info.size = len(data[k])
            tar.addfile(info, io.BytesIO(data[k]))
    rows = "".join(f"{n},{k % 2}" + ",0" * (len(BENCHMARK_HEADER) - 2) + "\n" for k, n in enumerate(small))
    (wv / f"wake_vision_{split}.csv").write_text(",".join(BENCHMARK_HEADER) + "\n" + rows)
coco = work / "coco"
for subset, n in (("train2014", min(coco_n, len(names))), ("val2014", 20)):
    (coco / subset).mkdir(parents=True, exist_ok=True)
    images = []
    for k in range(n):
        file = f"COCO_{subset}_{k:012d}.jpg"
        link = coco / subset / file
        if not link.exists():
            os.symlink(photos / f"{k % distinct}.jpg", link)
        w, h = Image.open(photos / f"{k % distinct}.jpg").size
        images.append({"id": k + (0 if subset == "train2014" else 10**7), "file_name": file,
                       "height": h, "width": w})
    (coco / "annotations").mkdir(exist_ok=True)
    (coco / "annotations" / f"instances_{subset}.json").write_text(
        json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
size = (wv / "wake-vision-train-1.tar.gz").stat().st_size
print(f"archive: {len(names):,} images, {size / 1e9:.2f} GB compressed, "
      f"{total / len(names) / 1e3:.1f} KB per image; COCO layout: {min(coco_n, len(names)):,} images")
EOF

measure() {  # measure NAME -- COMMAND...: wall time, peak memory of the process tree
    local name=$1; shift; shift
    $PY - "$W/$name.json" "$@" <<'EOF'
import json, os, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]

def tree(root):
    kids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    todo, seen = [root], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += kids.get(p, [])
    return seen

def field(pid, path, key):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

t0 = time.perf_counter()
p = subprocess.Popen(cmd)
peak_pss = peak_rss = 0
while p.poll() is None:
    pids = tree(p.pid)
    peak_pss = max(peak_pss, sum(field(q, "smaps_rollup", "Pss:") for q in pids))
    peak_rss = max(peak_rss, max(field(q, "status", "VmRSS:") for q in pids))
    time.sleep(0.1)
seconds = time.perf_counter() - t0
result = {"command": cmd, "rc": p.returncode, "seconds": round(seconds, 1),
          "peak_pss_sum_bytes": peak_pss, "peak_rss_one_process_bytes": peak_rss}
json.dump(result, open(out, "w"), indent=1)
sys.exit(p.returncode)
EOF
}

V="$PY -m vwwfast"
echo "== shard --wake-vision (workers $WORKERS, size $SIZE)"
measure wake_vision -- $V shard --wake-vision "$W/wake-vision" --out "$W/shards-wv" --size "$SIZE" \
    --workers "$WORKERS" --overwrite
echo "== shard --coco-root on the same photos (workers $WORKERS, size $SIZE)"
measure coco -- $V shard --coco-root "$W/coco" --split coco --out "$W/shards-coco" --size "$SIZE" \
    --workers "$WORKERS" --overwrite

$PY - "$W" "$WORKERS" <<'EOF'
import json, sys
from pathlib import Path
work, workers = Path(sys.argv[1]), int(sys.argv[2])
rows = {}
for name, shards in (("wake_vision", "shards-wv"), ("coco", "shards-coco")):
    r = json.loads((work / f"{name}.json").read_text())
    m = json.loads((work / shards / "manifest.json").read_text())
    n = sum(s["num_samples"] for s in m["splits"].values())
    r.update(samples=n, img_per_s=round(n / r["seconds"], 1),
             img_per_s_per_worker=round(n / r["seconds"] / workers, 1))
    rows[name] = r
archive = work / "wake-vision" / "wake-vision-train-1.tar.gz"
rows["archive_bytes"] = archive.stat().st_size
print(f"\narchive {archive.stat().st_size / 2**30:.2f} GiB; workers {workers}")
print(f"{'path':<12} {'samples':>9} {'seconds':>8} {'img/s':>8} {'img/s/worker':>13} "
      f"{'peak PSS (tree)':>16} {'peak RSS (one)':>15}")
for name in ("wake_vision", "coco"):
    r = rows[name]
    print(f"{name:<12} {r['samples']:>9,} {r['seconds']:>8} {r['img_per_s']:>8} "
          f"{r['img_per_s_per_worker']:>13} {r['peak_pss_sum_bytes'] / 2**30:>14.2f} G "
          f"{r['peak_rss_one_process_bytes'] / 2**30:>13.2f} G")
ratio = rows["wake_vision"]["img_per_s"] / rows["coco"]["img_per_s"]
print(f"wake vision / coco throughput: {ratio:.2f} (target >= 1); wake vision peak PSS "
      f"{rows['wake_vision']['peak_pss_sum_bytes'] / 2**30:.2f} GiB (target < 2 GiB with 2 workers)")
rows["throughput_ratio"] = round(ratio, 3)
(work / "scale.json").write_text(json.dumps(rows, indent=1))
print(f"written: {work / 'scale.json'}")
EOF
if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$W/wake-vision" "$W/photos" "$W/coco" "$W/shards-wv" "$W/shards-coco"
fi
