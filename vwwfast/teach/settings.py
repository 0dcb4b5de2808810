"""The settings a teacher store or checkpoint fixes: filled in where a run leaves them open,
checked where it gives them, so the config a run saves says what it trained on.

  resolve_settings      view spec and seed, the --train-limit seed and the teacher settings
                        of a run, from its store (or the defaults its fields name)
  check_online_teacher  --teacher-mode online's checkpoint against the teacher settings
  refuse_unused_teacher a teacher given to a run that reads no logits
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Optional, TypeVar

from vwwfast.config import TeacherSettings, TrainConfig
from vwwfast.errors import UserError
from vwwfast.files import file_sha256
from vwwfast.models import check_teacher, load_checkpoint
from vwwfast.viewspec import ViewSpec, spec_conflicts

if TYPE_CHECKING:  # the store's module opens zarr: imported where a store is opened
    from vwwfast.teach.cache import TeacherCache

T = TypeVar("T", bound=TrainConfig)


def resolve_settings(cfg: T, store: Optional[TeacherCache] = None) -> T:
    """The config with every setting the store fixes filled in, after checking what the user
    gave against it: view spec and settings, view seed, teacher input size, arch, checkpoint.
    Without a store: the defaults the fields' help texts name (the view seed and the
    --train-limit subset's seed are --seed's when unset)."""
    updates: dict = {}
    teacher = cfg.teacher_settings()
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
    if cfg.holdout is not None and cfg.holdout_seed is None:
        updates["holdout_seed"] = cfg.seed  # recorded: the holdout is fixed by it
    elif cfg.holdout is None and cfg.holdout_seed is not None:
        raise UserError("--holdout-seed is the seed of --holdout's samples: give --holdout N, or drop it")
    if cfg.train_limit is not None and cfg.train_limit_seed is None:
        updates["train_limit_seed"] = cfg.seed  # recorded: the subset is fixed by it
    elif cfg.train_limit is None and cfg.train_limit_seed is not None:
        raise UserError("--train-limit-seed is the seed of --train-limit's subset: give --train-limit N, "
                        "or drop it")
    if store is not None and teacher is not None:
        updates.update(_store_teacher(teacher, store))
    elif teacher is not None and teacher.teacher_mode == "online" and len(teacher.teacher or []) > 1:
        given = teacher.teacher or []
        raise UserError(f"--teacher-mode online runs one teacher, got {len(given)} (--teacher "
                        f"{', --teacher '.join(given)}): for an ensemble make a store with "
                        f"`vwwfast cache-teacher --teacher A --teacher B` and distil from its --cache")
    return dataclasses.replace(cfg, **updates)


def _store_teacher(teacher: TeacherSettings, store: TeacherCache) -> dict:
    """The teacher settings a store fixes, after checking the given ones against it."""
    members, whos = store.members, store.teachers
    sizes = sorted({m["input_size"] for m in members})
    archs = sorted({m["arch"] for m in members})
    held = f"holds logits at {_words(sizes)} px" if len(members) == 1 else \
        f"holds the logits of an ensemble at {_words(sizes)} px"
    if teacher.teacher_input_size is not None and sizes != [teacher.teacher_input_size]:
        raise UserError(f"teacher input size is {teacher.teacher_input_size} in the config but "
                        f"{store.path} {held}")
    if teacher.teacher_arch is not None and archs != [teacher.teacher_arch]:
        raise UserError(f"teacher arch is {teacher.teacher_arch} in the config but {store.path} was "
                        f"made by {'a ' if len(members) == 1 else 'an ensemble of '}{_words(archs)}")
    widths = sorted({float(w.get("width") or 1.0) for w in whos}) or [1.0]
    if teacher.teacher_width is not None and widths != [teacher.teacher_width]:
        raise UserError(f"teacher width is {teacher.teacher_width:g} in the config but {store.path} "
                        f"was made by {'a teacher' if len(members) == 1 else 'an ensemble'} of "
                        f"width {_words(f'{w:g}' for w in widths)}")
    students = [w for w in whos if w.get("role") == "student"]
    if students and not teacher.self_distill:
        raise UserError(f"{store.path} holds the logits of a student ({students[0].get('run') or 'a student run'}); "
                        f"pass --self-distill to distil from it on purpose")
    for who in whos:
        if teacher.teacher_pretrained is not None and who.get("pretrained") is not None \
                and bool(who["pretrained"]) != teacher.teacher_pretrained:
            whose = "'s teacher" if len(members) == 1 else f"'s member {who.get('checkpoint')}"
            raise UserError(f"teacher pretrained is {str(teacher.teacher_pretrained).lower()} in the "
                            f"config but {store.path}{whose} was trained with pretrained "
                            f"{str(bool(who['pretrained'])).lower()}")
    if teacher.teacher:
        _check_given_teachers(teacher.teacher, store)
    # one value when the members share it; an ensemble of several sizes or archs leaves
    # it unset (its members are named in the run's summary and card)
    return {"teacher_input_size": sizes[0] if len(sizes) == 1 else None,
            "teacher_arch": archs[0] if len(archs) == 1 else None,
            "teacher_width": widths[0] if len(widths) == 1 else None}


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
    if not Path(path).is_file():
        raise UserError(f"teacher checkpoint not found: {path}")
    return path


def check_online_teacher(teacher: TeacherSettings) -> dict:
    """The checkpoint of --teacher-mode online, checked against the teacher settings."""
    if not teacher.teacher:
        raise UserError("--teacher-mode online needs --teacher CHECKPOINT")
    given = teacher.teacher
    if len(given) > 1:
        raise UserError(f"--teacher-mode online runs one teacher, got {len(given)}: make an "
                        f"ensemble store with `vwwfast cache-teacher` and distil from its --cache")
    ckpt = load_checkpoint(given[0])
    check_teacher(given[0], ckpt, self_distill=teacher.self_distill, arch=teacher.teacher_arch,
                  input_size=teacher.teacher_input_size, pretrained=teacher.teacher_pretrained,
                  width=teacher.teacher_width)
    return ckpt


def refuse_unused_teacher(teacher: Optional[TeacherSettings], needs_teacher: bool) -> None:
    """A teacher given to a run where no student uses one is a mistake, not a no-op."""
    if needs_teacher or teacher is None:
        return
    if teacher.teacher_mode == "online" and teacher.teacher:
        raise UserError("--alpha 0 trains without a teacher: drop --teacher / --teacher-mode online, "
                        "or give --alpha above 0")
