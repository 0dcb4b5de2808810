"""torchvision classifiers with a two-class head; checkpoints in and out."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from vwwfast import __version__
from vwwfast.errors import UserError

NUM_CLASSES = 2
CLASSES = ["no_person", "person"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_arch(arch: str) -> None:
    import torchvision
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise UserError(f"unknown --arch '{arch}' (torchvision classifiers, e.g. "
                        f"mobilenet_v3_small, mobilenet_v3_large, resnet18)")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 was no faster here)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's ImageNet weights through its weights API, or one clear line offline."""
    import torchvision
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # URLError, OSError, hash mismatch: all mean "not available here"
        raise UserError(f"cannot download ImageNet weights for {arch} ({type(e).__name__}); "
                        f"start from a local checkpoint with --init PATH instead") from None


def load_matching(model: nn.Module, state: dict) -> int:
    """Load every tensor whose name and shape match (the 1000-class head does not)."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return len(keep)


def build_model(arch: str, *, bn_momentum: float = 0.1, pretrained: bool = False,
                init: str | None = None) -> nn.Module:
    import torchvision
    _check_arch(arch)
    model = torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES)
    if pretrained:
        load_matching(model, imagenet_state_dict(arch))
    if init:
        ckpt = load_checkpoint(init)
        if ckpt["arch"] != arch:
            raise UserError(f"--init {init} holds a {ckpt['arch']}, not a {arch}")
        model.load_state_dict(ckpt["state_dict"])
    set_bn_momentum(model, bn_momentum)
    return model


# ---------------------------------------------------------------------------------------
# Checkpoints: plain tensors and Python literals only, so weights_only loading works.

def save_checkpoint(path, model: nn.Module, *, arch: str, input_size: int, config: dict,
                    epoch: int, metrics: dict, extra: dict | None = None) -> None:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    model = getattr(model, "module", model)     # DistributedDataParallel wrapper
    payload = {
        "format": "vwwfast-checkpoint", "vwwfast_version": __version__,
        "arch": arch, "classes": CLASSES, "input_size": input_size,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config, "epoch": epoch, "metrics": metrics,
    }
    if extra:
        payload.update(extra)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "vwwfast-checkpoint":
        raise UserError(f"{path} is not a vwwfast checkpoint")
    return ckpt


def model_from_checkpoint(path, *, arch: str | None = None, input_size: int | None = None,
                          device="cpu") -> tuple[nn.Module, dict]:
    ckpt = load_checkpoint(path)
    if arch is not None and ckpt["arch"] != arch:
        raise UserError(f"{path} holds a {ckpt['arch']}, expected a {arch}")
    if input_size is not None and ckpt["input_size"] != input_size:
        raise UserError(f"{path} was trained at {ckpt['input_size']} px, not {input_size}")
    import torchvision
    model = torchvision.models.get_model(ckpt["arch"], weights=None, num_classes=NUM_CLASSES)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt
