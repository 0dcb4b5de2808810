"""torchvision classifiers with a two-class head; checkpoints in and out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from vwwfast.constants import CLASSES, IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES
from vwwfast.errors import UserError
from vwwfast.provenance import __version__

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


def _check_arch(arch: str) -> None:
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise UserError(f"unknown --arch '{arch}' (torchvision classifiers, e.g. "
                        f"mobilenet_v3_small, mobilenet_v3_large, resnet18)")


# The archs that take torchvision's width multiplier (`width_mult`: every layer's channels
# scaled, rounded to multiples of 8).
WIDTH_ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def check_width(arch: str, width: float, *, pretrained: bool = False, flag: str = "--width") -> None:
    """A width multiplier the arch takes: one line otherwise (torchvision's ImageNet
    weights exist at width 1 only)."""
    if not (0 < width <= 2):
        raise UserError(f"{flag} must be > 0 and <= 2, got {width:g}")
    if width != 1.0 and arch not in WIDTH_ARCHS:
        raise UserError(f"{flag} {width:g}: {arch} has no width multiplier (archs that have one: "
                        f"{', '.join(WIDTH_ARCHS)}); drop {flag}")
    if width != 1.0 and pretrained:
        raise UserError(f"{flag} {width:g} with --pretrained: torchvision's ImageNet weights are "
                        f"for width 1 only; drop one of them")


def checkpoint_width(ckpt: dict) -> float:
    """The width multiplier a checkpoint's model was built with (1 for older checkpoints)."""
    return float(ckpt.get("width") or 1.0)


def new_model(arch: str, width: float = 1.0) -> nn.Module:
    """torchvision's `arch` with a two-class head and random weights, at `width`."""
    import torchvision
    _check_arch(arch)
    check_width(arch, width)
    extra = {"width_mult": float(width)} if width != 1.0 else {}
    return torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES, **extra)


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def imagenet_weights_file(arch: str) -> tuple[WeightsEnum, Path]:
    """torchvision's default ImageNet weights of `arch` and the file its weights API reads
    them from: $TORCH_HOME/hub/checkpoints/<the file of the weights' url> (torch.hub)."""
    import torchvision
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"torchvision has no pretrained weights for --arch {arch}; drop --pretrained") from None
    name = os.path.basename(urlparse(weights.url).path)
    return weights, Path(torch.hub.get_dir()) / "checkpoints" / name


def ensure_imagenet_weights(arch: str) -> Path:
    """The file of `arch`'s ImageNet weights in torchvision's cache, downloaded when missing:
    checked before a run records anything, so that offline it stops with the one line."""
    weights, path = imagenet_weights_file(arch)
    if not path.is_file():
        imagenet_state_dict(arch)
    return path


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's ImageNet weights through its weights API (torch.hub's cache under
    TORCH_HOME, downloaded when missing and the network allows), or one clear line naming
    the file to place and where."""
    import contextlib
    import sys
    weights, path = imagenet_weights_file(arch)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch.hub says "Downloading" on stdout
            return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # URLError, OSError, hash mismatch, an unreadable file
        if path.is_file():
            raise UserError(f"{path} ({weights}) is not readable ({type(e).__name__}): delete it "
                            f"and place the file from {weights.url} there again") from None
        raise UserError(f"ImageNet weights for {arch} are not in torchvision's cache and cannot be "
                        f"downloaded ({type(e).__name__}): place {path.name} (from {weights.url}) "
                        f"in {path.parent} (set TORCH_HOME to use another cache), or start from "
                        f"a local file with --init PATH") from None


def load_matching(model: nn.Module, state: dict) -> int:
    """Load every tensor whose name and shape match (the 1000-class head does not)."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return len(keep)


