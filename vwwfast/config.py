"""Configuration: one dataclass per command; defaults < YAML file < command-line flags.

Each field's metadata carries its help text and its valid values (a range or choices), so
the dataclass is the single place that defines a setting, its type, its default, its flag
(`--kebab-case`) and its check. Unknown keys (with a "did you mean"), values of the wrong
type and values out of range are refused with one clear line, before any work starts.

A command's settings are flat (its flags, config.yaml), composed of groups that the stage
reading them takes as one typed value: RenderSettings (SplitData, the renderers),
OptimSettings (a student's optimizer and schedule), RecipeSettings (the KD loss),
TeacherSettings (where logits come from), BudgetSettings (a microcontroller's). `pick`
takes a group out of a config; TrainConfig.recipe_settings() and its siblings give a
training run's optional groups (None for a teacher run).

Beside it: checks.py (ranges, choices, "did you mean"), config_compat.py (the `kd:` /
`teacher:` / `views:` shapes people write), flags.py (argparse), viewspec.py (`views:`).
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional, TypeVar, cast

import yaml

from vwwfast.checks import bounds_of, check_choice, check_range, did_you_mean, parse_scalar_text
from vwwfast.config_compat import WHERE, flatten_sections, sectioned, sectioned_sweep
from vwwfast.errors import UserError
from vwwfast.viewspec import view_settings, view_spec


def opt(default, help: str, **extra):
    """A config field with its help text (units, and what a special value means).

    extra: lo / hi (inclusive bounds), gt / lt (exclusive bounds), choices, path=True
    (backslashes accepted as separators), sweep=True (distill may take a list),
    short="a" (its name in sweep members' tags, table headers and plot labels), kd=True (a
    setting of the KD recipe, train/losses.py: the runs table shows these first),
    positional=True, nargs / metavar / action for the flag."""
    if isinstance(default, (dict, list)):
        return field(default_factory=partial(type(default), default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


RENDERER_CHOICES = ("auto", "decoded", "dali", "reference")
RENDERER_HELP = ("how views are rendered: 'auto' (the decoded cache when it fits, else DALI), "
                 "'decoded', 'dali' or 'reference' (PIL)")
DEVICE_HELP = "'auto' (CUDA if present), 'cuda' or 'cpu'"


@dataclass
class RenderSettings:
    """Where and how every command that renders views does it; declared once, shown last."""
    renderer: str = opt("auto", RENDERER_HELP, choices=RENDERER_CHOICES)
    decoded_size: int = opt(160, "side of the decoded cache in pixels", lo=8)
    decoded_budget_gb: float = opt(0.0, "memory the decoded cache may take, GiB; 0 = 40% of free "
                                        "device memory", lo=0)
    device: str = opt("auto", DEVICE_HELP)


RENDER_FIELDS = tuple(f.name for f in dataclasses.fields(RenderSettings))
SIZE_HELP = "KB = 1000 bytes, KiB = 1024, MB = 10^6, a plain number = bytes"


@dataclass
class BudgetSettings:
    """What a microcontroller holds, checked by `distill` (before training, from the model's
    estimates) and `export` (on the files written); declared once."""
    max_flash: Optional[str] = opt(None, "flash the int8 model may take, e.g. 256KB: `export` checks "
                                         "each int8 file, `distill` the parameter count (int8 "
                                         f"~ 1 byte each); {SIZE_HELP}", size=True)
    max_ram: Optional[str] = opt(None, "RAM the int8 activations may take (the estimated peak of "
                                       "live tensors, the arena TFLite Micro needs besides the "
                                       f"weights), e.g. 256KiB; {SIZE_HELP}", size=True)


@dataclass
class OptimSettings:
    """How a model's weights are optimised (train/student.py): optimizer and OneCycle."""
    optimizer: str = opt("adamw", "'adamw' or 'sgd'", choices=("adamw", "sgd"),
                         sweep=True, short="opt")
    lr: float = opt(2e-3, "OneCycle peak learning rate (max_lr) at --lr-base-batch",
                    gt=0, sweep=True, short="lr")
    lr_scaling: str = opt("off", "scale --lr with the batch size: 'off', 'linear' or 'sqrt' "
                                 "(lr x (batch / lr-base-batch) or its square root)",
                          choices=("off", "linear", "sqrt"), sweep=True, short="lr_sc")
    lr_base_batch: int = opt(128, "the batch size --lr is given for, with --lr-scaling",
                             lo=1, short="lr_bb")
    weight_decay: float = opt(0.01, "weight decay", lo=0, sweep=True, short="wd")
    momentum: float = opt(0.9, "SGD momentum (only with --optimizer sgd)",
                          lo=0, lt=1, sweep=True, short="mom")
    pct_start: float = opt(0.25, "OneCycle: share of steps spent warming up to the peak",
                           gt=0, lt=1, sweep=True, short="pct")
    div_factor: float = opt(25.0, "OneCycle: initial lr = lr / div_factor",
                            gt=0, sweep=True, short="div")
    final_div_factor: float = opt(1e4, "OneCycle: final lr = initial lr / final_div_factor",
                                  gt=0, sweep=True, short="fdiv")


