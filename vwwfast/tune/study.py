"""The Optuna study a tune keeps: its storage, and each setting as a trial (ask and tell).

Optuna is the record and the sampler here, not the decision rule (tune/race.py decides):
its pruners compare scalar accuracies and know neither per-image pairing nor seed noise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from vwwfast.errors import UserError


def _optuna():
    import optuna
    optuna.logging.set_verbosity(logging.WARNING)  # the tune speaks for itself
    return optuna


def storage_of(text: str):
    """An RDB URL (sqlite:///x.db, postgresql://...) as Optuna reads it; anything else a
    journal file, which tune processes can share through a file system."""
    optuna = _optuna()
    if "://" in text:
        try:
            return optuna.storages.RDBStorage(text)
        except Exception as e:  # a driver missing, a host unreachable, a bad URL
            raise UserError(f"--storage {text}: cannot open it ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]})") from None
    path = Path(text)
    if path.is_dir():
        raise UserError(f"--storage {text} is a folder; give a file (a journal, e.g. {path}/study.log)")
    if not path.parent.is_dir():
        raise UserError(f"--storage {text}: its folder {path.parent} does not exist")
    from optuna.storages.journal import JournalFileBackend
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:
        raise UserError(f"--storage {text}: cannot open it as a journal file ({e})") from None


def open_study(storage, name: str, seed: int):
    """The study `name` in `storage` (made when new), sampling with TPE from `seed`."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=seed)
    try:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                   sampler=sampler, load_if_exists=True)
    except Exception as e:
        raise UserError(f"cannot open study '{name}' ({type(e).__name__}: {e})") from None


def ask(study, distributions: dict, n: int) -> list:
    """n new trials, their settings sampled from the space (informed by finished trials)."""
    return [study.ask(fixed_distributions=distributions) for _ in range(n)]


def trial(study, trial_id: int):
    """The trial with storage id `trial_id`, to report to and annotate (also after a resume)."""
    return _optuna().trial.Trial(study, trial_id)


def trial_id(t) -> int:
    # Optuna gives a trial's storage id only on the object itself; tune.json keeps it, so a
    # resumed tune can report to the trials it asked for
    return int(t._trial_id)


def report(study, number: int, trial_id_: int, value: float, step: int,
           attrs: dict[str, Any]) -> None:
    """A rung's mean selection accuracy and verdict (kept once per step)."""
    t = trial(study, trial_id_)
    frozen = next(f for f in study.get_trials(deepcopy=False) if f.number == number)
    if step not in frozen.intermediate_values:
        t.report(value, step)
    for k, v in attrs.items():
        t.set_user_attr(k, v)


def tell(study, number: int, trial_id_: int, pruned: bool, value: Optional[float],
         attrs: dict[str, Any]) -> None:
    """The trial's end: PRUNED (cut by the race) or COMPLETE with its selection accuracy."""
    optuna = _optuna()
    t = trial(study, trial_id_)
    for k, v in attrs.items():
        t.set_user_attr(k, v)
    state = optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.COMPLETE
    study.tell(number, None if pruned else value, state=state, skip_if_finished=True)