def build_model(arch: str, *, bn_momentum: float = 0.1, pretrained: bool = False,
                init: str | None = None, width: float = 1.0) -> nn.Module:
    """A two-class torchvision classifier at width multiplier `width`: random weights,
    ImageNet weights (`pretrained`, width 1 only), or weights from `init`: a vwwfast
    checkpoint (of the same arch and width), or a plain torchvision state_dict file (e.g.
    ImageNet weights downloaded on another machine; the 1000-class head is left out)."""
    check_width(arch, width, pretrained=pretrained)
    model = new_model(arch, width)
    if pretrained:
        load_matching(model, imagenet_state_dict(arch))
    if init:
        state = read_weights_file(init)
        if state.get("format") == "vwwfast-checkpoint":
            if state["arch"] != arch:
                raise UserError(f"--init {init} holds a {state['arch']}, not a {arch}")
            if checkpoint_width(state) != width:
                raise UserError(f"--init {init} holds a {arch} of width {checkpoint_width(state):g}, "
                                f"not {width:g}; give --width {checkpoint_width(state):g} or another "
                                f"checkpoint")
            model.load_state_dict(state["state_dict"])
        else:
            own = model.state_dict()
            loaded = load_matching(model, state)
            backbone = [k for k in own if not k.startswith("classifier.")]
            missing = [k for k in backbone if k not in state or state[k].shape != own[k].shape]
            if not loaded or missing:
                what = f"{arch} of width {width:g}" if width != 1.0 else arch
                raise UserError(f"--init {init} is not a {what} state_dict ({len(missing)} of "
                                f"{len(backbone)} backbone tensors missing or of another shape)")
    set_bn_momentum(model, bn_momentum)
    return model


def read_weights_file(path) -> dict:
    """A .pt/.pth file loaded with weights_only=True: a vwwfast checkpoint or a state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a {type(data).__name__}, not a checkpoint or state_dict")
    if isinstance(data.get("state_dict"), dict) and data.get("format") != "vwwfast-checkpoint":
        data = data["state_dict"]  # a plain {"state_dict": ...} wrapper
    return data


# ---------------------------------------------------------------------------------------
# Checkpoints: plain tensors and Python literals only, so weights_only loading works.

def save_checkpoint(path, model: nn.Module, *, arch: str, input_size: int, config: dict,
                    epoch: int, metrics: dict, extra: dict | None = None,
                    role: str | None = None, run: str | None = None, width: float = 1.0) -> None:
    """role: 'teacher' or 'student' (what the run trained); run: its run folder name;
    width: the arch's width multiplier."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)     # DistributedDataParallel wrapper
    payload = {
        "format": "vwwfast-checkpoint", "vwwfast_version": __version__,
        "arch": arch, "width": float(width), "classes": list(CLASSES), "input_size": input_size,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config, "epoch": epoch, "metrics": metrics, "role": role, "run": run,
    }
    if extra:
        payload.update(extra)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    ckpt = read_weights_file(path)
    if ckpt.get("format") != "vwwfast-checkpoint":
        raise UserError(f"{path} is not a vwwfast checkpoint")
    return ckpt


def checkpoint_role(ckpt: dict) -> str | None:
    """'teacher' or 'student': recorded by the run that wrote it (older checkpoints: a
    distillation config has an alpha)."""
    role = ckpt.get("role")
    if role:
        return role
    config = ckpt.get("config") or {}
    return "student" if "alpha" in config else ("teacher" if config else None)


def describe_teacher(path, ckpt: dict, sha256: str | None = None) -> dict:
    """Which model teaches: what the card, the console and the store's attributes say."""
    metrics = ckpt.get("metrics") or {}
    return {"checkpoint": str(path), "arch": ckpt["arch"], "width": checkpoint_width(ckpt),
            "input_size": ckpt["input_size"],
            "role": checkpoint_role(ckpt), "run": ckpt.get("run") or _run_of(path),
            "run_val_acc": metrics.get("acc"), "epoch": ckpt.get("epoch"),
            "pretrained": (ckpt.get("config") or {}).get("pretrained"), "sha256": sha256}


