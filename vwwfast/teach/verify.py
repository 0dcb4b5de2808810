"""`vwwfast cache-teacher --verify STORE`: every chunk read (checksums), the view parameters
regenerated, and a sample of the logits recomputed with the teacher."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vwwfast import config, distributed
from vwwfast.data.shards import ShardSet, view_defaults
from vwwfast.data.split import SplitData, val_params
from vwwfast.data.views import view_params
from vwwfast.devices import resolve_device
from vwwfast.errors import UserError
from vwwfast.models import model_from_checkpoint
from vwwfast.progress import bar, out, print_table
from vwwfast.teach.cache import TeacherCache
from vwwfast.teach.inference import Groups, ensemble_logits

# ---------------------------------------------------------------------------------------
# Verifying: `vwwfast cache-teacher --verify STORE`

# How far recomputed (fp32) logits may be from the stored float16 ones beyond float16
# rounding: each sample within atol + rtol * |z|, and the median difference within
# `median`. fp32 on both sides differs only by summation order. A store made under bf16
# autocast (CUDA) carries bf16's error, with a long tail: on an H100, MobileNetV3-Large
# at 96 px, 2,000 samples, two runs: median 0.0035-0.0043, 99th percentile 0.032-0.043,
# largest 0.072-0.178 (near z = 0). So a bf16 store is checked loosely per sample (about
# 3x the largest seen) and tightly in the median (5x), which a shifted, scaled or other
# teacher's logits fail. Another device may also decode JPEGs differently.
TOLERANCE = {"fp32": {"atol": 2e-3, "rtol": 2e-3, "median": 1e-3},
             "bf16 or another device": {"atol": 0.5, "rtol": 0.1, "median": 0.02}}


def _allowed(stored: np.ndarray, how: str, rounding_only: bool = False) -> np.ndarray:
    """Per logit: float16's half-ulp at the stored value, plus the slack of `how`."""
    a = np.abs(stored.astype(np.float32))
    half_ulp = np.spacing(a.astype(np.float16)).astype(np.float32) / 2
    return half_ulp if rounding_only else half_ulp + TOLERANCE[how]["atol"] + TOLERANCE[how]["rtol"] * a


def verify_store(cfg: config.CacheTeacherConfig) -> dict:
    """Read every chunk (checksums), compare the stored view parameters with those
    regenerated from the store's spec and seed, and recompute --samples random stored
    (view, sample) pairs and val samples with the teacher. Prints a table; a UserError
    when anything disagrees beyond float16 rounding."""
    if not distributed.is_main():
        return {}
    store, shards = _open(cfg)
    paths = _member_paths(cfg, store)
    done, val_done = store.views_completed, bool(store.attrs["val_done"])
    # 1. every chunk read: each checksum checked
    params, logits = store.params()[:done], store.logits()[:done]
    stored_val = store.val_logits() if val_done else None
    # 2. view parameters: a pure function of (spec, seed, view, sample, size)
    param_diff = _param_difference(store, shards, params)
    finite = bool(np.isfinite(logits).all() and (stored_val is None or np.isfinite(stored_val).all()))
    # 3. logits recomputed (fp32) on the renderer the store was made with, unless given
    job = _recomputing(cfg, store, shards, paths)
    rng = np.random.default_rng(0)  # the same command checks the same samples
    if done:
        _check_train_views(job, params, logits, rng)
    if stored_val is not None and len(stored_val):  # val_done
        _check_val(job, stored_val, rng)
    if param_diff > 1e-6:
        job.failures.insert(0, f"stored view parameters differ from those regenerated from its view spec "
                               f"and seed {store.seed} (by up to {param_diff:.3g})")
    if not finite:
        job.failures.insert(0, "stored logits hold NaN or infinite values")
    _report(job, param_diff)
    return {"ok": True, "param_diff": param_diff, "rows": job.rows}


@dataclass
class Recompute:
    """What --verify carries from check to check: the store, the teachers by input size,
    how they render, the tolerance that applies, and what the checks found."""

    cfg: config.CacheTeacherConfig
    store: TeacherCache
    shards: ShardSet
    paths: list[str]  # each member's checkpoint, in the fingerprint's order
    render: config.CacheTeacherConfig  # cfg with the decoded size the store was made at
    device: torch.device
    by_size: dict[int, list[torch.nn.Module]]  # members that share an input size share its rendering
    how: str  # a key of TOLERANCE
    rows: list[tuple[str, ...]] = field(default_factory=list)  # the table's
    failures: list[str] = field(default_factory=list)

    @property
    def made_with(self) -> dict:
        """The renderers the store was made with (cache-teacher records them)."""
        return self.store.attrs.get("renderer") or {}


