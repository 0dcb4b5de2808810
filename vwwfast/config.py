"""Configuration: one dataclass per command; defaults < YAML file < command-line flags.

Each field's metadata carries its help text, so the dataclass is the single place that
defines a setting, its type, its default and its flag (`--kebab-case`). Unknown keys and
values of the wrong type are refused with one clear line.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from vwwfast.errors import UserError


def opt(default, help: str, **extra):
    """A config field with its help text (units, and what a special value means)."""
    return field(default=default, metadata={"help": help, **extra})


# ---------------------------------------------------------------------------------------
# Commands

@dataclass
class SynthConfig:
    out: str = opt("", "folder to write the COCO-2014-layout data set into (required)")
    train: int = opt(1000, "number of training images (train2014/)")
    val: int = opt(300, "number of validation images (val2014/)")
    seed: int = opt(0, "random seed; the same seed gives the same files")
    overwrite: bool = opt(False, "replace an existing output folder")


@dataclass
class ShardConfig:
    coco_root: Optional[str] = opt(None, "COCO 2014 root with train2014/, val2014/, annotations/")
    split: str = opt("minival", "COCO split rule: 'minival' (VWW paper) or 'coco' (train2014/val2014)")
    image_folder: Optional[str] = opt(None, "folder with person/ and non_person/ subfolders")
    val_fraction: float = opt(0.1, "share of --image-folder held out for val (seeded); ignored with --val-folder")
    val_folder: Optional[str] = opt(None, "a separate person/ + non_person/ folder used as val")
    out: Optional[str] = opt(None, "output folder (default shards/<name of the input folder>)")
    size: int = opt(224, "short side of stored images at most this many pixels; never upscaled")
    samples_per_shard: int = opt(1000, "samples per tar shard (the last one may be short)")
    quality: int = opt(90, "JPEG quality of stored images (1-100)")
    workers: int = opt(1, "processes that decode and re-encode images (output does not depend on it)")
    limit: Optional[int] = opt(None, "only the first N images of each split (quick tries)")
    seed: int = opt(0, "seed of the --val-fraction split")
    overwrite: bool = opt(False, "replace an existing output folder")


@dataclass
class TrainConfig:
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)")
    arch: str = opt("mobilenet_v3_large", "torchvision classifier name")
    input_size: int = opt(224, "model input size in pixels (square)")
    epochs: int = opt(30, "training epochs")
    batch_size: int = opt(128, "training batch size (images per step)")
    optimizer: str = opt("adamw", "'adamw' or 'sgd'")
    lr: float = opt(2e-3, "OneCycle peak learning rate (max_lr)")
    weight_decay: float = opt(0.01, "weight decay")
    momentum: float = opt(0.9, "SGD momentum (ignored by AdamW)")
    pct_start: float = opt(0.25, "OneCycle: share of steps spent warming up to the peak")
    div_factor: float = opt(25.0, "OneCycle: initial lr = lr / div_factor")
    final_div_factor: float = opt(1e4, "OneCycle: final lr = initial lr / final_div_factor")
    patience: int = opt(0, "stop after this many epochs without a better val accuracy; 0 = never")
    bn_momentum: float = opt(0.1, "BatchNorm momentum (torchvision's MobileNetV3 uses 0.01, too slow for short runs)")
    bn_settle: int = opt(2048, "training images run through the model to recompute BatchNorm "
                               "statistics before each evaluation; 0 = off")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy term")
    view_spec: str = opt("default", "training augmentation: 'default' or 'plain' (none)")
    val_center_crop: bool = opt(False, "validate on a centre crop instead of the whole image")
    renderer: str = opt("auto", "'auto', 'decoded', 'dali' or 'reference'")
    decoded_size: int = opt(160, "side of the decoded cache in pixels")
    decoded_budget_gb: float = opt(0.0, "memory the decoded cache may take, GiB; 0 = 40% of free device memory")
    pretrained: bool = opt(False, "start from torchvision's ImageNet weights (needs them downloaded)")
    init: Optional[str] = opt(None, "start from this local checkpoint (.pt)")
    compile: bool = opt(False, "torch.compile the model")
    device: str = opt("auto", "'auto' (CUDA if present), 'cuda' or 'cpu'")
    seed: int = opt(0, "seed of weights, epoch order and views")
    runs_dir: str = opt("runs", "folder that holds run folders")
    tag: Optional[str] = opt(None, "suffix of the run folder name")
    note: str = opt("", "the goal of this run, written to its card")
    resume: Optional[str] = opt(None, "run folder to continue from its last checkpoint")


@dataclass
class DistillConfig(TrainConfig):
    arch: str = opt("mobilenet_v3_small", "torchvision classifier name")
    input_size: int = opt(96, "model input size in pixels (square)")
    label_smoothing: float = opt(0.01, "label smoothing of the cross-entropy term")
    alpha: float = opt(0.55, "weight of the teacher term; 0 = supervised (no teacher)")
    alpha_end: Optional[float] = opt(None, "alpha at the last epoch (linear schedule); unset = constant")
    temperature: float = opt(2.0, "KD temperature T")
    confidence_gamma: float = opt(2.0, "weight samples by teacher confidence ** gamma; 0 = off")
    margin_weight: float = opt(0.03, "weight of the centred-logit margin term; 0 = off")
    margin_weight_end: Optional[float] = opt(None, "margin weight reached at --margin-decay-end-epoch; unset = constant")
    margin_decay_end_epoch: Optional[int] = opt(None, "epoch at which the margin weight reaches its end value")
    teacher_mode: str = opt("cached", "'cached' (logits from --cache) or 'online' (run --teacher every step)")
    cache: Optional[str] = opt(None, "teacher cache (.zarr) from `vwwfast cache-teacher`")
    teacher: Optional[str] = opt(None, "teacher checkpoint, for --teacher-mode online")


@dataclass
class CacheTeacherConfig:
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)")
    teacher: str = opt("", "teacher checkpoint (.pt) (required)")
    views: int = opt(10, "number of augmented views E per training sample")
    input_size: Optional[int] = opt(None, "teacher input size in pixels; unset = the checkpoint's")
    view_spec: str = opt("default", "'default' (augmented views) or 'plain' (one un-augmented view)")
    seed: int = opt(0, "seed of the view parameters")
    out: Optional[str] = opt(None, "store path (default <shards>/teacher-<tag>.zarr)")
    batch_size: int = opt(256, "teacher inference batch size")
    renderer: str = opt("auto", "'auto', 'decoded', 'dali' or 'reference'")
    decoded_size: int = opt(160, "side of the decoded cache in pixels")
    decoded_budget_gb: float = opt(0.0, "memory the decoded cache may take, GiB; 0 = 40% of free device memory")
    device: str = opt("auto", "'auto' (CUDA if present), 'cuda' or 'cpu'")


@dataclass
class EvalConfig:
    checkpoint: str = opt("", "checkpoint (.pt) to evaluate", positional=True)
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)")
    split: str = opt("val", "split to evaluate: 'val' or 'train'")
    json: Optional[str] = opt(None, "also write the result to this JSON file")
    batch_size: int = opt(256, "evaluation batch size")
    center_crop: bool = opt(False, "evaluate on a centre crop instead of the whole image")
    renderer: str = opt("auto", "'auto', 'decoded', 'dali' or 'reference'")
    device: str = opt("auto", "'auto' (CUDA if present), 'cuda' or 'cpu'")


@dataclass
class RunsConfig:
    runs_dir: str = opt("runs", "folder that holds run folders")
    kind: Optional[str] = opt(None, "only runs of this kind: 'teacher' or 'student'")
    sort: str = opt("time", "order: 'time' or 'val_acc'")
    diff: Optional[list] = opt(None, "two run folders (or ids) to compare", nargs=2, metavar="RUN")


@dataclass
class BenchLoaderConfig:
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)")
    renderer: str = opt("all", "renderer to time, or 'all'")
    size: int = opt(96, "output size in pixels")
    batch_size: int = opt(256, "images per batch")
    batches: int = opt(20, "timed batches per renderer (after warm-up)")
    decoded_size: int = opt(160, "side of the decoded cache in pixels")
    json: Optional[str] = opt(None, "also write the figures to this JSON file")
    device: str = opt("auto", "'auto' (CUDA if present), 'cuda' or 'cpu'")


@dataclass
class BenchKDConfig:
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)")
    teacher: str = opt("", "teacher checkpoint (.pt) (required)")
    cache: str = opt("", "teacher cache (.zarr) (required)")
    renderer: str = opt("auto", "renderer of the vwwfast paths")
    batch_size: int = opt(128, "images per batch")
    batches: int = opt(10, "timed batches per path (after warm-up)")
    workers: int = opt(2, "DataLoader workers of the conventional pipeline")
    decoded_size: int = opt(160, "side of the decoded cache in pixels")
    json: Optional[str] = opt(None, "also write the figures to this JSON file")
    device: str = opt("auto", "'auto' (CUDA if present), 'cuda' or 'cpu'")


# ---------------------------------------------------------------------------------------
# Loading

# The `kd:` / `teacher:` shape that people already write for distillation runs.
DISTILL_SECTIONS = {
    "kd": {
        "alpha": "alpha",
        "confidence_gamma": "confidence_gamma",
        "label_smoothing": "label_smoothing",
        "margin_weight": "margin_weight",
        "margin_weight_start": "margin_weight",
        "margin_weight_end": "margin_weight_end",
        "margin_weight_decay_end_epoch": "margin_decay_end_epoch",
    },
    "teacher": {
        "checkpt": "teacher",
        "teacher_input_size": None,  # recorded in the checkpoint and the cache; checked there
        "temperature": "temperature",
        "arch": None,
        "pretrained": None,
    },
}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _base_type(tp):
    """int for Optional[int], etc."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _coerce(name: str, value, tp, where: str):
    if value is None:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return None
        raise UserError(f"{where}: '{name}' may not be empty")
    base = _base_type(tp)
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif base is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    raise UserError(f"{where}: '{name}' should be {getattr(base, '__name__', base)}, got {value!r}")