@dataclass
class RecipeSettings:
    """The KD loss of a distill run (train/losses.py KDRecipe); every field is a KD knob
    (metadata kd=True). A teacher run has none: its loss is the cross-entropy alone."""
    alpha: float = opt(0.55, "weight of the teacher term (at the first epoch with --alpha-end); "
                             "0 = supervised (no teacher logits)", lo=0, hi=1, sweep=True, short="a",
                       kd=True)
    alpha_end: Optional[float] = opt(None, "alpha at the last epoch (linear schedule); unset = constant",
                                     lo=0, hi=1, sweep=True, short="a_end", kd=True)
    temperature: float = opt(2.0, "KD temperature T", gt=0, sweep=True, short="T", kd=True)
    confidence_gamma: float = opt(2.0, "weight samples by teacher confidence ** gamma; 0 = off",
                                  lo=0, sweep=True, short="gamma", kd=True)
    margin_weight: float = opt(0.03, "weight of the centred-logit margin term (at the first epoch with "
                                     "a schedule); 0 = off", lo=0, sweep=True, short="m", kd=True)
    margin_weight_end: Optional[float] = opt(None, "margin weight reached at --margin-decay-end-epoch; "
                                                   "unset = constant", lo=0, sweep=True, short="m_end",
                                             kd=True)
    margin_decay_end_epoch: Optional[int] = opt(None, "epoch (from 1) at which the margin weight reaches "
                                                      "its end value", lo=0, sweep=True, short="m_ep",
                                                  kd=True)
    label_smoothing: float = opt(0.01, "label smoothing of the cross-entropy term", lo=0, lt=1, sweep=True,
                                 kd=True)


@dataclass
class TeacherSettings:
    """Where a distill run's teacher logits come from (teach/sources.py) and what the
    teacher must be (checked against its checkpoint or store)."""
    teacher_mode: str = opt("cached", "'cached' (logits from --cache) or 'online' (run --teacher every step)",
                            choices=("cached", "online"), short="mode")
    cache: Optional[str] = opt(None, "teacher cache (.zarr) from `vwwfast cache-teacher` (its default "
                                     "path: <shards>/teacher-<arch>-<size>-<spec>-<sha8>.zarr)", path=True)
    teacher: Optional[list] = opt(None, "teacher checkpoint: for --teacher-mode online (one); with --cache "
                                        "the store's teacher, or every member of its ensemble "
                                        "(repeatable)", path=True, action="append", metavar="CKPT")
    teacher_arch: Optional[str] = opt(None, "the teacher's arch, checked against its checkpoint",
                                      short="t_arch")
    teacher_width: Optional[float] = opt(None, "the teacher's width multiplier, checked against its "
                                               "checkpoint or store", gt=0, hi=2, short="t_w")
    teacher_input_size: Optional[int] = opt(None, "the teacher's input size, checked against the "
                                                  "checkpoint or store", lo=8, short="t_size")
    teacher_pretrained: Optional[bool] = opt(None, "whether the teacher started from ImageNet weights, "
                                                   "checked against its checkpoint", short="t_pre")
    self_distill: bool = opt(False, "allow a checkpoint written by a student run as the teacher",
                             short="self")


# The groups in the order a command shows them, after its own settings.
GROUPS: tuple[type, ...] = (OptimSettings, RecipeSettings, TeacherSettings, BudgetSettings,
                            RenderSettings)
G = TypeVar("G")
T = TypeVar("T", bound="TrainConfig")  # a training command's config, teacher's or student's


def pick(group: type[G], cfg: Any) -> G:
    """The settings of `group` taken from a command's config, each by its name: a field the
    config lacks is an AttributeError, never a default."""
    names = [f.name for f in dataclasses.fields(cast(Any, group))]
    return group(**{name: getattr(cfg, name) for name in names})


def group_of(cls: type, name: str) -> Optional[type]:
    """The group (GROUPS) of command `cls` that declares setting `name`, None for the
    command's own setting (a command may redeclare a group's setting with its own default)."""
    for klass in cls.__mro__:
        if klass in GROUPS and name in vars(klass).get("__annotations__", {}):
            return klass
    return None


