"""What a training pass reads, and the batches it makes of it: one place, used by the loop
(`fit`) and by `vwwfast.KDData`, so any other trainer gets the batches `distill` trains on.

  resolve_configs   every setting the shards and the store fix, filled in or refused
  Inputs            device, shards, views-and-logits source (teach.teacher), rendered
                    train and val splits, the training subset and the holdout
  Inputs.epoch(e)   an epoch's view table and this rank's sample order
  Inputs.train_batches(epoch, B)   (x, y, z_t, idx): full batches of that order
  Inputs.val_batches(B)            (x, y, idx): every val sample of this rank, once
  Inputs.holdout_batches(B)        (x, y, idx): every --holdout sample of this rank, once
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.epochs import rank_slice, steps_per_rank, subset_order, training_samples
from vwwfast.data.shards import ShardSet, read_manifest, view_defaults, with_shard_views
from vwwfast.data.split import SplitData
from vwwfast.devices import resolve_device
from vwwfast.errors import UserError
from vwwfast.models import check_width, ensure_imagenet_weights
from vwwfast.teach import teacher as TS
from vwwfast.teach.settings import refuse_unused_teacher, resolve_settings
from vwwfast.train.evaluate import val_batches
from vwwfast.train.losses import KDRecipe


O = TypeVar("O")  # something Inputs holds open (a source, a rendered split)


def resolve_configs(cfgs: list[C.T], needs_teacher: bool | None = None) -> list[C.T]:
    """The configs with every setting the shards and the store fix filled in, after checking
    what was given against them (one line, UserError, before anything is made).
    needs_teacher: some student reads logits; None = as the configs' KD recipes say."""
    base = cfgs[0]
    teacher = base.teacher_settings()
    if teacher is not None and teacher.teacher_mode == "online" and teacher.cache:
        raise UserError("--cache is for --teacher-mode cached; drop it (or --teacher-mode online)")
    cached = teacher is not None and teacher.cache and teacher.teacher_mode == "cached"
    store = TS.open_store(teacher.cache) if cached and teacher is not None else None
    if needs_teacher is None:
        needs_teacher = any(KDRecipe.of_config(c).uses_teacher for c in cfgs)
    refuse_unused_teacher(teacher, needs_teacher)
    manifest = read_manifest(Path(base.shards))
    resolved = [resolve_settings(_shard_views(c, manifest, store), store) for c in cfgs]
    if base.train_limit is not None or base.holdout is not None:  # refused before any record
        training_samples(len(ShardSet.open(base.shards).split("train")), holdout=base.holdout,
                         holdout_seed=0, limit=base.train_limit, limit_seed=0)
    for c in resolved:
        check_width(c.arch, c.width, pretrained=c.pretrained)
    if base.stacks_students():
        from vwwfast.train.stacked import check_configs
        check_configs(resolved)
    for arch in sorted({c.arch for c in resolved if c.pretrained}):
        ensure_imagenet_weights(arch)  # offline: one line, before any record is made
    for c in resolved:
        check_model_budgets(c)
    return resolved


def full_steps(n: int, batch_size: int) -> int:
    """Full batches every rank runs an epoch of n training samples; a batch larger than a
    rank's share is refused (KDData only warns: Inputs.steps)."""
    steps = steps_per_rank(n, D.world_size(), batch_size, drop_last=True)
    if steps < 1:
        raise UserError(f"--batch-size {batch_size} is larger than the {n // D.world_size()} training "
                        f"samples each process gets; lower it")
    return steps


def check_model_budgets(cfg: C.TrainConfig) -> None:
    """--max-flash / --max-ram of distill, before any record: the int8 weights (about one
    byte per parameter) and the estimated int8 activation peak of the model the run would
    train (footprint.py), so that an oversized student is refused in one line."""
    budgets = cfg.budget_settings()
    flash, ram = (None, None) if budgets is None else (budgets.max_flash, budgets.max_ram)
    if flash is None and ram is None:
        return
    from vwwfast.footprint import check_budget, count_params, torch_peak_bytes
    from vwwfast.models import new_model
    from vwwfast.provenance import model_short
    model = new_model(cfg.arch, cfg.width)
    who = f"{model_short(cfg.arch, cfg.width)} at {cfg.input_size} px"
    if flash is not None:
        check_budget("--max-flash", flash, count_params(model),
                     f"{who}: int8 weights (estimate: 1 byte per parameter)")
    if ram is not None:
        check_budget("--max-ram", ram, torch_peak_bytes(model, cfg.input_size),
                     f"{who}: int8 activation peak (estimate)")