def _flatten_sections(cls, data: dict, where: str) -> dict:
    """Map the `kd:` / `teacher:` sections onto DistillConfig fields. A plain string under
    `teacher` is the field itself (the checkpoint path), not a section."""
    if cls is not DistillConfig:
        return data
    sections = {k for k in DISTILL_SECTIONS if isinstance(data.get(k), dict)}
    flat = {k: v for k, v in data.items() if k not in sections}
    for section in sections:
        mapping = DISTILL_SECTIONS[section]
        for key, value in data[section].items():
            if section == "kd" and key == "alpha_constant":
                continue
            if key not in mapping:
                raise UserError(f"{where}: unknown key '{section}.{key}'")
            if mapping[key] is not None:
                flat[mapping[key]] = value
    # alpha_constant: false with no explicit end means alpha decays linearly to 0.
    if "kd" in sections and data["kd"].get("alpha_constant") is False and "alpha_end" not in flat:
        flat["alpha_end"] = 0.0
    return flat


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of settings at the top level")
    return data


def resolve(cls, yaml_data: dict | None = None, flags: dict | None = None, where: str = "config"):
    """Build a `cls` from defaults, then YAML values, then flags (each may be partial)."""
    types_ = _field_types(cls)
    values: dict[str, Any] = {}
    for source, label in ((yaml_data or {}, where), (flags or {}, "command line")):
        source = _flatten_sections(cls, source, label) if source is yaml_data else source
        for key, value in source.items():
            name = key.replace("-", "_")
            if name not in types_:
                raise UserError(f"{label}: unknown setting '{key}' for this command")
            values[name] = _coerce(name, value, types_[name], label)
    return cls(**values)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_yaml(cfg_or_dict, path: str | Path) -> None:
    data = cfg_or_dict if isinstance(cfg_or_dict, dict) else to_dict(cfg_or_dict)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------------------------------
