"""`vwwfast bench kd`: conventional online KD vs online KD on vwwfast's renderer vs cached KD,
plus the compute-only bounds of the student and the teacher, in one run on one machine.

Every path trains the same student with the same loss on the same samples and views (view 0
of the cache). Timed: `--batches` batches after 2 warm-up batches (pipeline start, DataLoader
workers, cuDNN autotuning are not timed; building a decoded cache happens before either).
On CUDA the clock stops after a synchronize.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.devices import device_name, sync
from vwwfast.errors import UserError

WARMUP = 2
STUDENT_SIZE = 96


class ConventionalDataset(torch.utils.data.Dataset):
    """What most KD scripts do: PIL decode + torchvision transforms in DataLoader workers,
    the student's and the teacher's crop of the same box."""

    def __init__(self, split, params: np.ndarray, teacher_size: int):
        self.split, self.params, self.teacher_size = split, params, teacher_size

    def __len__(self):
        return len(self.params)

    def __getitem__(self, i):
        import io

        from PIL import Image
        from torchvision.transforms import functional as F

        from vwwfast.data.constants import IMAGENET_MEAN, IMAGENET_STD
        img = Image.open(io.BytesIO(self.split.read_jpeg(i))).convert("RGB")
        y0, x0, h, w, flip = self.params[i][:5]
        W, H = img.size
        box = (round(y0 * H), round(x0 * W), max(1, round(h * H)), max(1, round(w * W)))
        out = []
        for size in (STUDENT_SIZE, self.teacher_size):
            crop = F.resized_crop(img, *box, [size, size], antialias=True)
            if flip > 0.5:
                crop = F.hflip(crop)
            out.append(F.normalize(F.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD))
        return out[0], out[1], int(self.split.labels[i]), i


class _Timer:
    """Counts images after the warm-up batches; synchronizes CUDA at both ends."""

    def __init__(self, device):
        self.device, self.batches, self.images, self.t0 = device, 0, 0, None

    def tick(self, n: int) -> None:
        self.batches += 1
        if self.batches == WARMUP:
            sync(self.device)
            self.t0 = time.perf_counter()
        elif self.batches > WARMUP:
            self.images += n

    def rate(self) -> float:
        sync(self.device)
        return self.images / max(time.perf_counter() - self.t0, 1e-9)


def bench_kd(cfg: C.BenchKDConfig) -> dict:
    from vwwfast.data.epochs import epoch_order
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.render.prefetch import iterate
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.split import budget_bytes
    from vwwfast.data.views import ViewSpec, view_params
    from vwwfast.devices import autocast, resolve_device
    from vwwfast.models import build_model, model_from_checkpoint
    from vwwfast.progress import info, print_table
    from vwwfast.teach.cache import TeacherCache
    from vwwfast.train.losses import KDRecipe

    C.require(cfg, "shards", "teacher", "cache")
    if cfg.batches < 1 or cfg.batch_size < 1:
        raise UserError("--batches and --batch-size must be at least 1")
    device = resolve_device(cfg.device)
    shards = ShardSet.open(cfg.shards)
    split = shards.split("train")
    store = TeacherCache(cfg.cache)
    store.check_complete()
    store.check_shards(shards)
    teacher, ckpt = model_from_checkpoint(cfg.teacher, device=device)
    tsize = ckpt["input_size"]
    cuda = device.type == "cuda"
    B, n_batches = cfg.batch_size, cfg.batches + WARMUP
    order = np.resize(epoch_order(len(split), 0, 0), B * n_batches)  # wraps on small sets
    params = (view_params(ViewSpec(), 0, 0, np.arange(len(split)), split.heights, split.widths)
              if store.plain else store.params()[0])
    table = torch.from_numpy(store.logits()[0]).to(device)
    fmt = torch.channels_last  # what the trainer uses on every device
    teacher = teacher.to(memory_format=fmt)

    student = build_model("mobilenet_v3_small").to(device, memory_format=fmt)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    recipe = KDRecipe.from_config(C.DistillConfig())  # distill's default loss
    weights = recipe.at(1, 1)

    def step(x, y, z_t):
        with autocast(device):
            z_s = student(x.contiguous(memory_format=fmt))
        loss, _ = recipe.loss(z_s, z_t, y, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def teach(x):
        with autocast(device):
            return teacher(x.contiguous(memory_format=fmt)).float()

    results = {}
    student.train()

    info("student compute-only bound")
    timer = _Timer(device)
    xs = torch.randn(B, 3, STUDENT_SIZE, STUDENT_SIZE, device=device).contiguous(memory_format=fmt)
    ys = torch.randint(0, 2, (B,), device=device)
    zs = torch.randn(B, 2, device=device)
    for _ in range(n_batches):
        step(xs, ys, zs)
        timer.tick(B)
    results["student_bound_img_per_s"] = timer.rate()

    info(f"teacher compute-only bound ({tsize} px inference)")
    timer = _Timer(device)
    xt = torch.randn(B, 3, tsize, tsize, device=device).contiguous(memory_format=fmt)
    for _ in range(n_batches):
        teach(xt)
        timer.tick(B)
    results["teacher_bound_img_per_s"] = timer.rate()

    student_r = make_renderer(cfg.renderer, split, device=device, decoded_size=cfg.decoded_size,
                              budget_bytes=budget_bytes(cfg),
                              out_size=STUDENT_SIZE, cache_dir=shards.root,
                              content_hash=shards.content_hash)
    teacher_r = make_renderer(cfg.renderer, split, device=device, decoded_size=cfg.decoded_size,
                              budget_bytes=budget_bytes(cfg),
                              out_size=tsize, cache_dir=shards.root,
                              content_hash=shards.content_hash)
    rows = lambda idx: params[idx]  # noqa: E731

    info("cached KD: render, cached logits, student step")
    timer = _Timer(device)
    for x, y, idx in iterate(student_r, order, rows, B, STUDENT_SIZE):
        step(x, y, table.index_select(0, torch.as_tensor(idx, device=device)).float())
        timer.tick(len(y))
    results["cached_img_per_s"] = timer.rate()

    info("online KD on vwwfast's renderer: render both sizes, teacher forward, student step")
    timer = _Timer(device)
    for x, y, idx in iterate(student_r, order, rows, B, STUDENT_SIZE):
        xt, _ = teacher_r.render(idx, params[idx], tsize)
        step(x, y, teach(xt))
        timer.tick(len(y))
    results["online_img_per_s"] = timer.rate()

    info(f"teacher cache throughput: render at {tsize} px + teacher inference")
    timer = _Timer(device)
    for x, y, idx in iterate(teacher_r, order, rows, B, tsize):
        teach(x)
        timer.tick(len(y))
    results["teacher_cache_img_per_s"] = timer.rate()

    info(f"conventional online KD: DataLoader({cfg.workers} workers, PIL + torchvision), teacher every step")
    timer = _Timer(device)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ConventionalDataset(split, params, tsize), order.tolist()),
        batch_size=B, num_workers=cfg.workers, pin_memory=cuda, persistent_workers=False)
    for xs_, xt_, y, _ in loader:
        xs_ = xs_.to(device, non_blocking=True).contiguous(memory_format=fmt)
        xt_ = xt_.to(device, non_blocking=True).contiguous(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        step(xs_, y, teach(xt_))
        timer.tick(len(y))
    results["conventional_img_per_s"] = timer.rate()
    if cfg.students > 1:
        _bench_sweep(cfg, results, student_r, order, rows, table, device)
    if cfg.compile == "on" or (cfg.compile == "auto" and cuda):
        _bench_compiled(cfg, results, xs, ys, zs, device)
    for r in (student_r, teacher_r):
        r.close()

    results.update({
        "device": device_name(device),
        "renderer": student_r.name, "teacher_renderer": teacher_r.name,
        "teacher_input_size": tsize, "student_input_size": STUDENT_SIZE,
        "batch_size": B, "timed_batches": cfg.batches,
    })
    c = results["cached_img_per_s"]
    results["ratios"] = {
        "cached/conventional": c / results["conventional_img_per_s"],
        "cached/online": c / results["online_img_per_s"],
        "cached/bound": c / results["student_bound_img_per_s"],
        "cache-teacher/teacher-bound": results["teacher_cache_img_per_s"] / results["teacher_bound_img_per_s"],
    }
    if cfg.students > 1:  # student-epochs per second: a sweep of K against K separate runs
        results["ratios"][f"sweep{cfg.students}/separate"] = (
            results["sweep_student_img_per_s"] / results["lone_student_img_per_s"])
    if "student_bound_compiled_img_per_s" in results:
        results["ratios"]["compiled/eager bound"] = (
            results["student_bound_compiled_img_per_s"] / results["student_bound_img_per_s"])
    print_table(f"bench kd on {results['device']} (batch {B}, {cfg.batches} timed batches, "
                f"teacher {tsize} px, renderer {student_r.name})", ["path", "img/s"],
                [(k.removesuffix("_img_per_s"), f"{v:,.0f}") for k, v in results.items()
                 if k.endswith("_img_per_s")])
    print_table("ratios", ["ratio", "value"], [(k, f"{v:.2f}") for k, v in results["ratios"].items()])
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(results, indent=1))
    return results


def _students(cfg, k: int, device, compile_: str = "off"):
    """k students of the trainer itself (train.student.Student: its step, its random-state
    handling), with the default KD recipe, ready for epoch 1."""
    from vwwfast.train.student import Student
    students = []
    for i in range(k):
        scfg = C.resolve(C.DistillConfig, {"shards": cfg.shards, "batch_size": cfg.batch_size,
                                          "compile": compile_, "init_seed": i, "epochs": 1})
        s = Student(scfg, "student", device, steps_per_epoch=1000)
        s.begin_epoch(1)
        students.append(s)
    return students


def _bench_sweep(cfg, results, renderer, order, rows, table, device) -> None:
    """The cached path with the trainer's students: one, then a sweep of K on the same
    batches (one render and one logits read per batch for all). Reports images/s per
    student: K x images / time for the sweep."""
    from vwwfast.data.render.prefetch import iterate
    from vwwfast.progress import info
    for k, key in ((1, "lone_student_img_per_s"), (cfg.students, "sweep_student_img_per_s")):
        info(f"cached KD, {k} student{'s' if k > 1 else ''} of the trainer on each batch")
        students = _students(cfg, k, device)
        timer = _Timer(device)
        for x, y, idx in iterate(renderer, order, rows, cfg.batch_size, STUDENT_SIZE):
            z_t = table.index_select(0, torch.as_tensor(idx, device=device)).float()
            x = x.contiguous(memory_format=torch.channels_last)
            for s in students:
                s.step(x, y, z_t)
            timer.tick(len(y) * k)
        results[key] = timer.rate()


def _bench_compiled(cfg, results, xs, ys, zs, device) -> None:
    """The student bound with the trainer's compiled step (compilation before the clock)."""
    from vwwfast.progress import info
    info("student compute-only bound, compiled step (compiling first, not timed)")
    (s,) = _students(cfg, 1, device, compile_="on")
    s.step(xs, ys, zs)  # compiles
    results["student_compile_s"] = s.compile_s
    timer = _Timer(device)
    for _ in range(cfg.batches + WARMUP):
        s.step(xs, ys, zs)
        timer.tick(len(ys))
    results["student_bound_compiled_img_per_s"] = timer.rate()