def _open(cfg: config.CacheTeacherConfig) -> tuple[TeacherCache, ShardSet]:
    """The store (with a finished view or its val view) and the shards it was made from;
    refused in one line when --verify cannot check it."""
    fixed = config.given_flags(cfg, ("views", "input_size", "view_spec", "view", "seed", "out",
                                      "self_distill"))
    if fixed:
        raise UserError(f"--verify checks a store as it was made; drop {', '.join(fixed)}")
    store = TeacherCache(cfg.verify)
    if store.views_completed == 0 and not bool(store.attrs["val_done"]):
        raise UserError(f"{store.path} holds no finished view yet: nothing to verify")
    where = cfg.shards or store.attrs.get("shards")
    if not where and (store.path.parent / "manifest.json").is_file():
        where = str(store.path.parent)
    if not where:
        raise UserError(f"{store.path} does not say where its shards are: pass --shards DIR")
    shards = ShardSet.open(where)
    store.check_shards(shards)
    return store, shards


def _param_difference(store: TeacherCache, shards: ShardSet, params: np.ndarray) -> float:
    """The largest difference between the stored view parameters and those regenerated."""
    split = shards.split("train")
    n, diff = len(split), 0.0
    for v in range(len(params)):
        regen = view_params(store.spec, store.seed, v, np.arange(n), split.heights, split.widths)
        diff = max(diff, float(np.max(np.abs(regen - params[v]), initial=0.0)))
    return diff


def _recomputing(cfg: config.CacheTeacherConfig, store: TeacherCache, shards: ShardSet,
                 paths: list[str]) -> Recompute:
    """The members loaded, grouped by input size as when the store was made, and the
    tolerance: fp32 for a store made in fp32 checked on the CPU, else bf16's."""
    made = store.attrs.get("renderer") or {}
    render = dataclasses.replace(cfg, decoded_size=cfg.decoded_size if config.is_given(cfg, "decoded_size")
                                 else made.get("decoded_size", cfg.decoded_size))
    device = resolve_device(cfg.device)
    by_size: dict[int, list[torch.nn.Module]] = {}
    for m, path in zip(store.members, paths):
        model, _ = model_from_checkpoint(path, device=device)
        by_size.setdefault(m["input_size"], []).append(model.to(memory_format=torch.channels_last))
    how = "fp32" if store.attrs.get("precision") == "fp32" and device.type == "cpu" else "bf16 or another device"
    return Recompute(cfg, store, shards, paths, render, device, by_size, how)


def _check_train_views(job: Recompute, params: np.ndarray, logits: np.ndarray,
                       rng: np.random.Generator) -> None:
    """--samples random (view, sample) pairs of the finished views."""
    n = len(job.shards.split("train"))
    done = len(params)
    picks = rng.choice(done * n, size=min(job.cfg.samples, done * n), replace=False)
    views, idx = np.divmod(picks, n)
    _check(job, "train views", "train",
           [(params[v], np.sort(idx[views == v]), logits[v][np.sort(idx[views == v])])
            for v in np.unique(views)])


def _check_val(job: Recompute, stored_val: np.ndarray, rng: np.random.Generator) -> None:
    """--samples random val samples, on the val view cache-teacher made."""
    vsplit = job.shards.split("val")
    vidx = np.sort(rng.choice(len(vsplit), size=min(job.cfg.samples, len(vsplit)), replace=False))
    crop = view_defaults(job.shards.manifest)["val_center_crop"]  # as cache-teacher made them
    _check(job, "val", "val", [(val_params(vsplit, crop), vidx, stored_val[vidx])])


def _renderings(job: Recompute, split_name: str) -> Groups:
    """[(data, [models])] of a split: each input size on the renderer the store was made
    with (or --renderer)."""
    rec, groups = job.made_with, []
    for size, models in job.by_size.items():
        made = (rec.get("sizes") or {}).get(str(size)) or rec
        r = dataclasses.replace(job.render, renderer=job.render.renderer if config.is_given(job.cfg, "renderer")
                                else made.get(split_name, job.cfg.renderer))
        groups.append((SplitData(job.shards, split_name, r, job.device, size), models))
    return groups


