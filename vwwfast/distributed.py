"""torchrun support in one place. With one process every function here is a no-op.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; we then join the process group (NCCL on
GPU, gloo on CPU). Each rank takes a disjoint part of every epoch (data/epochs.py rank_slice) and
runs the same number of full batches (the trainer drops each rank's remainder), so no rank
waits on another; metrics are summed across ranks; only rank 0 writes records.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist



def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init() -> None:
    """Join the process group when started by torchrun with more than one process."""
    if not launched() or active():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if active():
        t = t.clone()
        dist.all_reduce(t)
    return t


def all_gather_objects(obj) -> list:
    """Every rank's `obj` (picklable: numpy arrays of per-sample outputs), in rank order, on
    every rank; [obj] with one process."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(model):
    """DistributedDataParallel when launched by torchrun; the model itself otherwise."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """After a command succeeded: ranks leave together and close the process group, so none
    exits while another still talks to it."""
    if active():
        dist.barrier()
        dist.destroy_process_group()
