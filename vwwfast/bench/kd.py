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
from typing import Any
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.devices import device_name, sync
from vwwfast.errors import UserError
from vwwfast.progress import info

WARMUP = 2
STUDENT_SIZE = 96
FMT = torch.channels_last  # what the trainer uses on every device


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

        from vwwfast.constants import IMAGENET_MEAN, IMAGENET_STD
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
    """Every path timed in one run (see the module docstring), printed as img/s and ratios."""
    from vwwfast.devices import resolve_device
    from vwwfast.train.student import compile_wanted

    C.require(cfg, "shards", "teacher", "cache")
    if cfg.batches < 1 or cfg.batch_size < 1:
        raise UserError("--batches and --batch-size must be at least 1")
    device = resolve_device(cfg.device)
    compiled = compile_wanted(cfg.compile, device)
    if cfg.stack_students == "on" and cfg.students < 2:
        raise UserError("--stack-students on needs --students 2 or more (a sweep to stack)")
    paths, shards, tsize = _setup(cfg, device)
    results: dict = {}
    # The student step of every path: eager, and the trainer's compiled step with --compile
    steps = {"": _eager_step(device)}
    if compiled:
        steps["_compiled"] = _compiled_step(cfg, device, paths, results)
    for suffix, step in steps.items():
        results[f"student_bound{suffix}_img_per_s"] = paths.student_bound(step, suffix)
    if cfg.paths == "all":
        results["teacher_bound_img_per_s"] = paths.teacher_bound(tsize)
    names = _time_pipelines(cfg, device, paths, shards, tsize, steps, results, compiled)
    results.update({
        "device": device_name(device), "renderer": names[0], "teacher_renderer": names[1],
        "teacher_input_size": tsize, "student_input_size": STUDENT_SIZE,
        "batch_size": cfg.batch_size, "timed_batches": cfg.batches, "paths": cfg.paths,
        "compiled": compiled, "stack_students": cfg.stack_students,
    })
    results["ratios"] = _ratios(results, cfg.students, list(steps))
    _report(cfg, results, tsize)
    return results


def _setup(cfg: C.BenchKDConfig, device) -> tuple["_Paths", Any, int]:
    """The shards, the store and the teacher, and what every path times on: (paths,
    shards, the teacher's input size)."""
    from vwwfast.data.epochs import epoch_order
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.views import view_params
    from vwwfast.models import model_from_checkpoint
    from vwwfast.teach.cache import TeacherCache
    from vwwfast.viewspec import ViewSpec
    shards = ShardSet.open(cfg.shards)
    split = shards.split("train")
    store = TeacherCache(cfg.cache)
    store.check_complete()
    store.check_shards(shards)
    teacher, ckpt = model_from_checkpoint(cfg.teacher, device=device)
    tsize = ckpt["input_size"]
    B, n_batches = cfg.batch_size, cfg.batches + WARMUP
    order = np.resize(epoch_order(len(split), 0, 0), B * n_batches)  # wraps on small sets
    params = (view_params(ViewSpec(), 0, 0, np.arange(len(split)), split.heights, split.widths)
              if store.plain else store.params()[0])
    table = torch.from_numpy(store.logits()[0]).to(device)
    teacher = teacher.to(memory_format=FMT)
    return _Paths(cfg, device, teacher, table, params, order), shards, tsize


def _time_pipelines(cfg: C.BenchKDConfig, device, paths: "_Paths", shards, tsize: int,
                    steps: dict, results: dict, compiled: bool) -> tuple[str, str | None]:
    """The paths that render views (cached, online, teacher cache, conventional, a sweep)
    into `results`; the names of the student's and the teacher's renderers."""
    from vwwfast.data.render.factory import make_renderer
    from vwwfast.data.split import budget_bytes
    split = shards.split("train")
    student_r = make_renderer(cfg.renderer, split, device=device, decoded_size=cfg.decoded_size,
                              budget_bytes=budget_bytes(cfg), out_size=STUDENT_SIZE,
                              cache_dir=shards.root, content_hash=shards.content_hash)
    teacher_r = None
    try:
        for suffix, step in steps.items():
            results[f"cached{suffix}_img_per_s"] = paths.cached(step, student_r, suffix)
        if cfg.paths == "all":
            teacher_r = make_renderer(cfg.renderer, split, device=device, decoded_size=cfg.decoded_size,
                                      budget_bytes=budget_bytes(cfg), out_size=tsize,
                                      cache_dir=shards.root, content_hash=shards.content_hash)
            for suffix, step in steps.items():
                results[f"online{suffix}_img_per_s"] = paths.online(step, student_r, teacher_r, tsize, suffix)
            results["teacher_cache_img_per_s"] = paths.teacher_cache(teacher_r, tsize)
            for suffix, step in steps.items():
                results[f"conventional{suffix}_img_per_s"] = paths.conventional(step, split, tsize, suffix)
        if cfg.students > 1:
            _bench_sweep(cfg, results, student_r, paths, compiled)
    finally:
        for r in (student_r, teacher_r):
            if r is not None:
                r.close()
    return student_r.name, teacher_r.name if teacher_r else None