# ---------------------------------------------------------------------------------------
# Commands

@dataclass
class SynthConfig:
    out: str = opt("", "folder to write the COCO-2014-layout data set into (required)", path=True)
    train: int = opt(1000, "number of training images (train2014/)", lo=1)
    val: int = opt(300, "number of validation images (val2014/)", lo=1)
    seed: int = opt(0, "random seed; the same seed gives the same files")
    workers: int = opt(1, "processes that draw images (the files do not depend on it)", lo=1)
    overwrite: bool = opt(False, "replace an existing output folder")


@dataclass
class ShardConfig:
    coco_root: Optional[str] = opt(None, "COCO 2014 root with train2014/, val2014/, annotations/", path=True)
    split: str = opt("minival", "COCO split rule: 'minival' (VWW paper) or 'coco' (train2014/val2014)",
                     choices=("minival", "coco"))
    image_folder: Optional[str] = opt(None, "folder with person/ and non_person/ subfolders", path=True)
    wake_vision: Optional[str] = opt(None, "Wake Vision folder: its CSVs beside the .tar.gz archives "
                                           "(read in place, streamed) or the extracted JPEGs", path=True)
    wake_vision_train: str = opt("quality", "Wake Vision training labels: 'quality' (~1.2M images, "
                                            "box-derived labels) or 'large' (~5.76M, image-level labels)",
                                 choices=("quality", "large"))
    allow_damaged: bool = opt(False, "Wake Vision: shard the images read before the damage in a "
                                     "truncated or corrupt archive (listed in the manifest) instead "
                                     "of stopping")
    val_fraction: float = opt(0.1, "share of --image-folder held out for val (seeded); not used with --val-folder",
                              gt=0, lt=1)
    val_folder: Optional[str] = opt(None, "a separate person/ + non_person/ folder used as val", path=True)
    out: Optional[str] = opt(None, "output folder (default shards/<name of the input folder>; Wake Vision: "
                                   "shards/wake-vision-<quality|large>)", path=True)
    size: int = opt(224, "short side of stored images at most this many pixels; never upscaled", lo=8)
    samples_per_shard: int = opt(1000, "samples per tar shard (the last one may be short)", lo=1)
    quality: int = opt(90, "JPEG quality of stored images (1-100)", lo=1, hi=100)
    workers: int = opt(1, "processes that decode and re-encode images (output does not depend on it)", lo=1)
    limit: Optional[int] = opt(None, "only the first N images of each split (quick tries)", lo=1)
    seed: int = opt(0, "seed of the --val-fraction split")
    overwrite: bool = opt(False, "replace an existing output folder")
    verify: Optional[str] = opt(None, "check an existing shard folder instead: every tar and samples "
                                      "table hashed against its manifest, every DALI index rebuilt", path=True)


