"""What a run says of its teacher: one model or an ensemble's members, typed, and in words.

A source's `describe()` returns a `TeacherDescription`; its `to_dict()` is what the run's
summary.json keeps under "teacher" (the run records and the runs table read that JSON back),
and `from_dict()` reads such a record, old ones included (a key it lacks reads None). The
record has three shapes, each kept key for key:

  cached, one teacher   mode, store, store_fingerprint, views, checkpoint, sha256, arch, width,
                        input_size (the size it was cached at), trained_input_size, role, run,
                        run_val_acc, logits_used, train_view_acc, val_acc
  cached, an ensemble   mode, store, ensemble, store_fingerprint, views, members (each as
                        models.describe_teacher says it, at the size it was cached at),
                        logits_used, train_view_acc, val_acc
  online                mode, store (None), then models.describe_teacher's keys
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# models.describe_teacher's keys, in its order
MODEL_KEYS = ("checkpoint", "arch", "width", "input_size", "role", "run", "run_val_acc", "epoch",
              "pretrained", "sha256")


@dataclass(frozen=True)
class TeacherModel:
    """One checkpoint that teaches (or an ensemble member), as models.describe_teacher says
    it; input_size is the size it runs at."""

    checkpoint: str | None = None
    arch: str | None = None
    width: float | None = None
    input_size: int | None = None
    role: str | None = None  # 'teacher' or 'student' (--self-distill)
    run: str | None = None
    run_val_acc: float | None = None
    epoch: int | None = None
    pretrained: bool | None = None
    sha256: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherModel:
        return cls(**{k: d.get(k) for k in MODEL_KEYS})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in MODEL_KEYS}

    def in_words(self) -> str:
        """'mobilenet_v3_small at 96 px, run ... (val acc 0.8123)'."""
        who = f"{self.arch}" + (f" of width {self.width:g}" if (self.width or 1.0) != 1.0
                                else "") + f" at {self.input_size} px"
        if self.role == "student":
            who += ", a STUDENT's checkpoint (--self-distill)"
        if self.run:
            acc = self.run_val_acc
            who += f", run {self.run}" + (f" (val acc {acc:.4f})" if acc is not None else "")
        return who


@dataclass(frozen=True)
class TeacherDescription:
    """Which teacher a run learns from and how its logits come: `model` for one teacher,
    `members` for an ensemble (then `model` is None)."""

    mode: str  # 'cached' (a teacher cache) or 'online' (run on every batch)
    model: TeacherModel | None = None
    members: list[TeacherModel] | None = None
    store: str | None = None  # the cache's path (cached)
    store_fingerprint: str | None = None
    views: int | None = None  # views the store holds
    ensemble: str | None = None  # how members combine ('log_mean_probability')
    trained_input_size: int | None = None  # one cached teacher: the size it was trained at
    logits_used: bool = True  # False: only the store's views are used (alpha 0)
    train_view_acc: float | None = None  # the teacher's accuracy, mean over the stored views
    val_acc: float | None = None  # ... on the store's val view

    @property
    def checkpoint(self) -> str | None:
        return self.model.checkpoint if self.model else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary.json keeps under "teacher" (shapes in the module docstring)."""
        if self.mode == "online":
            return {"mode": "online", "store": None, **(self.model or TeacherModel()).to_dict()}
        head = {"mode": self.mode, "store": self.store}
        tail = {"logits_used": self.logits_used, "train_view_acc": self.train_view_acc,
                "val_acc": self.val_acc}
        if self.members:
            return {**head, "ensemble": self.ensemble, "store_fingerprint": self.store_fingerprint,
                    "views": self.views, "members": [m.to_dict() for m in self.members], **tail}
        m = self.model or TeacherModel()
        return {**head, "store_fingerprint": self.store_fingerprint, "views": self.views,
                "checkpoint": m.checkpoint, "sha256": m.sha256, "arch": m.arch, "width": m.width,
                "input_size": m.input_size, "trained_input_size": self.trained_input_size,
                "role": m.role, "run": m.run, "run_val_acc": m.run_val_acc, **tail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherDescription:
        """A record's "teacher" (any version's): an ensemble when it has members."""
        members = [TeacherModel.from_dict(m) for m in d["members"]] if d.get("members") else None
        return cls(mode=d.get("mode") or ("cached" if d.get("store") else "online"),
                   model=None if members else TeacherModel.from_dict(d), members=members,
                   store=d.get("store"), store_fingerprint=d.get("store_fingerprint"),
                   views=d.get("views"), ensemble=d.get("ensemble"),
                   trained_input_size=d.get("trained_input_size"),
                   logits_used=bool(d.get("logits_used", True)),
                   train_view_acc=d.get("train_view_acc"), val_acc=d.get("val_acc"))


def who_teaches(t: TeacherDescription) -> str:
    """One teacher or an ensemble in words (the console's line when a run starts)."""
    if t.members:
        return (f"an ensemble of {len(t.members)} (the log of their mean probability): "
                + "; ".join(m.in_words() for m in t.members))
    return (t.model or TeacherModel()).in_words()
