"""runs/<YYYY-MM-DD_HH-MM-SS>_tune[_tag]/tune.json: what a tune set out to do and what it did.

    {"id", "started", "status", "config": {...resolved TuneConfig...}, "space": [...],
     "rungs": [...], "storage", "study", "sampler_seed",
     "rounds": [{"trials": [{"number", "trial_id", "params"}],
                 "members": [{"key", "seed", "settings", "run"}],   # the sweep's order
                 "sweep": id, "decisions": [{"epoch", "verdicts": [...]}],
                 "told": bool, "report": {...}}]}

Written whole (write_atomic) after every change, so a kill -9 leaves the last state whole.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from vwwfast.errors import UserError
from vwwfast.files import write_atomic
from vwwfast.records.runs import clean_tag, new_folder, read_json, to_json

FILE = "tune.json"
STUDY_FILE = "study.log"


class TuneRecord:
    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name
        self.data = read_json(self.path / FILE)

    @classmethod
    def create(cls, runs_dir, tag: Optional[str], fields: dict) -> "TuneRecord":
        now = datetime.now()
        tag = clean_tag(tag)
        base = f"{now:%Y-%m-%d_%H-%M-%S}_tune" + (f"_{tag}" if tag else "")
        record = cls(new_folder(Path(runs_dir), base))
        record.data = {"id": record.id, "started": now.isoformat(timespec="seconds"),
                       "created_ns": time.time_ns(), "status": "running", **fields, "rounds": []}
        record.save()
        return record

    @classmethod
    def open(cls, ref, runs_dir) -> "TuneRecord":
        """A tune by folder, id or a part of its id that no other tune has."""
        p = Path(str(ref))
        if not p.is_dir():
            root = Path(runs_dir)
            found = sorted(q for q in root.iterdir() if (q / FILE).is_file()) if root.is_dir() else []
            hits = [q for q in found if q.name == str(ref)] or [q for q in found if str(ref) in q.name]
            if len(hits) != 1:
                what = "matches several tunes" if hits else "names no tune"
                raise UserError(f"'{ref}' {what} in {root} (a tune's folder holds {FILE}); give "
                                f"its folder")
            p = hits[0]
        if not (p / FILE).is_file():
            raise UserError(f"{p} is not a tune (no {FILE}); `vwwfast tune --resume` continues a "
                            f"tune, `vwwfast distill --resume` a run or a sweep")
        return cls(p)

    def save(self) -> None:
        write_atomic(self.path / FILE, to_json(self.data))

    @property
    def rounds(self) -> list[dict]:
        return self.data["rounds"]

    def finish(self, status: str) -> None:
        self.data.update(status=status, ended=datetime.now().isoformat(timespec="seconds"))
        self.save()
