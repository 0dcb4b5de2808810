"""The config shapes people already write, read and written in one place.

Hand-written KD configs put the recipe in a `kd:` section (`alpha_start`, `alpha_constant`,
`margin_weight_decay_end_epoch`, ...), the teacher in a `teacher:` section (`checkpt`,
`temperature`, ...) and view settings in `views:`; a command's settings are flat
(config.py). `flatten_sections` maps the written shape onto the fields, with one meaning
for each key, and `sectioned` writes a config back in that shape (`--print-config`, the
run card).
"""

from __future__ import annotations

from typing import Collection

from vwwfast.checks import did_you_mean
from vwwfast.errors import UserError
from vwwfast.viewspec import view_settings

KD_SECTION = {
    "alpha": "alpha", "alpha_start": "alpha", "alpha_end": "alpha_end",
    "confidence_gamma": "confidence_gamma", "label_smoothing": "label_smoothing",
    "margin_weight": "margin_weight", "margin_weight_start": "margin_weight",
    "margin_weight_end": "margin_weight_end",
    "margin_weight_decay_end_epoch": "margin_decay_end_epoch",
}
TEACHER_SECTION = {
    "checkpt": "teacher", "checkpoint": "teacher", "arch": "teacher_arch", "width": "teacher_width",
    "teacher_input_size": "teacher_input_size", "input_size": "teacher_input_size",
    "pretrained": "teacher_pretrained", "temperature": "temperature",
}
# Fields of a section, or the word that maps onto one, given where they do not belong.
WHERE = {**{k: "kd" for k in KD_SECTION}, "alpha_constant": "kd", "temperature": "teacher",
         "checkpt": "teacher", "teacher_input_size": "teacher"}


def flatten_sections(names: Collection[str], data: dict, where: str) -> dict:
    """Map the `kd:` / `teacher:` / `views:` sections onto the fields `names` of a
    command, with one meaning for each key."""
    flat = {}
    kd, teacher = data.get("kd"), data.get("teacher")
    for key, value in data.items():
        if key == "kd" and isinstance(value, dict) and "alpha" in names:
            continue
        if key == "teacher" and isinstance(value, dict) and "teacher_arch" in names:
            continue
        if key == "views" and (isinstance(value, dict) or "views" not in names) and "view" in names:
            flat["view"] = view_settings(value, f"{where}: views")
            continue
        flat[key] = value
    if isinstance(kd, dict) and "alpha" in names:
        flat.update(kd_section(kd, where))
    if isinstance(teacher, dict) and "teacher_arch" in names:
        for key, value in teacher.items():
            if key not in TEACHER_SECTION:
                hint = (f" ('{key}' belongs in the kd: section)" if WHERE.get(key) == "kd"
                        else did_you_mean(key, TEACHER_SECTION))
                raise UserError(f"{where}: unknown key 'teacher.{key}'{hint}")
            flat[TEACHER_SECTION[key]] = value
    return flat


def kd_section(kd: dict, where: str) -> dict:
    out: dict = {}
    for key, value in kd.items():
        if key == "alpha_constant":
            continue
        if key not in KD_SECTION:
            hint = (f" ('{key}' belongs in the teacher: section)" if WHERE.get(key) == "teacher"
                    else did_you_mean(key, list(KD_SECTION) + ["alpha_constant"]))
            raise UserError(f"{where}: unknown key 'kd.{key}'{hint}")
    for a, b, name in (("alpha", "alpha_start", "alpha"),
                       ("margin_weight", "margin_weight_start", "margin weight")):
        if a in kd and b in kd and kd[a] != kd[b]:
            raise UserError(f"{where}: kd.{a} ({kd[a]}) and kd.{b} ({kd[b]}) both set the starting "
                            f"{name}; keep one ({b} with a schedule)")
    for key, value in kd.items():
        if key in KD_SECTION:
            out[KD_SECTION[key]] = value
    if "confidence_gamma" in kd and kd["confidence_gamma"] is None:
        out["confidence_gamma"] = 0.0  # the seed writes null for "off"
    constant = kd.get("alpha_constant")
    if constant is not None and not isinstance(constant, bool):
        raise UserError(f"{where}: kd.alpha_constant should be true or false, got {constant!r}")
    if constant is False and kd.get("alpha_end") is None:
        raise UserError(f"{where}: kd.alpha_constant: false needs kd.alpha_end (alpha at the last "
                        f"epoch), e.g. alpha_end: 0.0; or write alpha_constant: true")
    if constant is True and kd.get("alpha_end") is not None:
        raise UserError(f"{where}: kd.alpha_constant: true contradicts kd.alpha_end "
                        f"({kd['alpha_end']}); drop one of them")
    return out


def sectioned(data: dict) -> dict:
    """The config in the shape people write it: `kd:` and `teacher:` blocks (distill), a
    `views:` block when a view setting is given, then the rest. config.resolve reads it back."""
    data = dict(data)
    out: dict = {}
    if "alpha" in data:
        kd = {"alpha": data.pop("alpha"), "alpha_end": data.pop("alpha_end", None),
              "confidence_gamma": data.pop("confidence_gamma", None),
              "label_smoothing": data.pop("label_smoothing", None),
              "margin_weight": data.pop("margin_weight", None),
              "margin_weight_end": data.pop("margin_weight_end", None),
              "margin_weight_decay_end_epoch": data.pop("margin_decay_end_epoch", None)}
        checkpt = data.pop("teacher", None)
        if isinstance(checkpt, list) and len(checkpt) == 1:
            checkpt = checkpt[0]  # one teacher: written as people write it
        teacher = {"checkpt": checkpt, "arch": data.pop("teacher_arch", None),
                   "width": data.pop("teacher_width", None),
                   "teacher_input_size": data.pop("teacher_input_size", None),
                   "pretrained": data.pop("teacher_pretrained", None),
                   "temperature": data.pop("temperature", None)}
        out["kd"] = kd
        out["teacher"] = teacher
    view = data.pop("view", None)
    if view:
        out["views"] = dict(view)
    out.update(data)
    return out


def sectioned_sweep(data: dict, swept: dict, mode: str) -> dict:
    """A sweep's first member `data` (flat) in the written shape, each swept setting as its
    list, wherever the shape puts it."""
    out = sectioned(data)
    for name, items in swept.items():
        for section, keys in (("kd", KD_SECTION), ("teacher", TEACHER_SECTION)):
            block = out.get(section, {})
            for key, target in keys.items():
                if target == name and key in block:
                    block[key] = items
        if name in out:
            out[name] = items
    out["sweep_mode"] = mode
    return out