# Flags

def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field; every default is SUPPRESS so only what the user typed overrides."""
    types_ = _field_types(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        meta = f.metadata
        base = _base_type(types_[f.name])
        default = getattr(defaults, f.name)
        help_ = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if default not in (None, "", False) and base is not list:
            help_ += f" (default {default})"
        if meta.get("positional"):
            parser.add_argument(f.name, help=help_)
            continue
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_)
        elif base is list:
            parser.add_argument(flag, nargs=meta.get("nargs", "+"), metavar=meta.get("metavar"),
                                default=argparse.SUPPRESS, help=help_)
        else:
            parser.add_argument(flag, type=base, default=argparse.SUPPRESS, help=help_,
                                metavar=f.name.upper())
    parser.add_argument("--config", dest="_config", default=None, metavar="FILE.yaml",
                        help="YAML file of settings; flags given here win")


def from_args(cls, ns: argparse.Namespace):
    flags = {k: v for k, v in vars(ns).items() if not k.startswith("_") and k != "command"
             and k != "bench_command"}
    yaml_data = load_yaml(ns._config) if getattr(ns, "_config", None) else None
    return resolve(cls, yaml_data, flags, where=str(getattr(ns, "_config", "config")))


def require(cfg, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) in (None, ""):
            raise UserError(f"--{name.replace('_', '-')} is required")
