"""Where a distilling student gets teacher logits: from the cache (default) or online.

Both give the loop the same four things: the KD settings, the training views of an epoch,
the teacher logits of a batch, and lines for the run's record.
"""

from __future__ import annotations

import numpy as np
import torch

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.data import SplitData
from vwwfast.models import autocast


class Teacher:
    provides_views = False

    def __init__(self, cfg: C.DistillConfig):
        self.cfg = cfg
        self.alpha, self.alpha_end = cfg.alpha, cfg.alpha_end
        self.temperature, self.confidence_gamma = cfg.temperature, cfg.confidence_gamma
        self.margin_weight, self.margin_weight_end = cfg.margin_weight, cfg.margin_weight_end
        self.margin_decay_end_epoch = cfg.margin_decay_end_epoch

    def epoch_note(self, epoch: int) -> dict:
        return {}

    def summary(self) -> dict:
        return {"teacher_mode": self.cfg.teacher_mode}


class CachedTeacher(Teacher):
    """Logits (and, for an augmented store, the views) read from a teacher cache."""

    def __init__(self, cfg):
        from vwwfast.teacher_cache import TeacherCache
        super().__init__(cfg)
        if not cfg.cache:
            raise UserError("--teacher-mode cached needs --cache PATH (from `vwwfast cache-teacher`), "
                            "or use --alpha 0 for a supervised student")
        self.store = TeacherCache(cfg.cache)
        self.store.check_complete()
        self.provides_views = not self.store.plain

    def prepare(self, shards, train, val, device):
        from vwwfast.progress import info, warn
        self.store.check_shards(shards)
        if len(train) != self.store.group["train/logits"].shape[1]:
            raise UserError(f"{self.store.path} holds {self.store.group['train/logits'].shape[1]} "
                            f"train samples, the shards {len(train)}")
        self.params = self.store.params() if self.provides_views else None
        self.table = torch.from_numpy(self.store.logits()).to(device)  # [E, N, C] float16
        E = self.store.num_views
        if self.provides_views and self.cfg.epochs > E:
            warn(f"{self.cfg.epochs} epochs over {E} cached views: epoch e uses view e mod {E}")
        info(f"teacher: cache {self.store.path} ({E} view{'s' if E > 1 else ''}, "
             f"fingerprint {self.store.fingerprint_hash})")

    def view_of(self, epoch: int) -> int:
        return epoch % self.store.num_views

    def train_params(self, epoch: int) -> np.ndarray:
        return self.params[self.view_of(epoch)]

    def logits(self, epoch, idx, params):
        idx = torch.as_tensor(idx, device=self.table.device, dtype=torch.long)
        return self.table[self.view_of(epoch)].index_select(0, idx).float()

    def epoch_note(self, epoch):
        return {"view": self.view_of(epoch)}

    def card_lines(self):
        fp = self.store.fingerprint
        return [f"teacher: cached, store `{self.store.path}`",
                f"cache fingerprint: {self.store.fingerprint_hash} (teacher {fp['teacher_arch']} "
                f"at {fp['teacher_input_size']} px, sha256 {fp['teacher_sha256'][:12]}, "
                f"{self.store.num_views} views, seed {fp['seed']})",
                f"teacher acc on the cached train views: {np.mean(self.store.attrs['train_view_acc']):.4f}, "
                f"on val: {self.store.attrs['val_acc']:.4f}"]

    def summary(self):
        return {"teacher_mode": "cached", "cache": str(self.store.path),
                "cache_fingerprint": self.store.fingerprint_hash}


class OnlineTeacher(Teacher):
    """The teacher runs on every batch, on the student's views rendered at its own size."""

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.teacher:
            raise UserError("--teacher-mode online needs --teacher CHECKPOINT")

    def prepare(self, shards, train, val, device):
        from vwwfast.models import model_from_checkpoint
        self.model, ckpt = model_from_checkpoint(self.cfg.teacher, device=device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.size = ckpt["input_size"]
        self.arch = ckpt["arch"]
        self.render = SplitData(shards, "train", self.cfg, device, self.size)

    def train_params(self, epoch):
        raise AssertionError("online teachers use the student's views")

    @torch.no_grad()
    def logits(self, epoch, idx, params):
        idx_np = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        x, _ = self.render.renderer.render(idx_np, params[idx_np], self.size)
        with autocast(x.device):
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()

    def card_lines(self):
        return [f"teacher: online, `{self.cfg.teacher}` ({self.arch} at {self.size} px)"]


def make_teacher(cfg: C.DistillConfig):
    """None for a supervised student (alpha 0 throughout): no teacher is loaded."""
    if cfg.alpha < 0 or cfg.alpha > 1 or (cfg.alpha_end is not None and not 0 <= cfg.alpha_end <= 1):
        raise UserError("--alpha and --alpha-end must lie within 0..1")
    if cfg.temperature <= 0:
        raise UserError("--temperature must be positive")
    if cfg.alpha == 0 and not cfg.alpha_end:
        return None
    if cfg.teacher_mode == "cached":
        return CachedTeacher(cfg)
    if cfg.teacher_mode == "online":
        return OnlineTeacher(cfg)
    raise UserError(f"--teacher-mode must be 'cached' or 'online', got '{cfg.teacher_mode}'")


def run_train_views(config: dict, split, epoch: int = 1) -> np.ndarray:
    """The training view parameters [N, P] a run (its resolved config as a dict) used at
    `epoch` (from 1): the store's view (epoch - 1) mod E for a run with an augmented
    cache, else the views it drew itself."""
    from vwwfast.teacher_cache import TeacherCache
    from vwwfast.views import view_params, view_spec
    if config.get("cache") and config.get("teacher_mode", "cached") == "cached":
        store = TeacherCache(config["cache"])
        if not store.plain:
            return store.params()[(epoch - 1) % store.num_views]
    spec = view_spec(config.get("view_spec", "default"), config.get("view"))
    return view_params(spec, config.get("seed", 0), epoch - 1, np.arange(len(split)),
                       split.heights, split.widths)