def _run_of(path) -> str | None:
    """The run folder a checkpoint sits in (runs/<id>/model.pt), when it looks like one."""
    parent = Path(path).resolve().parent
    return parent.name if (parent / "config.yaml").is_file() else None


def check_teacher(path, ckpt: dict, *, self_distill: bool = False, arch: str | None = None,
                  input_size: int | None = None, pretrained: bool | None = None,
                  width: float | None = None) -> None:
    """Refuse a checkpoint that a student run wrote (unless self_distill), and any teacher
    setting the user gave that the checkpoint contradicts."""
    if checkpoint_role(ckpt) == "student" and not self_distill:
        run = ckpt.get("run") or _run_of(path) or "a student run"
        raise UserError(f"{path} was written by a student run ({run}), not a teacher; pass a "
                        f"teacher's model.pt, or --self-distill to distil from a student on purpose")
    if arch is not None and arch != ckpt["arch"]:
        raise UserError(f"teacher arch is {arch} in the config but {path} holds a {ckpt['arch']}")
    if width is not None and width != checkpoint_width(ckpt):
        raise UserError(f"teacher width is {width:g} in the config but {path} holds a "
                        f"{ckpt['arch']} of width {checkpoint_width(ckpt):g}")
    if input_size is not None and input_size != ckpt["input_size"]:
        raise UserError(f"teacher input size is {input_size} in the config but {path} was "
                        f"trained at {ckpt['input_size']} px")
    have = (ckpt.get("config") or {}).get("pretrained")
    if pretrained is not None and have is not None and bool(have) != pretrained:
        raise UserError(f"teacher pretrained is {str(pretrained).lower()} in the config but {path} "
                        f"was trained with pretrained {str(bool(have)).lower()}")


def check_ensemble(paths: list, ckpts: list[dict], shas: list[str]) -> None:
    """The members of a teacher ensemble: each checkpoint once (by sha256), and one set of
    classes and one input normalisation among them (their probabilities are averaged)."""
    seen: dict[str, str] = {}
    for path, sha in zip(paths, shas):
        if sha in seen:
            raise UserError(f"--teacher {path} is the same checkpoint as --teacher {seen[sha]} "
                            f"(sha256 {sha[:12]}): give each member of the ensemble once")
        seen[sha] = str(path)
    for what, key in (("classes", "classes"), ("input normalisation", "normalization")):
        first = ckpts[0].get(key)
        for path, ckpt in zip(paths[1:], ckpts[1:]):
            if ckpt.get(key) != first:
                raise UserError(f"ensemble members disagree on {what}: {paths[0]} has {first}, "
                                f"{path} has {ckpt.get(key)}; an ensemble averages the probabilities "
                                f"of models of one kind")


def model_from_checkpoint(path, *, arch: str | None = None, input_size: int | None = None,
                          device="cpu", width: float | None = None) -> tuple[nn.Module, dict]:
    """The model a vwwfast checkpoint holds, built at the arch and width it records."""
    ckpt = load_checkpoint(path)
    if arch is not None and ckpt["arch"] != arch:
        raise UserError(f"{path} holds a {ckpt['arch']}, expected a {arch}")
    if width is not None and checkpoint_width(ckpt) != width:
        raise UserError(f"{path} holds a {ckpt['arch']} of width {checkpoint_width(ckpt):g}, "
                        f"expected width {width:g}")
    if input_size is not None and ckpt["input_size"] != input_size:
        raise UserError(f"{path} was trained at {ckpt['input_size']} px, not {input_size}")
    model = new_model(ckpt["arch"], checkpoint_width(ckpt))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UserError(f"{path}: its weights do not fit a {ckpt['arch']} of width "
                        f"{checkpoint_width(ckpt):g} (a checkpoint edited by hand?)") from None
    return model.to(device).eval(), ckpt