def _report(cfg: C.BenchKDConfig, results: dict, tsize: int) -> None:
    from vwwfast.progress import print_table
    print_table(f"bench kd on {results['device']} (batch {cfg.batch_size}, {cfg.batches} timed "
                f"batches, teacher {tsize} px, renderer {results['renderer']})", ["path", "img/s"],
                [(k.removesuffix("_img_per_s"), f"{v:,.0f}") for k, v in results.items()
                 if k.endswith("_img_per_s")])
    print_table("ratios", ["ratio", "value"], [(k, f"{v:.2f}") for k, v in results["ratios"].items()])
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(results, indent=1))


def _ratios(results: dict, students: int, suffixes: list) -> dict:
    """Each pipeline against the others and against its bound, with the same student step
    (eager with eager, compiled with compiled); then compiled against eager."""
    out = {}
    for sfx in suffixes:
        name = sfx.replace("_", " ")  # "" or " compiled"
        rate = lambda path: results.get(f"{path}{sfx}_img_per_s")  # noqa: E731
        # the cached path runs with every student step, and a lone student before any sweep
        c, lone = rate("cached"), rate("lone_student")
        for other, label in (("conventional", "conventional"), ("online", "online"),
                             ("student_bound", "bound")):
            if rate(other):
                assert c is not None, "the cached path is timed with every student step"
                out[f"cached{name}/{label}{name}"] = c / rate(other)
        if rate("sweep_student"):  # student-epochs per second: a sweep of K against K separate runs
            assert lone is not None, "a lone student is timed before every sweep"
            out[f"sweep{students}/separate{name}"] = rate("sweep_student") / lone
        if rate("sweep_stacked_student"):
            assert lone is not None, "a lone student is timed before every sweep"
            out[f"sweep{students} stacked/separate{name}"] = rate("sweep_stacked_student") / lone
    if "teacher_cache_img_per_s" in results:
        out["cache-teacher/teacher-bound"] = results["teacher_cache_img_per_s"] / results["teacher_bound_img_per_s"]
    if "_compiled" in suffixes:
        out["compiled/eager bound"] = (results["student_bound_compiled_img_per_s"]
                                       / results["student_bound_img_per_s"])
        out["cached compiled/cached eager"] = results["cached_compiled_img_per_s"] / results["cached_img_per_s"]
    return out


