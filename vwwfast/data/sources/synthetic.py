"""The built-in synthetic data set: procedurally drawn scenes written in the COCO 2014 layout.

Scenes hold human figures (skin-toned head, torso, arms, legs) in several poses, with
distractors annotated with their real COCO categories: four-legged animals (dog, horse, sheep,
cow), signs on poles (traffic light, stop sign) and vehicles (bicycle, car, bus, truck), over
cluttered backgrounds (gradients, noise, stripes, shapes). Person sizes spread log-uniformly
over about 0.1%..40% of the image, so the VWW 0.5% rule calls some images with a person
"no person". The knobs below were tuned for learnability: a MobileNetV3-Small from scratch at
96x96 reaches about 80% val accuracy on 2,000 of these images in 15 epochs.

Every object is drawn twice: in colour on the image and with its instance number on an "L"
label map. What is drawn later overwrites the map, so occluders (numbered 0) and the image
border cut objects, and each annotation's `area` and `bbox` are those of the VISIBLE pixels
(after occlusion), as COCO's segmentation areas are.

Deterministic: one numpy Generator per image, seeded with (seed, split, index); JPEG quality 90
(PIL writes no timestamps); JSON with sorted keys. The annotation JSONs are written last (via
a temporary name), so an interrupted run leaves no annotation file and is not mistaken for a
complete one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vwwfast.errors import UserError
from vwwfast.files import worker_pool

# Real COCO 2014 category ids.
CATEGORIES = [(1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
              (6, "bus", "vehicle"), (8, "truck", "vehicle"), (10, "traffic light", "outdoor"),
              (13, "stop sign", "outdoor"), (18, "dog", "animal"), (19, "horse", "animal"),
              (20, "sheep", "animal"), (21, "cow", "animal")]
PERSON = 1
AREA_THRESHOLD = 0.005  # the VWW rule, used here only to report the person share
MAX_COCO_ID = 581929  # the largest image id in COCO 2014
SUBSETS = (("train", "train2014"), ("val", "val2014"))
# Tuned so that about half of the images come out "person" under the VWW rule.
P_PERSON_IMAGE = 0.62
SKIN = np.array([(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 90),
                 (160, 102, 64), (120, 74, 44), (90, 56, 36)], np.float32)
# Figure height for a target area fraction f: H = sqrt(f * image area / 0.15). A whole standing
# figure covers about 0.17 H^2 (0.15..0.19 by pose and build), a little above f; occlusion and
# the border then cut some figures well below it. The annotation holds what is visible.
PERSON_AREA_PER_H2 = 0.15


def _draw_and_save(job) -> tuple[int, int, list]:
    """One scene, a pure function of (seed, split, index): the same files whatever the
    number of worker processes."""
    seed, split_index, index, path = job
    image, objects = draw_scene(np.random.default_rng([seed, split_index, index]))
    image.save(path, "JPEG", quality=90)
    return image.size[0], image.size[1], objects


def write_synthetic(out: Path | str, train: int = 1000, val: int = 300, seed: int = 0,
                    overwrite: bool = False, show_progress: bool = True, workers: int = 1) -> dict:
    """Write `train` + `val` scenes under `out` in the COCO 2014 layout.

    overwrite replaces train2014/, val2014/ and annotations/ (other files in `out` stay).
    show_progress: a bar while drawing and, at the end, a table of what was made (stdout).
    Returns {"out", "seed", "splits": {split: {"subset", "images", "person"}}, "seconds"},
    "person" counting the images that the VWW rule labels 1.
    """
    out = Path(out)
    minival = _minival_ids()
    if train < 0 or val < 0 or seed < 0:
        raise UserError(f"train, val and seed must be >= 0 (got {train}, {val}, {seed})")
    if val > len(minival):
        raise UserError(f"val must be at most {len(minival)} (the minival ids), got {val}")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path is a file, not a folder: {out}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder is not empty: {out} (pass overwrite to replace it)")
        # Annotations first: from here on the folder no longer looks complete.
        for name in ("annotations", "train2014", "val2014"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    start = time.perf_counter()
    ids = {"train": _train_ids(train, seed, minival), "val": _val_ids(val, seed, minival)}
    datasets, summary, ann_id = {}, {}, 1
    pool = worker_pool(workers)
    for split_index, (split, subset) in enumerate(SUBSETS):
        folder = out / subset
        folder.mkdir(parents=True, exist_ok=True)
        images, anns, persons = [], [], 0
        names = [f"COCO_{subset}_{image_id:012d}.jpg" for image_id in ids[split].tolist()]
        jobs = [(seed, split_index, index, folder / name) for index, name in enumerate(names)]
        drawn = pool.map(_draw_and_save, jobs, chunksize=32) if pool else map(_draw_and_save, jobs)
        with _progress(f"synth {split}", len(ids[split]), show_progress) as advance:
            for image_id, name, (w, h, objects) in zip(ids[split].tolist(), names, drawn):
                images.append({"id": image_id, "file_name": name, "height": h, "width": w})
                best = 0.0
                for category, iscrowd, area, bbox in objects:
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": category,
                                 "area": float(area), "bbox": bbox, "iscrowd": iscrowd,
                                 "segmentation": []})
                    ann_id += 1
                    if category == PERSON:
                        best = max(best, area / (w * h))
                persons += best > AREA_THRESHOLD
                advance(1)
        datasets[subset] = {"info": {"description": "vwwfast synthetic scenes", "version": "1",
                                     "year": 2014, "seed": seed},
                            "licenses": [], "images": images, "annotations": anns,
                            "categories": [{"id": i, "name": n, "supercategory": s}
                                           for i, n, s in CATEGORIES]}
        summary[split] = {"subset": subset, "images": len(images), "person": int(persons)}
    if pool:
        pool.shutdown()
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for subset, data in datasets.items():  # last: their presence marks a complete set
        path = out / "annotations" / f"instances_{subset}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
        os.replace(tmp, path)
    made = {"out": str(out), "seed": seed, "splits": summary,
            "seconds": round(time.perf_counter() - start, 3)}
    if show_progress:
        _report(made)
    return made


def _report(made: dict) -> None:
    """What synth made: images and labels per split (results to stdout), the next step (stderr)."""
    from vwwfast.progress import info, print_table
    rows = [(f"{s['subset']}/", split, s["images"], s["person"], s["images"] - s["person"])
            for split, s in made["splits"].items()]
    print_table(f"synthetic scenes in {made['out']} (COCO 2014 layout, seed {made['seed']}, "
                f"{made['seconds']:.1f} s)", ["folder", "split", "images", "person", "no person"], rows)
    info(f"labels by the VWW rule (a person over 0.5% of the image) in annotations/; next: "
         f"vwwfast shard --coco-root {made['out']}")


def _progress(description: str, total: int, show: bool):
    if not show:
        return contextlib.nullcontext(lambda n=1: None)
    from vwwfast.progress import bar
    return bar(description, total=total)


def _minival_ids() -> np.ndarray:
    text = resources.files("vwwfast.data.sources").joinpath("mscoco_minival_ids.txt").read_text()
    return np.unique(np.array(text.split(), dtype=np.int64))


def _val_ids(n: int, seed: int, minival: np.ndarray) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, 1, 1 << 40]).choice(minival, n, replace=False))


def _train_ids(n: int, seed: int, minival: np.ndarray) -> np.ndarray:
    pool = np.setdiff1d(np.arange(1, MAX_COCO_ID + 1), minival)
    if n > len(pool):
        raise UserError(f"train must be at most {len(pool)}, got {n}")
    return np.sort(np.random.default_rng([seed, 0, 1 << 40]).choice(pool, n, replace=False))


# ----------------------------------------------------------------------------- drawing

class Canvas:
    """Draws on the RGB image and, with the current instance number, on the label map."""

    def __init__(self, background: np.ndarray):
        self.image = Image.fromarray(background)
        self.labels = Image.new("L", self.image.size, 0)
        self.rgb, self.lab = ImageDraw.Draw(self.image), ImageDraw.Draw(self.labels)
        self.instance = 0  # 0: unannotated (background clutter, occluders)
        self.objects: list[tuple[int, int]] = []  # (category, iscrowd) for instance k = i + 1

    def begin(self, category: int, iscrowd: int = 0) -> None:
        self.objects.append((category, iscrowd))
        self.instance = len(self.objects)

    def end(self) -> None:
        self.instance = 0

    def poly(self, points, fill) -> None:
        self.rgb.polygon(points, fill=_c(fill))
        self.lab.polygon(points, fill=self.instance)

    def ellipse(self, cx, cy, rx, ry, fill) -> None:
        box = (cx - rx, cy - ry, cx + max(rx, 0.5), cy + max(ry, 0.5))
        self.rgb.ellipse(box, fill=_c(fill))
        self.lab.ellipse(box, fill=self.instance)

    def limb(self, points, width, fill) -> None:
        """A thick polyline with rounded joints and ends."""
        width = max(1, round(width))
        self.rgb.line(points, fill=_c(fill), width=width, joint="curve")
        self.lab.line(points, fill=self.instance, width=width, joint="curve")
        if width > 2:
            for x, y in (points[0], points[-1]):
                self.ellipse(x, y, width / 2 - 0.5, width / 2 - 0.5, fill)

    def annotations(self) -> list[tuple[int, int, int, list[float]]]:
        """(category, iscrowd, visible area, bbox) of every instance still visible."""
        labels = np.asarray(self.labels)
        counts = np.bincount(labels.ravel(), minlength=len(self.objects) + 1)
        result = []
        for k, (category, iscrowd) in enumerate(self.objects, start=1):
            if counts[k] == 0:
                continue  # fully hidden or outside the image
            mask = labels == k
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            bbox = [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
                    float(rows[-1] - rows[0] + 1)]
            result.append((category, iscrowd, int(counts[k]), bbox))
        return result


def _c(colour) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, int(v))) for v in colour)
    return r, g, b


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _colour(rng, saturation=1.0) -> np.ndarray:
    grey = rng.uniform(30, 230)
    return np.clip(grey + saturation * rng.uniform(-90, 90, 3), 0, 255)


def background(rng, w: int, h: int) -> np.ndarray:
    """Gradient sky/wall, optional ground, low-frequency blotches, stripes, fine noise.

    The hot loop: float32, channels first (broadcasting over a trailing 3 is slow in numpy),
    per-pixel maps kept 2-D where they are grey.
    """
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    t = x * math.cos(angle) + y * math.sin(angle)
    t -= t.min()
    t /= max(float(t.max()), 1.0)
    c0, c1 = (_colour(rng, 0.6).astype(np.float32)[:, None, None] for _ in range(2))
    img = t[None] * (c1 - c0)
    img += c0
    if rng.random() < 0.6:  # a ground plane below a (slightly tilted) horizon
        below = y > rng.uniform(0.3, 0.75) * h + rng.uniform(-0.05, 0.05) * x
        ground = (_colour(rng, 0.4) * 0.8).astype(np.float32)[:, None, None]
        img = np.where(below[None], ground, img)
    sigma, grid = rng.uniform(5, 18), (int(rng.integers(3, 10)), int(rng.integers(3, 10)), 3)
    small = np.clip(rng.normal(128, sigma, grid), 0, 255).astype(np.uint8)
    blotches = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    shade = rng.random((h, w), dtype=np.float32)
    shade *= rng.uniform(4, 20)
    shade -= 128  # the blotches are centred on 128
    if rng.random() < 0.25:
        a3 = angle * 3
        phase = (x * math.cos(a3) + y * math.sin(a3)) * (2 * math.pi / rng.uniform(5, 30))
        shade += np.sin(phase) * rng.uniform(6, 20)
    img += shade
    img += np.asarray(blotches).transpose(2, 0, 1)
    np.clip(img, 0, 255, out=img)
    return img.transpose(1, 2, 0).astype(np.uint8)


def clutter(c: Canvas, rng, w: int, h: int) -> None:
    """Random unannotated shapes: boxes, blobs, polygons and lines (no figure-like parts)."""
    for _ in range(int(rng.integers(2, 8))):
        kind, col = rng.integers(4), _colour(rng, 0.7)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        s = _log_uniform(rng, 4, 0.4 * max(w, h))
        if kind == 0:
            c.rgb.rectangle((cx - s, cy - s * rng.uniform(0.2, 1.5), cx + s, cy), fill=_c(col))
        elif kind == 1:
            c.rgb.ellipse((cx - s, cy - s * rng.uniform(0.3, 1), cx + s, cy + s * 0.3),
                          fill=_c(col))
        elif kind == 2:
            n = int(rng.integers(3, 7))
            pts = [(cx + s * rng.uniform(-1, 1), cy + s * rng.uniform(-1, 1)) for _ in range(n)]
            c.rgb.polygon(pts, fill=_c(col))
        else:
            c.rgb.line((cx, cy, cx + s * rng.uniform(-2, 2), cy + s * rng.uniform(-2, 2)),
                       fill=_c(col), width=int(rng.integers(1, 5)))


def _joint(p, length, degrees):
    """End of a segment from p, at an angle from straight down (positive towards +x)."""
    a = math.radians(degrees)
    return (p[0] + length * math.sin(a), p[1] + length * math.cos(a))


def draw_person(c: Canvas, rng, x: float, top: float, H: float) -> None:
    """A human figure of standing height H, head top at (x, top); the caller owns begin/end."""
    pose = rng.choice(["stand", "walk", "sit", "wave"], p=[0.35, 0.3, 0.2, 0.15])
    d = 1 if rng.random() < 0.5 else -1  # facing / mirror
    skin = SKIN[rng.integers(len(SKIN))] + rng.uniform(-12, 12, 3)
    shirt, pants = _colour(rng), _colour(rng, 0.5) * rng.uniform(0.4, 1.0)
    forearm = shirt if rng.random() < 0.6 else skin  # long or short sleeves
    P = lambda u, v: (x + d * u * H, top + v * H)  # noqa: E731 (local figure coordinates)
    sw, hw, lean = rng.uniform(0.09, 0.12), rng.uniform(0.06, 0.08), rng.uniform(-8, 8)
    neck = (0.0, 0.14)
    hip = _joint(neck, 0.36, lean)  # limb angles are from straight down, positive towards +u
    if pose == "walk":
        s = rng.uniform(12, 30)
        legs = [(s, s - rng.uniform(0, 15)), (-s, -s + rng.uniform(10, 30))]
        arms = [(-s * 0.8, -s * 0.8 + 20), (s * 0.8, s * 0.8 + 20)]
    elif pose == "sit":
        legs = [(rng.uniform(70, 100), rng.uniform(-10, 15)) for _ in range(2)]
        arms = [(rng.uniform(-10, 40), rng.uniform(30, 80)) for _ in range(2)]
    else:
        legs = [(a, a) for a in (rng.uniform(2, 12), -rng.uniform(2, 12))]
        outwards = (rng.uniform(5, 30), -rng.uniform(5, 30))
        arms = [(a, a + rng.uniform(0, 25) * np.sign(a)) for a in outwards]
        if pose == "wave":
            up = 180 - rng.uniform(20, 70)
            arms[0] = (up, up + rng.uniform(-20, 30))
    if pose == "sit" and rng.random() < 0.6:  # a seat behind the figure (unannotated)
        inst, c.instance = c.instance, 0
        seat_y = hip[1] + 0.03
        c.poly([P(-0.12, seat_y), P(0.3, seat_y), P(0.3, seat_y + 0.3), P(-0.12, seat_y + 0.3)],
               _colour(rng, 0.3))
        c.instance = inst
    for i, (thigh, shin) in enumerate(legs):
        h0 = (hip[0] + (hw * 0.6 if i == 0 else -hw * 0.6), hip[1])
        knee = _joint(h0, 0.25, thigh)
        foot = _joint(knee, 0.24, shin)
        c.limb([P(*h0), P(*knee), P(*foot)], 0.075 * H, pants)
        c.ellipse(*P(foot[0] + 0.02, foot[1]), 0.045 * H, 0.022 * H, (40, 35, 30))
    shoulders = [(neck[0] + sw, neck[1] + 0.04), (neck[0] - sw, neck[1] + 0.04)]
    c.poly([P(*shoulders[0]), P(*shoulders[1]), P(hip[0] - hw, hip[1] + 0.02),
            P(hip[0] + hw, hip[1] + 0.02)], shirt)
    for s0, (upper, fore) in zip(shoulders, arms):
        elbow = _joint(s0, 0.16, upper)
        hand = _joint(elbow, 0.15, fore)
        c.limb([P(*s0), P(*elbow)], 0.055 * H, shirt)
        c.limb([P(*elbow), P(*hand)], 0.048 * H, forearm)
        c.ellipse(*P(*hand), 0.03 * H, 0.03 * H, skin)
    c.limb([P(*neck), P(neck[0], 0.1)], 0.045 * H, skin)
    hx, hy = P(0.0, 0.07)
    c.ellipse(hx, hy, 0.056 * H, 0.07 * H, skin)
    if rng.random() < 0.8:  # hair on top of the head
        c.ellipse(hx, hy - 0.035 * H, 0.058 * H, 0.038 * H, _colour(rng, 0.3) * 0.4)


def draw_animal(c: Canvas, rng, x: float, base: float, L: float) -> None:
    """A four-legged animal with a horizontal body of length L, feet on `base`."""
    category = int(rng.choice([18, 19, 20, 21]))
    # body height, leg length, head position (u, v) and size, per species
    bh, leg, head, hr = {18: (0.35, 0.35, (0.6, -0.3), 0.15), 19: (0.38, 0.55, (0.66, -0.38), 0.12),
                         20: (0.5, 0.25, (0.55, -0.1), 0.13), 21: (0.45, 0.45, (0.62, -0.1), 0.14),
                         }[category]
    coats = {18: [(120, 80, 40), (30, 30, 30), (200, 160, 90), (150, 150, 150)],
             19: [(110, 60, 30), (40, 30, 25), (220, 220, 210), (160, 100, 50)],
             20: [(235, 230, 215), (210, 205, 190)],
             21: [(30, 30, 30), (120, 70, 40), (200, 190, 180)]}[category]
    col = np.array(coats[rng.integers(len(coats))]) + rng.uniform(-15, 15, 3)
    d = 1 if rng.random() < 0.5 else -1
    P = lambda u, v: (x + d * u * L, base - (leg + bh / 2) * L + v * L)  # noqa: E731
    c.begin(category)
    for u in (-0.38, -0.28, 0.28, 0.38):
        a = rng.uniform(-15, 15)
        c.limb([P(u, 0), P(*_joint((u, bh / 2), leg, a))], 0.07 * L, col * 0.85)
    c.limb([P(-0.48, -0.05), P(-0.62, 0.2 if category != 18 else -0.25)], 0.04 * L, col * 0.8)
    if category == 20:  # fleece: a lumpy body
        for u in np.linspace(-0.4, 0.4, 5):
            c.ellipse(*P(u, rng.uniform(-0.08, 0.08)), 0.16 * L, 0.2 * L, col)
        head_col = (40, 35, 30)
    else:
        c.ellipse(*P(0, 0), 0.5 * L, bh / 2 * L, col)
        head_col = col
        if category == 21 and rng.random() < 0.6:  # patches
            for _ in range(3):
                u, v = rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1)
                c.ellipse(*P(u, v), 0.1 * L, 0.07 * L, 255 - col)
    c.limb([P(0.42, -0.05), P(*head)], 0.12 * L, head_col)
    c.ellipse(*P(head[0] + 0.06, head[1]), hr * 1.3 * L, hr * 0.8 * L, head_col)
    c.end()


def draw_vehicle(c: Canvas, rng, x: float, base: float, L: float) -> None:
    """A boxy vehicle with wheels (or a bicycle) of length L, wheels on `base`."""
    category = int(rng.choice([2, 3, 6, 8]))
    body = _colour(rng, 1.2)
    P = lambda u, v: (x + (u - 0.5) * L, base + v * L)  # noqa: E731
    c.begin(category)
    if category == 2:
        frame = _colour(rng, 1.2)
        for u in (0.2, 0.8):  # wheels: rings, not discs
            box, width = (*P(u - 0.18, -0.36), *P(u + 0.18, 0)), max(1, round(0.03 * L))
            c.rgb.ellipse(box, outline=(20, 20, 20), width=width)
            c.lab.ellipse(box, outline=c.instance, width=width)
        c.limb([P(0.2, -0.18), P(0.45, -0.18), P(0.38, -0.45), P(0.2, -0.18)], 0.025 * L,
               frame)
        c.limb([P(0.45, -0.18), P(0.72, -0.42), P(0.8, -0.18)], 0.025 * L, frame)
        c.limb([P(0.38, -0.45), P(0.72, -0.42), P(0.7, -0.52)], 0.025 * L, frame)
        c.limb([P(0.32, -0.5), P(0.44, -0.5)], 0.04 * L, (30, 30, 30))
    else:
        tall = {3: 0.22, 6: 0.45, 8: 0.38}[category]
        c.poly([P(0, -0.06), P(1, -0.06), P(1, -0.06 - tall), P(0, -0.06 - tall)], body)
        glass = np.array((150, 180, 200)) * rng.uniform(0.5, 1.1)
        if category == 3:  # a cabin with windows on top
            c.poly([P(0.2, -0.28), P(0.8, -0.28), P(0.68, -0.45), P(0.32, -0.45)], body)
            c.poly([P(0.27, -0.29), P(0.73, -0.29), P(0.65, -0.42), P(0.35, -0.42)], glass)
        elif category == 6:  # a row of windows
            for u in np.arange(0.05, 0.95, 0.15):
                c.poly([P(u, -0.3), P(u + 0.11, -0.3), P(u + 0.11, -0.46), P(u, -0.46)], glass)
        else:  # cab in front of a cargo box
            c.poly([P(0.75, -0.06), P(1.0, -0.06), P(1.0, -0.4), P(0.75, -0.4)], body * 0.7)
            c.poly([P(0.8, -0.25), P(0.97, -0.25), P(0.97, -0.37), P(0.8, -0.37)], glass)
        for u in ((0.2, 0.8) if category != 6 else (0.15, 0.5, 0.85)):
            c.ellipse(*P(u, -0.06), 0.09 * L, 0.09 * L, (25, 25, 25))
            c.ellipse(*P(u, -0.06), 0.04 * L, 0.04 * L, (150, 150, 150))
    c.end()


def draw_sign(c: Canvas, rng, x: float, base: float, H: float) -> None:
    """A pole (unannotated, like COCO) carrying a traffic light or a stop sign (annotated)."""
    category = int(rng.choice([10, 13]))
    c.limb([(x, base), (x, base - H)], 0.05 * H, np.full(3, rng.uniform(60, 160)))
    c.begin(category)
    y0 = base - H  # top of the pole
    if category == 10:
        bw, bh = 0.12 * H, 0.34 * H
        c.poly([(x - bw, y0), (x + bw, y0), (x + bw, y0 + bh), (x - bw, y0 + bh)], (30, 30, 25))
        for i, col in enumerate([(220, 30, 30), (230, 190, 30), (40, 200, 60)]):
            dim = 1.0 if rng.random() < 0.4 else 0.35
            c.ellipse(x, y0 + bh * (i + 0.5) / 3, 0.07 * H, 0.07 * H, np.array(col) * dim)
    else:
        angles = [math.pi / 8 + k * math.pi / 4 for k in range(8)]  # an octagon, white rim
        for r, col in ((0.18, (240, 240, 240)), (0.155, (200, 20, 30))):
            c.poly([(x + r * H * math.cos(a), y0 + 0.1 * H + r * H * math.sin(a)) for a in angles],
                   col)
    c.end()


def occlude(c: Canvas, rng, x: float, top: float, H: float) -> None:
    """An unannotated thing in front of a figure: a bush, a wall or a box."""
    y = top + rng.uniform(0.4, 0.9) * H
    col = _colour(rng, 0.6)
    if rng.random() < 0.5:
        for _ in range(4):
            cx, cy = x + rng.uniform(-0.3, 0.3) * H, y + rng.uniform(0, 0.3) * H
            rx, ry = rng.uniform(0.1, 0.3) * H, rng.uniform(0.1, 0.25) * H
            c.ellipse(cx, cy, rx, ry, (40, 110, 40) + rng.uniform(-30, 30, 3))
    else:
        x0, bottom = x + rng.uniform(-0.8, 0.1) * H, top + 1.5 * H
        x1, x2 = x0 + rng.uniform(0.3, 1.2) * H, x0 + rng.uniform(0.3, 1.2) * H
        c.poly([(x0, y), (x1, y), (x2, bottom), (x0, bottom)], col)


def draw_scene(rng) -> tuple[Image.Image, list]:
    """One scene -> (RGB image, [(category, iscrowd, visible area, bbox)])."""
    long_side, ratio = int(rng.integers(200, 401)), rng.uniform(1.0, 1.7)
    w, h = long_side, max(160, int(long_side / ratio))
    if rng.random() < 0.4:
        w, h = h, w  # portrait
    c = Canvas(background(rng, w, h))
    clutter(c, rng, w, h)
    area = w * h
    things = []  # (base y, kind, params): drawn far (high on the image) to near
    if rng.random() < P_PERSON_IMAGE:
        n = int(rng.choice([1, 2, 3, 4], p=[0.6, 0.25, 0.1, 0.05]))
        for _ in range(n):
            H = math.sqrt(_log_uniform(rng, 0.001, 0.4) * area / PERSON_AREA_PER_H2)
            H = min(H, 1.6 * h)  # a huge figure is a close-up: head and torso in view
            top = rng.uniform(-0.05 * H, max(h - 0.8 * H, 0.05 * h))
            things.append((top + H, "person", (rng.uniform(-0.05, 1.05) * w, top, H)))
        if rng.random() < 0.08:  # a crowd: several small figures, one iscrowd annotation
            H = math.sqrt(_log_uniform(rng, 0.003, 0.03) * area / PERSON_AREA_PER_H2)
            top = rng.uniform(0, max(h - H, 1))
            things.append((top + H, "crowd", (rng.uniform(0, w), top, H)))
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))):
        kind = ["animal", "vehicle", "sign"][rng.integers(3)]
        L = math.sqrt(_log_uniform(rng, 0.004, 0.25) * area) * (0.5 if kind == "sign" else 1.6)
        tall = {"animal": 0.9, "vehicle": 0.5, "sign": 1.0}[kind] * L  # keep most of it in view
        base = rng.uniform(min(0.9 * tall, h), h + 0.1 * tall)
        things.append((base, kind, (rng.uniform(0, w), base, L)))
    for _, kind, (x, y, s) in sorted(things, key=lambda t: t[0]):
        if kind == "person":
            c.begin(PERSON)
            draw_person(c, rng, x, y, s)
            c.end()
            if rng.random() < 0.2:
                occlude(c, rng, x, y, s)
        elif kind == "crowd":
            c.begin(PERSON, iscrowd=1)
            for k in range(int(rng.integers(4, 9))):
                draw_person(c, rng, x + (k - 3) * 0.3 * s, y + rng.uniform(-0.1, 0.1) * s, s)
            c.end()
        else:
            draw = {"animal": draw_animal, "vehicle": draw_vehicle, "sign": draw_sign}[kind]
            draw(c, rng, x, y, s)
    return c.image, c.annotations()
