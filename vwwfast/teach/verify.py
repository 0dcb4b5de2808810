"""`vwwfast cache-teacher --verify STORE`: every chunk read (checksums), the view parameters
regenerated, and a sample of the logits recomputed with the teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.data.shards import view_defaults
from vwwfast.data.split import SplitData, val_params
from vwwfast.errors import UserError
from vwwfast.teach.cache import TeacherCache
from vwwfast.teach.teacher import ensemble_logits

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


def verify_store(cfg) -> dict:
    """Read every chunk (checksums), compare the stored view parameters with those
    regenerated from the store's spec and seed, and recompute --samples random stored
    (view, sample) pairs and val samples with the teacher. Prints a table; a UserError
    when anything disagrees beyond float16 rounding."""
    from vwwfast import distributed as D
    from vwwfast.data.shards import ShardSet
    from vwwfast.data.views import view_params
    from vwwfast.devices import resolve_device
    from vwwfast.models import model_from_checkpoint
    from vwwfast.progress import bar, out, print_table

    if not D.is_main():
        return {}
    fixed = C.given_flags(cfg, ("views", "input_size", "view_spec", "view", "seed", "out", "self_distill"))
    if fixed:
        raise UserError(f"--verify checks a store as it was made; drop {', '.join(fixed)}")
    store = TeacherCache(cfg.verify)
    done, val_done = store.views_completed, bool(store.attrs["val_done"])
    if done == 0 and not val_done:
        raise UserError(f"{store.path} holds no finished view yet: nothing to verify")
    where = cfg.shards or store.attrs.get("shards")
    if not where and (store.path.parent / "manifest.json").is_file():
        where = str(store.path.parent)
    if not where:
        raise UserError(f"{store.path} does not say where its shards are: pass --shards DIR")
    shards = ShardSet.open(where)
    store.check_shards(shards)
    paths = _member_paths(cfg, store)
    # 1. every chunk read: each checksum checked
    params, logits = store.params()[:done], store.logits()[:done]
    stored_val = store.val_logits() if val_done else None
    # 2. view parameters: a pure function of (spec, seed, view, sample, size)
    split = shards.split("train")
    spec, n = store.spec, len(split)
    param_diff = 0.0
    for v in range(done):
        regen = view_params(spec, store.seed, v, np.arange(n), split.heights, split.widths)
        param_diff = max(param_diff, float(np.max(np.abs(regen - params[v]), initial=0.0)))
    finite = bool(np.isfinite(logits).all() and (stored_val is None or np.isfinite(stored_val).all()))

    # 3. logits recomputed (fp32) on the renderer the store was made with, unless given
    rec = store.attrs.get("renderer") or {}
    rcfg = dataclasses.replace(cfg, decoded_size=cfg.decoded_size if C.is_given(cfg, "decoded_size")
                               else rec.get("decoded_size", cfg.decoded_size))
    device = resolve_device(cfg.device)
    by_size: dict = {}  # the members that share an input size share its rendering, as when made
    for m, path in zip(store.members, paths):
        model, _ = model_from_checkpoint(path, device=device)
        by_size.setdefault(m["input_size"], []).append(model.to(memory_format=torch.channels_last))
    how = "fp32" if store.attrs.get("precision") == "fp32" and device.type == "cpu" else "bf16 or another device"
    rng = np.random.default_rng(0)  # the same command checks the same samples
    rows, failures = [], []

    def check(name, split_name, todo):
        """todo: [(params [N, P], indices, stored logits [len(indices), C])]."""
        groups = []
        for size, models in by_size.items():
            made = (rec.get("sizes") or {}).get(str(size)) or rec
            r = dataclasses.replace(rcfg, renderer=rcfg.renderer if C.is_given(cfg, "renderer")
                                    else made.get(split_name, cfg.renderer))
            groups.append((SplitData(shards, split_name, r, device, size), models))
        data = groups[0][0]
        diffs, excess, agree, over = [], [], 0, 0
        try:
            with bar(f"verify {name}", sum(len(i) for _, i, _ in todo) * len(groups)) as advance:
                for p, idx, want in todo:
                    z, _ = ensemble_logits(groups, idx, p, cfg.batch_size, advance, exact=True)
                    d = np.abs(z - want.astype(np.float32))
                    diffs.append(d.max(axis=1))
                    excess.append(np.clip(d - _allowed(want, how, rounding_only=True), 0, None).max(axis=1))
                    over += int((d > _allowed(want, how)).any(axis=1).sum())
                    agree += int((z.argmax(1) == want.astype(np.float32).argmax(1)).sum())
        finally:
            for d, _ in groups:
                d.close()
        d = np.concatenate(diffs) if diffs else np.zeros(0)
        total, worst = len(d), float(d.max(initial=0.0))
        median = float(np.median(d)) if total else 0.0
        beyond = float(np.median(np.concatenate(excess))) if total else 0.0  # beyond float16 rounding
        rows.append((name, f"{total}", f"{median:.3g}", f"{worst:.3g}", f"{agree / max(total, 1):.2%}",
                     f"{over}", data.renderer.name))
        if beyond > TOLERANCE[how]["median"]:
            failures.append(f"{name} logits differ from the teacher's by {beyond:.3g} beyond float16 "
                            f"rounding in the median ({how} explains up to {TOLERANCE[how]['median']:g})")
        elif over:
            failures.append(f"{name} logits differ from the teacher's beyond rounding ({how}) in {over} "
                            f"of {total} samples (largest difference {worst:.3g})")

    if done:
        k = min(cfg.samples, done * n)
        picks = rng.choice(done * n, size=k, replace=False)
        views, idx = np.divmod(picks, n)
        check("train views", "train",
              [(params[v], np.sort(idx[views == v]), logits[v][np.sort(idx[views == v])])
               for v in np.unique(views)])
    if val_done and len(stored_val):
        vsplit = shards.split("val")
        vidx = np.sort(rng.choice(len(vsplit), size=min(cfg.samples, len(vsplit)), replace=False))
        crop = view_defaults(shards.manifest)["val_center_crop"]  # as cache-teacher made them
        check("val", "val", [(val_params(vsplit, crop), vidx, stored_val[vidx])])
    if param_diff > 1e-6:
        failures.insert(0, f"stored view parameters differ from those regenerated from its view spec "
                           f"and seed {store.seed} (by up to {param_diff:.3g})")
    if not finite:
        failures.insert(0, "stored logits hold NaN or infinite values")
    who = f"teacher {paths[0]}" if len(paths) == 1 else f"ensemble of {', '.join(paths)}"
    print_table(f"verify {store.path} ({store.state()}; {who})",
                ["what", "samples", "median |logit diff|", "largest", "argmax agrees", f"beyond rounding ({how})",
                 "renderer"],
                rows)
    out.print(f"chunks: every chunk of {done} views{' and val' if val_done else ''} read, checksums OK; "
              f"view parameters {'equal' if param_diff <= 1e-6 else 'DIFFER from'} those regenerated "
              f"from the spec and seed (largest difference {param_diff:.3g})")
    if failures:
        raise UserError(f"{store.path}: {'; '.join(failures)}: it does not hold what its fingerprint "
                        f"says; delete it and run `vwwfast cache-teacher` again")
    names = ", ".join(Path(p).name for p in paths)
    out.print(f"OK: {store.path} holds {'teacher ' + names if len(paths) == 1 else 'the ensemble of ' + names}'s "
              f"logits")
    return {"ok": True, "param_diff": param_diff, "rows": rows}


def _member_paths(cfg, store) -> list[str]:
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