def _shard_views(cfg, manifest: dict, store):
    """The views the shard set asks for where the run leaves them open (Wake Vision: the
    centre crop its labels were made on), so that the run's config records them: the val
    view, and the training views unless a store's are taken as they are."""
    updates = {}
    if cfg.val_center_crop is None:
        updates["val_center_crop"] = view_defaults(manifest)["val_center_crop"]
    if store is None or store.plain or cfg.view_spec is not None:
        updates["view"] = with_shard_views(manifest, cfg.view)
    return dataclasses.replace(cfg, **updates)


@dataclass(frozen=True)
class Epoch:
    """One training epoch as every rank agrees on it: its number (from 1), the view table
    (one row per sample of the split) and this rank's samples in order."""
    number: int
    params: np.ndarray
    order: np.ndarray


class Inputs:
    """What every student of a pass shares: the device, the shards, where views and teacher
    logits come from (teach.teacher), the rendered train and val splits and the training
    subset. `cfg` has been through resolve_configs. needs_teacher: logits are read."""

    def __init__(self, cfg: C.TrainConfig, *, needs_teacher: bool):
        self.cfg = cfg
        self._opened: list = []  # what close() closes, in the order it was opened
        try:
            C.require(cfg, "shards")
            self.device = device = D.device() if D.active() else resolve_device(cfg.device)
            self.shards = shards = ShardSet.open(cfg.shards)
            for split in ("train", "val"):
                shards.require_both_classes(split)
            self.source = self._open(TS.make_source(cfg, shards, device, needs_teacher=needs_teacher))
            render = C.pick(C.RenderSettings, cfg)
            self.train = self._open(SplitData(shards, "train", render, device, cfg.input_size))
            self.val = self._open(SplitData(shards, "val", render, device, cfg.input_size))
            # the samples trained on (every one without --train-limit or --holdout), and
            # those set apart to choose the checkpoint on (none without --holdout)
            self.subset, self.holdout = training_samples(
                len(self.train), holdout=cfg.holdout, holdout_seed=cfg.holdout_seed,
                limit=cfg.train_limit, limit_seed=cfg.train_limit_seed, seed=cfg.seed)
        except BaseException:
            self.close()
            raise

    def _open(self, thing: O) -> O:
        self._opened.append(thing)
        return thing

    @cached_property
    def fingerprints(self) -> dict:
        return TS.source_fingerprints(self.source, self.shards)

    def steps(self, batch_size: int) -> int:
        """Full batches of `batch_size` every rank runs an epoch (each rank's remainder is
        left out, so every step sees a full batch and no rank waits on another)."""
        return steps_per_rank(len(self.subset), D.world_size(), batch_size, drop_last=True)

    def epoch(self, number: int) -> Epoch:
        """Epoch `number` (from 1): the source's views and this rank's part of the order."""
        params = self.source.views(number)
        order = rank_slice(subset_order(self.subset, self.cfg.seed, number - 1), D.rank(),
                           D.world_size())
        return Epoch(number, params, order)

    def train_batches(self, epoch: Epoch, batch_size: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray]]:
        """(x, y, z_t, idx) of every full batch of the epoch's order, rendered ahead; z_t the
        source's logits of those samples and views, None when no logits are read."""
        source = self.source
        order = epoch.order[:self.steps(batch_size) * batch_size]
        for x, y, idx in self.train.batches(order, epoch.params, batch_size):
            z_t = source.logits(epoch.number, idx, epoch.params) if source.needs_teacher else None
            yield x, y, z_t, idx

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(x, y, idx) of every val sample of this rank once, as evaluation renders them."""
        return val_batches(self.val, batch_size, bool(self.cfg.val_center_crop))

    def holdout_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(x, y, idx) of every --holdout sample of this rank once (training samples never
        trained on), rendered as val is; nothing without a holdout."""
        return val_batches(self.train, batch_size, bool(self.cfg.val_center_crop), self.holdout)

    def close(self) -> None:
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