def _check(job: Recompute, name: str, split_name: str,
           todo: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Recompute `todo` and judge it: a row of the table, and a failure when it is off.
    todo: [(params [N, P], indices, stored logits [len(indices), C])]."""
    groups = _renderings(job, split_name)
    renderer = groups[0][0].renderer.name
    try:
        diffs, excess, agree, over = _compare(job, name, groups, todo)
    finally:
        for data, _ in groups:
            data.close()
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    total, worst = len(d), float(d.max(initial=0.0))
    median = float(np.median(d)) if total else 0.0
    beyond = float(np.median(np.concatenate(excess))) if total else 0.0  # beyond float16 rounding
    job.rows.append((name, f"{total}", f"{median:.3g}", f"{worst:.3g}", f"{agree / max(total, 1):.2%}",
                     f"{over}", renderer))
    how = job.how
    if beyond > TOLERANCE[how]["median"]:
        job.failures.append(f"{name} logits differ from the teacher's by {beyond:.3g} beyond float16 "
                            f"rounding in the median ({how} explains up to {TOLERANCE[how]['median']:g})")
    elif over:
        job.failures.append(f"{name} logits differ from the teacher's beyond rounding ({how}) in {over} "
                            f"of {total} samples (largest difference {worst:.3g})")


def _compare(job: Recompute, name: str, groups: Groups,
             todo: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
             ) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    """The teachers rerun in fp32 on `todo`: per sample the largest |difference|, and that
    beyond float16 rounding; how many argmaxes agree, how many samples are beyond the
    tolerance."""
    diffs, excess, agree, over = [], [], 0, 0
    with bar(f"verify {name}", sum(len(i) for _, i, _ in todo) * len(groups)) as advance:
        for p, idx, want in todo:
            z, _ = ensemble_logits(groups, idx, p, job.cfg.batch_size, advance, exact=True)
            d = np.abs(z - want.astype(np.float32))
            diffs.append(d.max(axis=1))
            excess.append(np.clip(d - _allowed(want, job.how, rounding_only=True), 0, None).max(axis=1))
            over += int((d > _allowed(want, job.how)).any(axis=1).sum())
            agree += int((z.argmax(1) == want.astype(np.float32).argmax(1)).sum())
    return diffs, excess, agree, over


def _report(job: Recompute, param_diff: float) -> None:
    """The table and the chunks line; a UserError naming every failure, else the OK line."""
    store, paths, how = job.store, job.paths, job.how
    done, val_done = store.views_completed, bool(store.attrs["val_done"])
    who = f"teacher {paths[0]}" if len(paths) == 1 else f"ensemble of {', '.join(paths)}"
    print_table(f"verify {store.path} ({store.state()}; {who})",
                ["what", "samples", "median |logit diff|", "largest", "argmax agrees", f"beyond rounding ({how})",
                 "renderer"],
                job.rows)
    out.print(f"chunks: every chunk of {done} views{' and val' if val_done else ''} read, checksums OK; "
              f"view parameters {'equal' if param_diff <= 1e-6 else 'DIFFER from'} those regenerated "
              f"from the spec and seed (largest difference {param_diff:.3g})")
    if job.failures:
        raise UserError(f"{store.path}: {'; '.join(job.failures)}: it does not hold what its fingerprint "
                        f"says; delete it and run `vwwfast cache-teacher` again")
    names = ", ".join(Path(p).name for p in paths)
    out.print(f"OK: {store.path} holds {'teacher ' + names if len(paths) == 1 else 'the ensemble of ' + names}'s "
              f"logits")


def _member_paths(cfg: config.CacheTeacherConfig, store: TeacherCache) -> list[str]:
    """The checkpoint of each member (in the fingerprint's order): a --teacher whose sha256
    is the member's, else the path the store recorded; one that is not there, or not the
    member, is refused."""
    from vwwfast.files import file_sha256
    members, whos = store.members, {w.get("sha256"): w for w in store.teachers}
    given = {}
    for path in cfg.teacher or []:
        if not Path(path).is_file():
            raise UserError(f"teacher checkpoint not found: {path}")
        sha = file_sha256(path)
        if sha not in {m["sha256"] for m in members}:
            what = (f"the teacher of {store.path} ({members[0]['sha256'][:12]}...)" if len(members) == 1
                    else f"a member of {store.path}'s ensemble")
            raise UserError(f"{path} (sha256 {sha[:12]}...) is not {what}; pass the checkpoint it was "
                            f"made with")
        given[sha] = path
    paths = []
    for m in members:
        sha = m["sha256"]
        path = given.get(sha) or (whos.get(sha) or {}).get("checkpoint")
        whose = "the teacher" if len(members) == 1 else "a member"
        if not path or not Path(path).is_file():
            raise UserError(f"{whose} of {store.path} ({path or 'not recorded'}) is not there: "
                            f"pass --teacher with its checkpoint (sha256 {sha[:12]}...)")
        if sha not in given and file_sha256(path) != sha:
            raise UserError(f"{path} is no longer {whose} of {store.path} (sha256 {sha[:12]}...): pass "
                            f"--teacher with the checkpoint it was made with")
        paths.append(path)
    return paths
