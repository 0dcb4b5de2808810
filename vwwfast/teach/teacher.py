"""Where a run's training views and teacher logits come from: nothing else.

A source gives the loop the view parameters of an epoch (`views`) and, for students that
learn from a teacher, the teacher logits of a batch (`logits`); `describe` and
`fingerprint` say what the run's record keeps about it. The KD recipe lives in losses.py.

  OwnViews       views drawn from (spec, seed, epoch); no teacher
  CachedTeacher  a teacher cache: its logits, and its views when it is augmented (a plain
                 store's student draws its own views and reads the same plain-view logits)
  OnlineTeacher  the teacher run on every batch, on the student's views at its own size

teach/settings.py first fills in (or checks) every setting a store fixes, so the config a
run saves says what it trained on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vwwfast.config import RenderSettings, TrainConfig, pick
from vwwfast.data.split import SplitData
from vwwfast.data.views import view_params
from vwwfast.devices import autocast
from vwwfast.errors import UserError
from vwwfast.files import file_sha256
from vwwfast.models import describe_teacher, model_from_checkpoint
from vwwfast.provenance import __version__
from vwwfast.teach.description import TeacherDescription, TeacherModel
from vwwfast.teach.settings import check_online_teacher
from vwwfast.viewspec import ViewSpec, view_spec


class OwnViews:
    """Views drawn by the run itself: epoch e (from 1) uses view stream e - 1."""

    needs_teacher = False

    def __init__(self, spec: ViewSpec, seed: int, split):
        self.spec, self.seed, self.split = spec, seed, split

    def views(self, epoch: int) -> np.ndarray:
        return view_params(self.spec, self.seed, epoch - 1, np.arange(len(self.split)),
                           self.split.heights, self.split.widths)

    def logits(self, epoch: int, idx, params) -> torch.Tensor | None:
        return None

    def epoch_note(self, epoch: int) -> dict:
        return {}

    def remarks(self, epochs: int) -> list[str]:
        return []

    def describe(self) -> TeacherDescription | None:
        return None

    def fingerprint(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class CachedTeacher(OwnViews):
    """Logits (and, for an augmented store, the views) read from a teacher cache, held on
    the device as one [E, N, C] float16 table."""

    needs_teacher = True

    def __init__(self, store, spec: ViewSpec, seed: int, split, device, read_logits: bool = True):
        super().__init__(spec, seed, split)
        self.store = store
        if store.num_train != len(split):
            raise UserError(f"{store.path} holds {store.num_train} train samples, the shards {len(split)}")
        self._view: tuple[int, np.ndarray] | None = None  # the one view held: (number, params)
        self.table = torch.from_numpy(store.logits()).to(device) if read_logits else None
        self.needs_teacher = read_logits

    def view_of(self, epoch: int) -> int:
        return store_view(self.store, epoch)

    def views(self, epoch):
        if self.store.plain:  # a plain store: the student draws its own views
            return super().views(epoch)
        v = self.view_of(epoch)
        if self._view is None or self._view[0] != v:  # read view by view, never all of them
            self._view = (v, self.store.params(v))  # in this version's column order
        return self._view[1]

    def logits(self, epoch, idx, params):
        if self.table is None:
            return None
        idx = torch.as_tensor(idx, device=self.table.device, dtype=torch.long)
        return self.table[self.view_of(epoch)].index_select(0, idx).float()

    def view_logits(self, epoch: int) -> np.ndarray:
        """float32 [N, C]: the logits of every sample for `epoch`'s view, read from the store
        (one view; the device table need not be held)."""
        return self.store.read("train/logits", (self.view_of(epoch),)).astype(np.float32)

    def epoch_note(self, epoch):
        return {"view": self.view_of(epoch)}

    def remarks(self, epochs):
        E = self.store.num_views
        if not self.store.plain and epochs > E:
            return [f"{epochs} epochs over {E} cached views: epoch e replays view (e - 1) mod {E}"]
        if self.store.plain:
            return ["plain store: the student draws its own augmented views; every epoch reads "
                    "the same plain-view logits"]
        return []

    def describe(self) -> TeacherDescription:
        fp, store = self.store.fingerprint, self.store
        cached = TeacherDescription(
            mode="cached", store=str(store.path), store_fingerprint=store.fingerprint_hash,
            views=store.num_views, logits_used=self.table is not None,
            train_view_acc=_mean(store.attrs.get("train_view_acc")), val_acc=store.attrs.get("val_acc"))
        if "teachers" in fp:  # an ensemble: each member as models.describe_teacher says it
            return replace(cached, members=member_descriptions(store), ensemble=fp["ensemble"])
        who = getattr(store, "teacher", None) or {}
        model = TeacherModel(checkpoint=who.get("checkpoint"), sha256=fp["teacher_sha256"],
                             arch=fp["teacher_arch"], width=who.get("width") or 1.0,
                             input_size=fp["teacher_input_size"], role=who.get("role"),
                             run=who.get("run"), run_val_acc=who.get("run_val_acc"))
        return replace(cached, model=model, trained_input_size=who.get("input_size"))

    def fingerprint(self):
        if "teachers" in self.store.fingerprint:  # the store's fingerprint names every member
            return {"store_fingerprint": self.store.fingerprint_hash}
        return {"store_fingerprint": self.store.fingerprint_hash,
                "teacher_sha256": self.store.fingerprint["teacher_sha256"]}


def store_view(store, epoch: int) -> int:
    """The store's view that epoch `epoch` (from 1) reads: (epoch - 1) mod E; a plain store's
    one view always."""
    return 0 if store.plain else (epoch - 1) % store.num_views


class OnlineTeacher(OwnViews):
    """The teacher runs on every batch, on the student's views rendered at its own size."""

    needs_teacher = True

    def __init__(self, path: str, ckpt: dict, spec, seed, shards, render: RenderSettings, device):
        super().__init__(spec, seed, shards.split("train"))
        self.path, self.ckpt = path, ckpt
        self.sha256 = file_sha256(path)
        self.model, _ = model_from_checkpoint(path, device=device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.size = ckpt["input_size"]
        self.render = SplitData(shards, "train", render, device, self.size)

    @torch.no_grad()
    def logits(self, epoch, idx, params):
        idx_np = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        # params: the whole view table, so a mixed view blends in its partner's rendering
        x, _ = self.render.render_batch(idx_np, params, self.size)
        with autocast(x.device):
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()

    def describe(self) -> TeacherDescription:
        return TeacherDescription(mode="online", model=TeacherModel.from_dict(
            describe_teacher(self.path, self.ckpt, self.sha256)))

    def fingerprint(self):
        return {"teacher_sha256": self.sha256}

    def close(self):
        self.render.close()


def _mean(xs):
    return float(np.mean(xs)) if xs else None


def member_descriptions(store) -> list[TeacherModel]:
    """Each member of an ensemble store: what the store recorded of it (checkpoint, run,
    role, ...), with its sha256, arch and input size from the fingerprint."""
    whos = {w.get("sha256"): w for w in store.teachers}
    return [TeacherModel.from_dict({**(whos.get(m["sha256"]) or {}), "sha256": m["sha256"],
                                    "arch": m["arch"], "input_size": m["input_size"]})
            for m in store.members]


# ---------------------------------------------------------------------------------------
# Making a source

def open_store(path):
    from vwwfast.teach.cache import TeacherCache
    store = TeacherCache(path)
    store.check_complete()
    return store


def make_source(cfg: TrainConfig, shards, device, *, needs_teacher: bool) -> OwnViews:
    """The views-and-logits source of a run (or of a sweep: every student shares it): its
    view settings, its teacher settings (None for a teacher run) and, for an online teacher,
    its render settings. `cfg` has been through resolve_settings. needs_teacher: some
    student uses logits."""
    split = shards.split("train")
    spec = view_spec(cfg.view_spec or "default", cfg.view)
    seed = cfg.view_seed if cfg.view_seed is not None else cfg.seed
    teacher = cfg.teacher_settings()
    if teacher is None:
        return OwnViews(spec, seed, split)
    if teacher.teacher_mode == "online" and needs_teacher:
        ckpt = check_online_teacher(teacher)
        render = pick(RenderSettings, cfg)
        return OnlineTeacher((teacher.teacher or [])[0], ckpt, spec, seed, shards, render, device)
    if teacher.cache and teacher.teacher_mode == "cached":
        store = open_store(teacher.cache)
        store.check_shards(shards)
        return CachedTeacher(store, spec, seed, split, device, read_logits=needs_teacher)
    if needs_teacher:
        from vwwfast.teach.cache import stores_hint
        raise UserError("--teacher-mode cached needs --cache PATH (from `vwwfast cache-teacher`), "
                        f"or use --alpha 0 for a supervised student{stores_hint(shards.root)}")
    return OwnViews(spec, seed, split)


def source_fingerprints(source, shards) -> dict:
    from vwwfast.provenance import versions
    return {"shards_content_hash": shards.content_hash, "vwwfast_version": __version__,
            "git": versions().get("git"), **source.fingerprint()}


def run_train_views(config: dict, split, epoch: int = 1) -> np.ndarray:
    """The training view parameters [N, P] a run (its resolved config as a dict) used at
    `epoch` (from 1): the store's view (epoch - 1) mod E for a run with an augmented
    cache, else the views it drew itself."""
    if config.get("cache") and config.get("teacher_mode", "cached") == "cached":
        store = open_store(config["cache"])
        if not store.plain:
            return store.params((epoch - 1) % store.num_views)
    spec = view_spec(config.get("view_spec") or "default", config.get("view"))
    seed = config.get("view_seed")
    seed = config.get("seed", 0) if seed is None else seed
    return OwnViews(spec, seed, split).views(epoch)
