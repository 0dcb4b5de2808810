"""Which device a command runs on, and the precision it computes in there."""

from __future__ import annotations

import torch

from vwwfast.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without CUDA is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but PyTorch sees no CUDA device")
    if not (name == "cpu" or name.startswith("cuda")):
        raise UserError(f"unknown device '{name}': use 'auto', 'cuda' or 'cpu'")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 was no faster here)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def device_name(device: torch.device) -> str:
    """The device as records and benchmarks name it: the card's name, or the CPU's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timing on CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