def _eager_step(device):
    """The plain eager KD step most scripts run: its own student and AdamW, distill's default loss."""
    from vwwfast.devices import autocast
    from vwwfast.models import build_model
    from vwwfast.train.losses import KDRecipe
    student = build_model("mobilenet_v3_small").to(device, memory_format=FMT)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    recipe = KDRecipe.of(C.RecipeSettings())  # distill's default loss
    weights = recipe.at(1, 1)

    def step(x, y, z_t):
        with autocast(device):
            z_s = student(x.contiguous(memory_format=FMT))
        loss, _ = recipe.loss(z_s, z_t, y, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _compiled_step(cfg, device, paths, results):
    """The trainer's compiled step (train.student.Student with --compile on: CUDA graphs on
    the GPU), compiled before any clock starts (student_compile_s)."""
    from vwwfast.progress import info
    info("compiling the trainer's student step (not timed)")
    (s,) = _students(cfg, 1, device, compile_="on")
    s.step(*paths.resident())  # compiles
    results["student_compile_s"] = s.compile_s

    def step(x, y, z_t):  # the trainer's input layout, so one compiled graph serves every path
        s.step(x.contiguous(memory_format=FMT), y, z_t)
    return step


class _Paths:
    """Each timed path, given the student step to run."""

    def __init__(self, cfg, device, teacher, table, params, order):
        self.cfg, self.device, self.teacher, self.table = cfg, device, teacher, table
        self.params, self.order = params, order
        self.rows = lambda idx: params[idx]
        B = cfg.batch_size
        self._resident = (
            torch.randn(B, 3, STUDENT_SIZE, STUDENT_SIZE, device=device).contiguous(memory_format=FMT),
            torch.randint(0, 2, (B,), device=device), torch.randn(B, 2, device=device))

    def resident(self):
        """A batch already on the device: what the bounds step on."""
        return self._resident

    def batches(self):
        return self.cfg.batches + WARMUP

    @torch.no_grad()
    def teach(self, x):
        from vwwfast.devices import autocast
        with autocast(self.device):
            return self.teacher(x.contiguous(memory_format=FMT)).float()

    def logits(self, idx):
        return self.table.index_select(0, torch.as_tensor(idx, device=self.device)).float()

    def student_bound(self, step, suffix=""):
        info(f"student compute-only bound{_says(suffix)}")
        timer = _Timer(self.device)
        x, y, z = self.resident()
        for _ in range(self.batches()):
            step(x, y, z)
            timer.tick(len(y))
        return timer.rate()

    def teacher_bound(self, tsize):
        info(f"teacher compute-only bound ({tsize} px inference)")
        timer = _Timer(self.device)
        xt = torch.randn(self.cfg.batch_size, 3, tsize, tsize, device=self.device).contiguous(memory_format=FMT)
        for _ in range(self.batches()):
            self.teach(xt)
            timer.tick(len(xt))
        return timer.rate()

    def cached(self, step, renderer, suffix=""):
        from vwwfast.data.render.prefetch import iterate
        info(f"cached KD: render, cached logits, student step{_says(suffix)}")
        timer = _Timer(self.device)
        for x, y, idx in iterate(renderer, self.order, self.rows, self.cfg.batch_size, STUDENT_SIZE):
            step(x, y, self.logits(idx))
            timer.tick(len(y))
        return timer.rate()

    def online(self, step, student_r, teacher_r, tsize, suffix=""):
        from vwwfast.data.render.prefetch import iterate
        info(f"online KD on vwwfast's renderer: render both sizes, teacher forward, student step{_says(suffix)}")
        timer = _Timer(self.device)
        for x, y, idx in iterate(student_r, self.order, self.rows, self.cfg.batch_size, STUDENT_SIZE):
            xt, _ = teacher_r.render(idx, self.params[idx], tsize)
            step(x, y, self.teach(xt))
            timer.tick(len(y))
        return timer.rate()

    def teacher_cache(self, teacher_r, tsize):
        from vwwfast.data.render.prefetch import iterate
        info(f"teacher cache throughput: render at {tsize} px + teacher inference")
        timer = _Timer(self.device)
        for x, y, idx in iterate(teacher_r, self.order, self.rows, self.cfg.batch_size, tsize):
            self.teach(x)
            timer.tick(len(y))
        return timer.rate()

    def conventional(self, step, split, tsize, suffix=""):
        info(f"conventional online KD: DataLoader({self.cfg.workers} workers, PIL + torchvision), "
             f"teacher every step{_says(suffix)}")
        timer = _Timer(self.device)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ConventionalDataset(split, self.params, tsize), self.order.tolist()),
            batch_size=self.cfg.batch_size, num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False)
        for xs, xt, y, _ in loader:
            xs = xs.to(self.device, non_blocking=True).contiguous(memory_format=FMT)
            xt = xt.to(self.device, non_blocking=True).contiguous(memory_format=FMT)
            y = y.to(self.device, non_blocking=True)
            step(xs, y, self.teach(xt))
            timer.tick(len(y))
        return timer.rate()


def _says(suffix: str) -> str:
    return ", compiled step" if suffix else ""


def _students(cfg, k: int, device, compile_: str = "off"):
    """k students of the trainer itself (train.student.Student: its step, its random-state
    handling), with the default KD recipe, ready for epoch 1."""
    from vwwfast.train.student import Student
    students = []
    for i in range(k):
        scfg = C.resolve(C.DistillConfig, {"shards": cfg.shards, "batch_size": cfg.batch_size,
                                          "compile": compile_, "init_seed": i, "epochs": 1})
        # one "epoch" long enough for every timed path: OneCycle refuses a step past its end
        s = Student(scfg, "student", device, steps_per_epoch=8 * (cfg.batches + WARMUP) + 8)
        s.begin_epoch(1)
        students.append(s)
    return students


def _bench_sweep(cfg, results, renderer, paths, compiled: bool) -> None:
    """The cached path with the trainer's students: one, then a sweep of K on the same
    batches (one render and one logits read per batch for all), then with --stack-students
    the K stacked into one batched step. Reports images/s per student: K x images / time
    for the sweep. With --compile every student's step is compiled (before the clock)."""
    from vwwfast.data.render.prefetch import iterate
    from vwwfast.train.stacked import Stacked
    sfx = "_compiled" if compiled else ""
    runs = [(1, "lone_student", False), (cfg.students, "sweep_student", False)]
    if cfg.stack_students == "on":
        runs.append((cfg.students, "sweep_stacked_student", True))
    for k, key, stack in runs:
        students = _students(cfg, k, paths.device, "on" if compiled else "off")
        how = " stacked" if stack else ""
        info(f"cached KD, {k}{how} student{'s' if k > 1 else ''} of the trainer on each batch"
             f"{_says(sfx)}")
        stepper = Stacked(students) if stack else None
        step = stepper.step if stepper is not None else (lambda x, y, z: [s.step(x, y, z) for s in students])
        x, y, z = paths.resident()
        step(x, y, z)  # compiles, when compiled: not timed
        timer = _Timer(paths.device)
        for x, y, idx in iterate(renderer, paths.order, paths.rows, cfg.batch_size, STUDENT_SIZE):
            step(x.contiguous(memory_format=FMT), y, paths.logits(idx))
            timer.tick(len(y) * k)
        results[f"{key}{sfx}_img_per_s"] = timer.rate()
        if stepper is not None:
            stepper.close()