@dataclass
class TrainConfig(OptimSettings, RenderSettings):
    """`vwwfast train-teacher`, and the settings every training run has."""
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)", path=True)
    arch: str = opt("mobilenet_v3_large", "torchvision classifier name")
    width: float = opt(1.0, "width multiplier of a MobileNet arch (mobilenet_v2, mobilenet_v3_small, "
                            "mobilenet_v3_large): every layer's channels scaled; 1 = the standard "
                            "model", gt=0, hi=2, sweep=True, short="w")
    input_size: int = opt(224, "model input size in pixels (square)", lo=8, short="size")
    epochs: int = opt(30, "training epochs", lo=1)
    batch_size: int = opt(128, "training batch size (images per step); every step sees a full batch",
                          lo=1, short="batch")
    patience: int = opt(0, "stop after this many epochs without a better val accuracy (holdout "
                           "accuracy with --holdout); 0 = never",
                        lo=0, sweep=True, short="pat")
    bn_momentum: float = opt(0.1, "BatchNorm momentum (torchvision's MobileNetV3 uses 0.01, too slow "
                                  "for short runs)", gt=0, hi=1, sweep=True, short="bn_mom")
    bn_settle: int = opt(2048, "training images run through the model to recompute BatchNorm "
                               "statistics before each evaluation; 0 = off", lo=0, sweep=True, short="bn_set")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy term",
                                 lo=0, lt=1, sweep=True, short="ls")
    view_spec: Optional[str] = opt(None, "training augmentation base: 'default', 'plain' (none) or "
                                         "'fm' (default + mixup on every view); unset = "
                                         "'default', or the teacher cache's", short="views")
    view: dict = opt({}, "view settings over --view-spec, KEY=VALUE (repeatable), e.g. --view erase=0.25 "
                         "--view scale=0.08,1.0; YAML: a `views:` section", action="append",
                     metavar="KEY=VALUE")
    view_seed: Optional[int] = opt(None, "seed of the training views; unset = --seed, or the teacher "
                                         "cache's", short="vseed")
    val_center_crop: Optional[bool] = opt(None, "validate on the centred square crop instead of the "
                                                "whole image; unset = the shard set's choice (the "
                                                "crop for Wake Vision, whose labels were made on it; "
                                                "else the whole image)", short="ccrop")
    pretrained: bool = opt(False, "start from torchvision's ImageNet weights (needs them downloaded)",
                           sweep=True, short="pretr")
    init: Optional[str] = opt(None, "start from this local checkpoint: a vwwfast .pt or a torchvision "
                                    "state_dict file", path=True, sweep=True, short="init")
    compile: str = opt("auto", "compile the training step: 'auto' (on with CUDA), 'on' or 'off'",
                       choices=("auto", "on", "off"))
    seed: int = opt(0, "seed of the epoch order (and of the views and weights unless --view-seed / "
                       "--init-seed)")
    init_seed: Optional[int] = opt(None, "seed of the weights and dropout; unset = --seed",
                                   sweep=True, short="iseed")
    train_limit: Optional[int] = opt(None, "train on this many training samples only: a subset fixed by "
                                           "--train-limit-seed, a larger one holding every sample of a "
                                           "smaller (learning curves; a teacher that saw more data than "
                                           "its students); unset = all", lo=1, short="limit")
    train_limit_seed: Optional[int] = opt(None, "seed of the --train-limit subset; unset = --seed",
                                          short="lseed")
    holdout: Optional[int] = opt(None, "set this many training samples apart (fixed by "
                                       "--holdout-seed, never trained on) and choose the best "
                                       "epoch and early stopping on them, so val is only "
                                       "reported; unset = chosen on val (its figure is then "
                                       "optimistic)", lo=1, short="hold")
    holdout_seed: Optional[int] = opt(None, "seed of the --holdout samples; unset = --seed",
                                      short="hseed")
    runs_dir: str = opt("runs", "folder that holds run folders", path=True)
    tag: Optional[str] = opt(None, "suffix of the run folder name")
    note: str = opt("", "the goal of this run, written to its card")
    resume: Optional[str] = opt(None, "run folder or short id to continue from its last checkpoint", path=True)

    # Each stage takes its own group of settings (typed), never the whole config by name.
    def recipe_settings(self) -> Optional[RecipeSettings]:
        """The KD recipe; None for a teacher run (the cross-entropy with --label-smoothing)."""
        return None

    def teacher_settings(self) -> Optional[TeacherSettings]:
        """Where teacher logits come from; None for a teacher run."""
        return None

    def budget_settings(self) -> Optional[BudgetSettings]:
        return None

    def stacks_students(self) -> bool:
        """A sweep's students in one batched step (distill --stack-students on)."""
        return False


@dataclass
class DistillConfig(RecipeSettings, TeacherSettings, TrainConfig, BudgetSettings):
    """`vwwfast distill`: a student, from a teacher's logits unless alpha is 0."""
    arch: str = opt("mobilenet_v3_small", "torchvision classifier name")
    input_size: int = opt(96, "model input size in pixels (square)", lo=8)
    sweep_mode: str = opt("grid", "settings given as lists: 'grid' (every combination) or 'zip' "
                                  "(element by element)", choices=("grid", "zip"))
    stack_students: str = opt("off", "a sweep's students of one architecture in one batched step "
                                     "(torch.func: stacked weights, vmap): 'off' or 'on'",
                              choices=("off", "on"), short="stack")

    def recipe_settings(self) -> RecipeSettings:
        return pick(RecipeSettings, self)

    def teacher_settings(self) -> TeacherSettings:
        return pick(TeacherSettings, self)

    def budget_settings(self) -> BudgetSettings:
        return pick(BudgetSettings, self)

    def stacks_students(self) -> bool:
        return self.stack_students == "on"


