"""Where a run's training views and teacher logits come from: nothing else.

A source gives the loop the view parameters of an epoch (`views`) and, for students that
learn from a teacher, the teacher logits of a batch (`logits`); `describe` and
`fingerprint` say what the run's record keeps about it. The KD recipe lives in losses.py.

  OwnViews       views drawn from (spec, seed, epoch); no teacher
  CachedTeacher  a teacher cache: its logits, and its views when it is augmented (a plain
                 store's student draws its own views and reads the same plain-view logits)
  OnlineTeacher  the teacher run on every batch, on the student's views at its own size

`resolve_settings` first fills in (or checks) every setting a store fixes, so the config a
run saves says what it trained on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vwwfast.data.split import SplitData
from vwwfast.data.views import ViewSpec, spec_conflicts, view_params, view_spec
from vwwfast.devices import autocast
from vwwfast.errors import UserError
from vwwfast.files import file_sha256
from vwwfast.models import (
    check_teacher,
    describe_teacher,
    load_checkpoint,
    model_from_checkpoint,
)
from vwwfast.provenance import __version__


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

    def describe(self) -> dict | None:
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

    def describe(self):
        fp, who = self.store.fingerprint, getattr(self.store, "teacher", None) or {}
        if "teachers" in fp:  # an ensemble: each member as models.describe_teacher says it
            return {"mode": "cached", "store": str(self.store.path), "ensemble": fp["ensemble"],
                    "store_fingerprint": self.store.fingerprint_hash, "views": self.store.num_views,
                    "members": member_descriptions(self.store),
                    "logits_used": self.table is not None,
                    "train_view_acc": _mean(self.store.attrs.get("train_view_acc")),
                    "val_acc": self.store.attrs.get("val_acc")}
        return {"mode": "cached", "store": str(self.store.path),
                "store_fingerprint": self.store.fingerprint_hash, "views": self.store.num_views,
                "checkpoint": who.get("checkpoint"), "sha256": fp["teacher_sha256"],
                "arch": fp["teacher_arch"], "width": who.get("width") or 1.0,
                "input_size": fp["teacher_input_size"], "trained_input_size": who.get("input_size"), "role": who.get("role"),
                "run": who.get("run"), "run_val_acc": who.get("run_val_acc"),
                "logits_used": self.table is not None,
                "train_view_acc": _mean(self.store.attrs.get("train_view_acc")),
                "val_acc": self.store.attrs.get("val_acc")}

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

    def __init__(self, path: str, ckpt: dict, spec, seed, shards, cfg, device):
        super().__init__(spec, seed, shards.split("train"))
        self.path, self.ckpt = path, ckpt
        self.sha256 = file_sha256(path)
        self.model, _ = model_from_checkpoint(path, device=device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.size = ckpt["input_size"]
        self.render = SplitData(shards, "train", cfg, device, self.size)

    @torch.no_grad()
    def logits(self, epoch, idx, params):
        idx_np = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        # params: the whole view table, so a mixed view blends in its partner's rendering
        x, _ = self.render.render_batch(idx_np, params, self.size)
        with autocast(x.device):
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()

    def describe(self):
        return {"mode": "online", "store": None, **describe_teacher(self.path, self.ckpt, self.sha256)}

    def fingerprint(self):
        return {"teacher_sha256": self.sha256}

    def close(self):
        self.render.close()


def _mean(xs):
    return float(np.mean(xs)) if xs else None


def member_descriptions(store) -> list[dict]:
    """Each member of an ensemble store: what the store recorded of it (checkpoint, run,
    role, ...), with its sha256, arch and input size from the fingerprint."""
    whos = {w.get("sha256"): w for w in store.teachers}
    return [{**(whos.get(m["sha256"]) or {"checkpoint": None, "role": None, "run": None,
                                         "run_val_acc": None}),
             "sha256": m["sha256"], "arch": m["arch"], "input_size": m["input_size"]}
            for m in store.members]


def who_teaches(t: dict) -> str:
    """One teacher or an ensemble in words (the console's line when a run starts)."""
    def one(m):
        who = f"{m.get('arch')}" + (f" of width {m['width']:g}" if (m.get("width") or 1.0) != 1.0
                                    else "") + f" at {m.get('input_size')} px"
        if m.get("role") == "student":
            who += ", a STUDENT's checkpoint (--self-distill)"
        if m.get("run"):
            acc = m.get("run_val_acc")
            who += f", run {m['run']}" + (f" (val acc {acc:.4f})" if acc is not None else "")
        return who
    if t.get("members"):
        return (f"an ensemble of {len(t['members'])} (the log of their mean probability): "
                + "; ".join(one(m) for m in t["members"]))
    return one(t)


# ---------------------------------------------------------------------------------------
# Settings a store or a teacher checkpoint fixes

def open_store(path):
    from vwwfast.teach.cache import TeacherCache
    store = TeacherCache(path)
    store.check_complete()
    return store


def resolve_settings(cfg, store=None):
    """The config with every setting the store fixes filled in, after checking what the user
    gave against it: view spec and settings, view seed, teacher input size, arch, checkpoint.
    Without a store: the defaults the fields' help texts name (the view seed and the
    --train-limit subset's seed are --seed's when unset)."""
    updates: dict = {}
    if store is not None and not store.plain:
        fp = store.fingerprint
        base = store.attrs.get("view_spec_name", "default")
        have = fp["view_spec"]
        conflicts = spec_conflicts(have, cfg.view_spec, cfg.view)
        if conflicts:
            raise UserError(f"{store.path} was made with other views than this run asks for "
                            f"({'; '.join(conflicts)}); drop the view settings to use the "
                            f"store's, or make a store with them")
        if cfg.view_seed is not None and cfg.view_seed != fp["seed"]:
            raise UserError(f"--view-seed {cfg.view_seed} differs from the seed of {store.path} "
                            f"({fp['seed']}); drop it to use the store's views")
        updates.update(view_spec=base, view=ViewSpec.from_dict(have).non_default(base),
                       view_seed=fp["seed"])
    else:
        updates.update(view_spec=cfg.view_spec or "default",
                       view_seed=cfg.view_seed if cfg.view_seed is not None else cfg.seed)
    if cfg.train_limit is not None and cfg.train_limit_seed is None:
        updates["train_limit_seed"] = cfg.seed  # recorded: the subset is fixed by it
    elif cfg.train_limit is None and cfg.train_limit_seed is not None:
        raise UserError("--train-limit-seed is the seed of --train-limit's subset: give --train-limit N, "
                        "or drop it")
    if store is not None:
        members, whos = store.members, store.teachers
        sizes = sorted({m["input_size"] for m in members})
        archs = sorted({m["arch"] for m in members})
        held = f"holds logits at {_words(sizes)} px" if len(members) == 1 else \
            f"holds the logits of an ensemble at {_words(sizes)} px"
        if cfg.teacher_input_size is not None and sizes != [cfg.teacher_input_size]:
            raise UserError(f"teacher input size is {cfg.teacher_input_size} in the config but "
                            f"{store.path} {held}")
        if cfg.teacher_arch is not None and archs != [cfg.teacher_arch]:
            raise UserError(f"teacher arch is {cfg.teacher_arch} in the config but {store.path} was "
                            f"made by {'a ' if len(members) == 1 else 'an ensemble of '}{_words(archs)}")
        widths = sorted({float(w.get("width") or 1.0) for w in whos}) or [1.0]
        if cfg.teacher_width is not None and widths != [cfg.teacher_width]:
            raise UserError(f"teacher width is {cfg.teacher_width:g} in the config but {store.path} "
                            f"was made by {'a teacher' if len(members) == 1 else 'an ensemble'} of "
                            f"width {_words(f'{w:g}' for w in widths)}")
        students = [w for w in whos if w.get("role") == "student"]
        if students and not cfg.self_distill:
            raise UserError(f"{store.path} holds the logits of a student ({students[0].get('run') or 'a student run'}); "
                            f"pass --self-distill to distil from it on purpose")
        for who in whos:
            if cfg.teacher_pretrained is not None and who.get("pretrained") is not None \
                    and bool(who["pretrained"]) != cfg.teacher_pretrained:
                whose = "'s teacher" if len(members) == 1 else f"'s member {who.get('checkpoint')}"
                raise UserError(f"teacher pretrained is {str(cfg.teacher_pretrained).lower()} in the "
                                f"config but {store.path}{whose} was trained with pretrained "
                                f"{str(bool(who['pretrained'])).lower()}")
        if cfg.teacher:
            _check_given_teachers(cfg.teacher, store)
        # one value when the members share it; an ensemble of several sizes or archs leaves
        # it unset (its members are named in the run's summary and card)
        updates["teacher_input_size"] = sizes[0] if len(sizes) == 1 else None
        updates["teacher_arch"] = archs[0] if len(archs) == 1 else None
        updates["teacher_width"] = widths[0] if len(widths) == 1 else None
    elif getattr(cfg, "teacher_mode", None) == "online" and len(cfg.teacher or []) > 1:
        raise UserError(f"--teacher-mode online runs one teacher, got {len(cfg.teacher)} (--teacher "
                        f"{', --teacher '.join(cfg.teacher)}): for an ensemble make a store with "
                        f"`vwwfast cache-teacher --teacher A --teacher B` and distil from its --cache")
    return dataclasses.replace(cfg, **updates)


def _words(values) -> str:
    return ", ".join(map(str, values))


def _check_given_teachers(paths: list, store) -> None:
    """--teacher with --cache: the store's teacher, or every member of its ensemble (in any
    order), each once; by sha256, so a moved checkpoint still counts."""
    shas = [file_sha256(_existing(p)) for p in paths]
    members = [m["sha256"] for m in store.members]
    whos = {w.get("sha256"): w.get("checkpoint") for w in store.teachers}
    if len(members) == 1:
        if len(paths) > 1:
            raise UserError(f"{store.path} holds one teacher's logits, --teacher was given "
                            f"{len(paths)} times; give its teacher once, or drop --teacher")
        if shas[0] != members[0]:
            where = f", {whos[members[0]]}" if whos.get(members[0]) else ""
            raise UserError(f"--teacher {paths[0]} (sha256 {shas[0][:12]}) is not the teacher of "
                            f"{store.path} (sha256 {members[0][:12]}{where}); drop --teacher to use the "
                            f"store's, or make a store with it")
        return
    for k, (path, sha) in enumerate(zip(paths, shas)):
        if sha in shas[:k]:
            raise UserError(f"--teacher {path} is given twice (sha256 {sha[:12]}): name each member "
                            f"of {store.path}'s ensemble once")
        if sha not in members:
            raise UserError(f"--teacher {path} (sha256 {sha[:12]}) is not a member of {store.path}'s "
                            f"ensemble ({_words(whos.get(m) or m[:12] for m in members)}); drop "
                            f"--teacher to use the store's, or make a store with it")
    missing = [whos.get(m) or m[:12] for m in members if m not in shas]
    if missing:
        raise UserError(f"--teacher names {len(paths)} of the {len(members)} members of "
                        f"{store.path}'s ensemble (missing: {_words(missing)}); give every member, "
                        f"or drop --teacher to use the store's")


def _existing(path):
    from pathlib import Path
    if not Path(path).is_file():
        raise UserError(f"teacher checkpoint not found: {path}")
    return path


def check_online_teacher(cfg) -> dict:
    """The checkpoint of --teacher-mode online, checked against the teacher settings."""
    if not cfg.teacher:
        raise UserError("--teacher-mode online needs --teacher CHECKPOINT")
    if len(cfg.teacher) > 1:
        raise UserError(f"--teacher-mode online runs one teacher, got {len(cfg.teacher)}: make an "
                        f"ensemble store with `vwwfast cache-teacher` and distil from its --cache")
    ckpt = load_checkpoint(cfg.teacher[0])
    check_teacher(cfg.teacher[0], ckpt, self_distill=cfg.self_distill, arch=cfg.teacher_arch,
                  input_size=cfg.teacher_input_size, pretrained=cfg.teacher_pretrained,
                  width=cfg.teacher_width)
    return ckpt


def make_source(cfg, shards, device, *, needs_teacher: bool):
    """The views-and-logits source of a run (or of a sweep: every student shares it).
    `cfg` has been through resolve_settings. needs_teacher: some student uses logits."""
    split = shards.split("train")
    spec = view_spec(cfg.view_spec or "default", cfg.view)
    seed = cfg.view_seed if cfg.view_seed is not None else cfg.seed
    mode = getattr(cfg, "teacher_mode", None)
    if mode == "online" and needs_teacher:
        ckpt = check_online_teacher(cfg)
        return OnlineTeacher(cfg.teacher[0], ckpt, spec, seed, shards, cfg, device)
    if getattr(cfg, "cache", None) and mode == "cached":
        store = open_store(cfg.cache)
        store.check_shards(shards)
        return CachedTeacher(store, spec, seed, split, device, read_logits=needs_teacher)
    if needs_teacher:
        from vwwfast.teach.cache import stores_hint
        raise UserError("--teacher-mode cached needs --cache PATH (from `vwwfast cache-teacher`), "
                        f"or use --alpha 0 for a supervised student{stores_hint(shards.root)}")
    return OwnViews(spec, seed, split)


def refuse_unused_teacher(cfg, needs_teacher: bool) -> None:
    """A teacher given to a run where no student uses one is a mistake, not a no-op."""
    if needs_teacher or getattr(cfg, "teacher_mode", None) is None:
        return
    if cfg.teacher_mode == "online" and cfg.teacher:
        raise UserError("--alpha 0 trains without a teacher: drop --teacher / --teacher-mode online, "
                        "or give --alpha above 0")


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


@torch.no_grad()
def member_logits(models, data, order, params, batch_size, on_chunk=None, exact=False):
    """float32 logits [len(models), len(order), C] of models that share `data`'s rendering
    (each batch rendered once, every model run on it), and the labels [len(order)] (a mixed
    view's soft label counts as its larger weight's class).
    exact: no bf16 autocast (what --verify compares against)."""
    device = next(models[0].parameters()).device
    out = np.zeros((len(models), len(order), 2), np.float32)
    labels = np.zeros(len(order), np.int64)
    pos = 0
    for x, y, idx in data.batches(order, params, batch_size):
        x = (x.float() if exact else x).contiguous(memory_format=torch.channels_last)
        for k, model in enumerate(models):
            if exact:  # full fp32: no bf16 autocast, no TF32 convolutions
                with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    z = model(x).float()
            else:
                with autocast(device):
                    z = model(x).float()
            out[k, pos:pos + len(y)] = z.cpu().numpy()
        labels[pos:pos + len(y)] = (y.argmax(1) if y.ndim == 2 else y).cpu().numpy()
        pos += len(y)
        if on_chunk:
            on_chunk(len(y))
    return out, labels


def teacher_logits(model, data, order, params, batch_size, on_chunk=None, exact=False):
    """float32 logits [len(order), C] of one model for `order` (in order), plus how many
    were right."""
    z, labels = member_logits([model], data, order, params, batch_size, on_chunk, exact)
    return z[0], int((z[0].argmax(1) == labels).sum())


def log_mean_probability(z: np.ndarray) -> np.ndarray:
    """[K, N, C] member logits -> float32 [N, C]: the log of the members' mean probability
    (softmax of it is that mean), computed in float64."""
    t = torch.from_numpy(np.asarray(z, np.float64))
    return (torch.logsumexp(torch.log_softmax(t, dim=2), dim=0) - np.log(len(z))).float().numpy()


def ensemble_logits(groups, order, params, batch_size, on_chunk=None, exact=False):
    """The logits a store keeps for `order`, and how many are right. groups: [(data,
    [models])], the models of a group sharing its rendering (one input size). One model:
    its own logits; several: `log_mean_probability` of them."""
    zs, labels = [], None
    for data, models in groups:
        z, labels = member_logits(models, data, order, params, batch_size, on_chunk, exact)
        zs.append(z)
    z = np.concatenate(zs)
    out = z[0] if len(z) == 1 else log_mean_probability(z)
    return out, int((out.argmax(1) == labels).sum())