@dataclass
class TuneConfig(DistillConfig):
    """`vwwfast tune`: a race of KD settings, each with --seeds init seeds, on the --holdout
    split (train/tune/). Every other setting is distill's, shared by every student."""
    space: list = opt([], "a setting to search: KEY=LO:HI (sampled), KEY=LO:HI:log, or KEY=A,B,C "
                          "(choices); repeat the flag for each setting", action="append",
                      metavar="KEY=RANGE")
    trials: int = opt(6, "settings per round, each an Optuna trial; the supervised control "
                         "(alpha 0) races beside them", lo=1)
    seeds: int = opt(3, "init seeds of every setting (0..N-1): the race's noise floor and the "
                        "report's replicates", lo=2)
    rungs: Optional[list] = opt(None, "epochs at which the race decides; unset = about E/9 and "
                                      "E/3 of --epochs E", nargs="+", metavar="EPOCH")
    eta: float = opt(3.0, "at each rung at most 1/eta of the searched settings go on", gt=1)
    level: float = opt(0.05, "error rate of a round's 'worse' verdicts together (Holm across "
                             "settings, split over the rungs)", gt=0, lt=1)
    rounds: int = opt(1, "races one after another, each asking for --trials settings informed "
                         "by every finished trial", lo=1)
    storage: Optional[str] = opt(None, "the Optuna study: a journal file (shared by tune "
                                       "processes) or an RDB URL such as sqlite:///tune.db; "
                                       "unset = study.log in the tune's folder")
    study: str = opt("vwwfast-tune", "the study's name in --storage")
    holdout: Optional[int] = opt(None, "training samples set apart (fixed by --holdout-seed, "
                                       "never trained on): the selection split every decision "
                                       "is made on; unset = a fifth of the train split",
                                 lo=1, short="hold")
    resume: Optional[str] = opt(None, "a tune (its folder, id or a unique part) to continue",
                                path=True)
    replay: Optional[str] = opt(None, "a finished sweep whose members kept --holdout "
                                      "predictions: what the race would have decided on it "
                                      "(trains nothing)", path=True)


@dataclass
class CacheTeacherConfig(RenderSettings):
    shards: str = opt("", "shard folder written by `vwwfast shard` (required; with --verify: the store's "
                          "own by default)", path=True)
    teacher: Optional[list] = opt(None, "teacher checkpoint (.pt) (required); repeat it for an ensemble "
                                        "(the store keeps the log of the members' mean probability); "
                                        "with --verify: the store's own by default", path=True,
                                  action="append", metavar="CKPT")
    views: int = opt(10, "number of augmented views E per training sample", lo=1)
    input_size: Optional[int] = opt(None, "teacher input size in pixels; unset = the checkpoint's (an "
                                          "ensemble's members each run at their own)", lo=8)
    view_spec: str = opt("default", "'default' (augmented views), 'plain' (one un-augmented view) "
                                  "or 'fm' (augmented views, each mixed up with another sample's)")
    view: dict = opt({}, "view settings over --view-spec, KEY=VALUE (repeatable); YAML: a `views:` "
                         "mapping", action="append", metavar="KEY=VALUE")
    seed: int = opt(0, "seed of the view parameters")
    out: Optional[str] = opt(None, "store path (default <shards>/teacher-<arch>-<size>-<spec>-<sha8>.zarr, "
                                   "sha8 the checkpoint's sha256, e.g. teacher-mbv3l-224-default-1a2b3c4d.zarr; "
                                   "an ensemble: teacher-ens<K>-...)", path=True)
    batch_size: int = opt(256, "teacher inference batch size", lo=1)
    self_distill: bool = opt(False, "allow a checkpoint written by a student run as the teacher")
    verify: Optional[str] = opt(None, "check this store instead: recompute --samples stored views with "
                                      "the teacher and compare", path=True)
    samples: int = opt(64, "with --verify: random stored (view, sample) pairs recomputed, and as many "
                           "val samples", lo=1)


@dataclass
class EvalConfig(RenderSettings):
    checkpoint: str = opt("", "a run folder or short id, a checkpoint (.pt), or an exported .onnx / "
                              ".tflite file", positional=True, path=True)
    shards: str = opt("", "shard folder written by `vwwfast shard` (default: the run's)", path=True)
    split: str = opt("val", "split to evaluate: 'val', 'test' (when the shards have one) or 'train'",
                     choices=("val", "test", "train"))
    benchmark: bool = opt(False, "also the Wake Vision benchmark subsets (n and accuracy each) and "
                                 "precision / recall / F1 of the main set")
    input_size: Optional[int] = opt(None, "evaluate at this size instead of the model's own", lo=8)
    json: Optional[str] = opt(None, "also write the result to this JSON file", path=True)
    predictions: Optional[str] = opt(None, "write one CSV line per sample to this file", path=True)
    errors: Optional[str] = opt(None, "write a contact sheet of the most confident mistakes to this PNG",
                                path=True)
    batch_size: int = opt(256, "evaluation batch size", lo=1)
    center_crop: Optional[bool] = opt(None, "evaluate on the centred square crop instead of the whole "
                                            "image; unset = the shard set's choice (the crop for Wake "
                                            "Vision, else the whole image)")
    runs_dir: str = opt("runs", "folder that holds run folders (for short ids)", path=True)


@dataclass
class ExportConfig(RenderSettings, BudgetSettings):
    run: str = opt("", "a run folder or short id, or a checkpoint (.pt)", positional=True, path=True)
    format: str = opt("onnx", "comma-separated: 'onnx', 'tflite' (needs vwwfast[tflite])")
    int8: bool = opt(True, "also write int8 files, calibrated on the run's training views")
    calib: int = opt(512, "training views used to calibrate int8 (the run's own views, rendered "
                          "with its renderer settings)", lo=1)
    qat_epochs: int = opt(0, "quantization-aware fine-tuning epochs before int8; 0 = off (not "
                             "implemented yet: values above 0 are refused)", lo=0)
    shards: str = opt("", "shard folder (default: the run's)", path=True)
    out: Optional[str] = opt(None, "output folder (default RUN/export)", path=True)
    batch_size: int = opt(256, "evaluation batch size", lo=1)
    runs_dir: str = opt("runs", "folder that holds run folders (for short ids)", path=True)


@dataclass
class ViewsConfig(RenderSettings):
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)", path=True)
    view_spec: Optional[str] = opt(None, "training augmentation base: 'default', 'plain' or 'fm'; "
                                         "unset = 'default', or the cache's")
    view: dict = opt({}, "view settings over --view-spec, KEY=VALUE (repeatable); YAML: a `views:` "
                         "section", action="append", metavar="KEY=VALUE")
    cache: Optional[str] = opt(None, "show the views stored in this teacher cache instead", path=True)
    seed: Optional[int] = opt(None, "seed of the view parameters; unset = 0, or the cache's")
    samples: int = opt(6, "samples shown (rows)", lo=1)
    views: int = opt(6, "views per sample (columns)", lo=1)
    size: int = opt(96, "rendered size in pixels", lo=8)
    out: str = opt("views.png", "contact sheet to write (PNG)", path=True)
    # a sheet is a few dozen images: the exact renderer, on the CPU
    renderer: str = opt("reference", RENDERER_HELP, choices=RENDERER_CHOICES)
    device: str = opt("cpu", DEVICE_HELP)


@dataclass
class RunsConfig:
    runs_dir: str = opt("runs", "folder that holds run folders", path=True)
    kind: Optional[str] = opt(None, "only runs of this kind: 'teacher' or 'student'",
                              choices=("teacher", "student"))
    sort: str = opt("time", "order: 'time' or 'val_acc'", choices=("time", "val_acc"))
    sweep: Optional[str] = opt(None, "only the members of this sweep (folder, id or short id), best first")
    wide: bool = opt(False, "every column, nothing shortened")
    csv: bool = opt(False, "print CSV (every column) instead of a table")
    json: bool = opt(False, "print JSON (every field) instead of a table")
    diff: Optional[list] = opt(None, "two runs (folders or short ids) to compare", nargs=2, metavar="RUN")
    plot: Optional[list] = opt(None, "runs or sweeps (folders, ids or short ids) to draw on one figure: "
                                     "val accuracy, recalls and alpha per epoch", nargs="+", metavar="RUN")
    out: Optional[str] = opt(None, "with --plot: the PNG to write (default RUNS_DIR/compare.png)", path=True)


@dataclass
class BenchLoaderConfig(RenderSettings):
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)", path=True)
    renderer: str = opt("all", "renderer to time, or 'all'", choices=("all",) + RENDERER_CHOICES[1:])
    size: int = opt(96, "output size in pixels", lo=8)
    batch_size: int = opt(256, "images per batch", lo=1)
    batches: int = opt(20, "timed batches per renderer (after warm-up)", lo=1)
    json: Optional[str] = opt(None, "also write the figures to this JSON file", path=True)


@dataclass
class BenchKDConfig(RenderSettings):
    shards: str = opt("", "shard folder written by `vwwfast shard` (required)", path=True)
    teacher: str = opt("", "teacher checkpoint (.pt) (required)", path=True)
    cache: str = opt("", "teacher cache (.zarr) (required)", path=True)
    batch_size: int = opt(128, "images per batch", lo=1)
    batches: int = opt(10, "timed batches per path (after warm-up)", lo=1)
    workers: int = opt(2, "DataLoader workers of the conventional pipeline", lo=0)
    students: int = opt(1, "also time a sweep of this many students on the cached path", lo=1)
    compile: str = opt("off", "also time every student path with the trainer's compiled step: "
                              "'auto' (with CUDA), 'on' or 'off'", choices=("auto", "on", "off"))
    stack_students: str = opt("off", "also time the --students sweep stacked into one batched step "
                                     "(as distill --stack-students on): 'off' or 'on'", choices=("off", "on"))
    paths: str = opt("all", "'all', or 'student': only the student bound and cached KD (no teacher, "
                            "no conventional pipeline), e.g. for large batches", choices=("all", "student"))
    json: Optional[str] = opt(None, "also write the figures to this JSON file", path=True)


def kd_settings(cls=None) -> list[str]:
    """The settings of the KD recipe (field metadata kd=True) in the order the config classes
    declare them, a redeclared field at its last declaration: what the runs table shows first
    and TensorBoard groups under `schedule`. cls: DistillConfig unless given."""
    cls = cls or DistillConfig
    order: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            if name in order:
                order.remove(name)
            order.append(name)
    fields_ = _fields(cls)
    return [n for n in order if n in fields_ and fields_[n].metadata.get("kd")]


def short_name(name: str) -> str:
    """A training setting's short name ('alpha' -> 'a'), or the name itself."""
    f = _fields(DistillConfig).get(name)
    return f.metadata.get("short", name) if f is not None else name


# ---------------------------------------------------------------------------------------
# Reading values

def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def base_type(tp):
    """int for Optional[int], etc."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(name: str, value, tp, where: str):
    if value is None:
        if _optional(tp):
            return None
        raise UserError(f"{where}: '{name}' may not be empty")
    want = base_type(tp)
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
            value = parse_scalar_text(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is str:
        if name == "compile" and isinstance(value, bool):  # `compile: true` from older configs
            return "on" if value else "off"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif want is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, str):  # one item of a repeatable setting (`teacher: a.pt`)
            return [value]
    elif want is dict:
        return view_settings(value, where)
    raise UserError(f"{where}: '{name}' should be {getattr(want, '__name__', want)}, got {value!r}")


def _check_value(name: str, value, f: dataclasses.Field, where: str) -> None:
    """The field's range / choices (metadata lo, hi, gt, lt, choices)."""
    if value is None or isinstance(value, (bool, dict, list)):
        return
    meta = f.metadata
    flag = "--" + name.replace("_", "-")
    if meta.get("size"):
        from vwwfast.fmt import parse_bytes
        try:
            parse_bytes(value)
        except ValueError:
            raise UserError(f"{where}: {flag} {value!r} is not a size: write e.g. 256KB (1000 bytes "
                            f"each), 256KiB (1024), 0.25MB or 262144 (bytes)") from None
        return
    if "choices" in meta:
        check_choice(flag, value, meta["choices"], where)
    if isinstance(value, (int, float)):
        check_range(flag, value, where, bounds_of(meta))


def normalize_path(value: str) -> str:
    """Windows separators (runs\\a\\model.pt, as written on a PC) work on Linux and WSL2 too."""
    if isinstance(value, list):
        return [normalize_path(v) for v in value]
    return value.replace("\\", "/") if isinstance(value, str) else value


def load_yaml(path: str | Path) -> dict:
    p = Path(normalize_path(str(path)))
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of settings at the top level")
    return data


def _raw_values(cls, yaml_data: dict | None, flags: dict | None, where: str) -> dict:
    """Field name -> value (YAML, then flags over it), names checked; not yet coerced."""
    types_ = field_types(cls)
    values: dict[str, Any] = {}
    for source, label in ((yaml_data or {}, where), (flags or {}, "command line")):
        if source is yaml_data:
            source = flatten_sections(types_, source, label)
        for key, value in source.items():
            name = key.replace("-", "_")
            if name not in types_:
                hint = (f" (it belongs in the {WHERE[name]}: section)" if name in WHERE and
                        label != "command line" else did_you_mean(name, types_))
                raise UserError(f"{label}: unknown setting '{key}' for this command{hint}")
            values[name] = value
    return values


def _finish(cls, values: dict, where: str):
    types_, fields_ = field_types(cls), _fields(cls)
    out = {}
    for name, value in values.items():
        value = _coerce(name, value, types_[name], where)
        if fields_[name].metadata.get("path"):
            value = normalize_path(value)
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise UserError(f"{where}: '{name}' should be paths, got {value!r}")
        _check_value(name, value, fields_[name], where)
        out[name] = value
    if "view" in fields_ and "view_spec" in fields_:
        # view settings are checked with the rest, before any work (and by --print-config)
        try:
            view_spec(out.get("view_spec") or "default", out.get("view") or {})
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return cls(**out)


def resolve(cls, yaml_data: dict | None = None, flags: dict | None = None, where: str = "config"):
    """Build a `cls` from defaults, then YAML values, then flags (each may be partial)."""
    values = _raw_values(cls, yaml_data, flags, where)
    for name, value in values.items():
        if isinstance(value, (list, tuple)) and _fields(cls)[name].metadata.get("sweep"):
            raise UserError(f"{where}: '{name}' takes one value here, got a list "
                            f"(lists make a sweep, for `vwwfast distill` only)")
    return _finish(cls, values, where)


# ---------------------------------------------------------------------------------------
# Sweeps: settings given as lists

@dataclass
class Sweep:
    """Several students of one `distill` pass: `configs[i]` is what a lone run of student i
    would be given; `swept` names the settings that vary, with their lists."""
    configs: list
    swept: dict
    mode: str


def _as_list(value):
    """A list from YAML, or a comma-separated flag ('0.5,0.55'); None when a single value."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and "," in value:
        return [parse_scalar_text(v.strip()) for v in value.split(",")]
    return None


def resolve_sweep(cls, yaml_data: dict | None = None, flags: dict | None = None,
                  where: str = "config"):
    """Like `resolve`, but a sweepable setting given as a list makes a `Sweep` (grid or zip)
    of configs; a list for a setting every student must share is refused."""
    values = _raw_values(cls, yaml_data, flags, where)
    fields_ = _fields(cls)
    lists = {}
    for name, value in values.items():
        base = base_type(field_types(cls)[name])
        if fields_[name].metadata.get("action") == "append" or base in (list, dict):
            continue
        if base is str and not fields_[name].metadata.get("sweep") and isinstance(value, str):
            continue  # a comma in a note, a tag or a path is text, not a list
        items = _as_list(value)
        if items is None:
            continue
        if not fields_[name].metadata.get("sweep"):
            raise UserError(f"{where}: '{name}' is shared by every student of a sweep (same batches); "
                            f"give one value, or run separate sweeps")
        if not items:
            raise UserError(f"{where}: '{name}' is an empty list")
        lists[name] = items
    for name, value in values.items():  # flags arrive as text here
        if isinstance(value, str) and base_type(field_types(cls)[name]) in (int, float):
            values[name] = parse_scalar_text(value)
    if not lists:
        return _finish(cls, values, where)
    mode = _coerce("sweep_mode", values.get("sweep_mode", "grid"), str, where)
    _check_value("sweep_mode", mode, fields_["sweep_mode"], where)
    names = list(lists)
    if mode == "zip":
        lengths = {len(v) for v in lists.values()}
        if len(lengths) > 1:
            raise UserError(f"{where}: --sweep-mode zip needs lists of one length, got "
                            + ", ".join(f"{k}: {len(v)}" for k, v in lists.items()))
        combos = list(zip(*lists.values()))
    else:
        combos = list(itertools.product(*lists.values()))
    configs = [_finish(cls, {**values, **dict(zip(names, combo))}, where) for combo in combos]
    if len(configs) == 1:
        return configs[0]
    return Sweep(configs=configs, swept=lists, mode=mode)


# ---------------------------------------------------------------------------------------
# Saving and showing

def fields_in_order(cls) -> list[dataclasses.Field]:
    """A command's own settings first, then its groups in GROUPS' order (optimisation, the
    KD recipe, the teacher, budgets, and last the render settings every renderer shares)."""
    rank: dict[Optional[type], int] = {None: 0, **{g: k + 1 for k, g in enumerate(GROUPS)}}
    return sorted(dataclasses.fields(cls), key=lambda f: rank[group_of(cls, f.name)])


def to_dict(cfg) -> dict:
    data = dataclasses.asdict(cfg)
    return {f.name: data[f.name] for f in fields_in_order(type(cfg))}


def dump_yaml(cfg_or_sweep) -> str:
    """What `--print-config` prints: YAML that `--config` accepts, in the written shape."""
    if isinstance(cfg_or_sweep, Sweep):
        data = sectioned_sweep(to_dict(cfg_or_sweep.configs[0]), cfg_or_sweep.swept, cfg_or_sweep.mode)
    else:
        data = sectioned(to_dict(cfg_or_sweep))
    return yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------------------------------
# Asking about a config


def is_given(cfg, name: str) -> bool:
    """Whether setting `name` differs from its default: what a user set, by flag or YAML."""
    f = _fields(type(cfg))[name]
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return getattr(cfg, name) != default


def given_flags(cfg, names=None) -> list[str]:
    """The --flags of the settings among `names` (default: every one) that a user set."""
    names = [f.name for f in dataclasses.fields(cfg)] if names is None else names
    return [f"--{n.replace('_', '-')}" for n in names if is_given(cfg, n)]


def require(cfg, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) in (None, "", []):
            raise UserError(f"--{name.replace('_', '-')} is required")
