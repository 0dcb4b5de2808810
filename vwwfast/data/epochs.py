"""Epoch orders and their split across ranks.

An epoch's order is a pure function of (seed, epoch): a permutation by sorting per-sample
splitmix64 hashes (the same counter-based generator as the views), so it is identical on
every machine and numpy version, and every rank computes it without communicating.

Split across ranks (`rank_slice`): contiguous blocks of the epoch order; when
n % world_size != 0, the first n % world_size ranks get one extra sample. Every sample is
seen exactly once per epoch, none twice. Ranks may therefore differ by one sample (and by
one batch): a trainer that runs collectives per step must agree on the step count (e.g.
every rank runs `steps_per_rank(...)` steps, the short ones repeating a sample in their
last batch, or dropping the last partial batch everywhere).

A run with `--train-limit N` trains on a subset (`train_subset`): the first N samples of one
seeded permutation, so the subset of a larger N holds every sample of a smaller one (a
learning curve adds data, never swaps it). Its epochs permute the subset only
(`subset_order`); without a limit the subset is every sample and the orders are
`epoch_order`'s.

A run with `--holdout H` sets H training samples apart first (`training_samples`): one
seeded permutation's first H, never trained on, on which the run chooses its checkpoint;
the --train-limit subset is then drawn from the rest, as above. Without a holdout every
subset is what it was before holdouts existed.
"""

from __future__ import annotations

import numpy as np

from vwwfast.data.views import sample_keys
from vwwfast.errors import UserError

_EPOCH_STREAM = 0x45504F4348  # keeps epoch orders apart from view streams of the same seed
_SUBSET_STREAM = 0x535542534554  # the subset's permutation: apart from every epoch's
_HOLDOUT_STREAM = 0x484F4C444F5554  # the holdout's permutation: apart from the subset's


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """int64 [n]: the sample order of one training epoch (0..n-1 each once)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    keys = sample_keys(seed, _EPOCH_STREAM + epoch, np.arange(n))
    return np.argsort(keys, kind="stable").astype(np.int64)


def train_subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """int64 [min(limit, n)], sorted: the training samples a run with --train-limit `limit`
    trains on, a pure function of (n, limit, seed); every sample when limit is None. Nested:
    the subset of a larger limit (same n and seed) holds the subset of a smaller one."""
    if limit is None:
        return np.arange(n, dtype=np.int64)
    if limit > n:
        raise UserError(f"--train-limit {limit} is more than the {n} training samples of the shards; "
                        f"give at most {n}, or drop it to train on every sample")
    keys = sample_keys(seed, _SUBSET_STREAM, np.arange(n))
    return np.sort(np.argsort(keys, kind="stable")[:limit]).astype(np.int64)


def training_samples(n: int, *, holdout: int | None, holdout_seed: int | None,
                     limit: int | None, limit_seed: int | None, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(subset, holdout): int64 sorted sample indices of an n-sample train split that a run
    trains on and sets apart, disjoint. holdout None: (train_subset(n, limit, limit_seed),
    empty), exactly as without holdouts. A seed left None is `seed` (the run's --seed).
    Bad sizes are refused with one line."""
    holdout_seed = seed if holdout_seed is None else holdout_seed
    limit_seed = seed if limit_seed is None else limit_seed
    if holdout is None:
        return train_subset(n, limit, limit_seed), np.zeros(0, np.int64)
    if holdout >= n:
        raise UserError(f"--holdout {holdout} is as large as the train split ({n} samples): nothing "
                        f"would be left to train on; give at most {n - 1}")
    keys = sample_keys(holdout_seed, _HOLDOUT_STREAM, np.arange(n))
    perm = np.argsort(keys, kind="stable").astype(np.int64)
    held, pool = np.sort(perm[:holdout]), np.sort(perm[holdout:])
    if limit is not None and limit > len(pool):
        raise UserError(f"--train-limit {limit} with --holdout {holdout}: the train split's {n} "
                        f"samples leave {len(pool)} to train on; give --train-limit at most "
                        f"{len(pool)}, or a smaller --holdout")
    return pool[train_subset(len(pool), limit, limit_seed)], held


def subset_order(subset: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch over `subset` (each of its samples once, no other):
    `epoch_order` of the subset's positions, so a full subset gives `epoch_order` itself."""
    return np.asarray(subset, dtype=np.int64)[epoch_order(len(subset), seed, epoch)]


def rank_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous block of an n-sample order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rank_slice(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's part of `order` (a view, no copy): disjoint, covering, contiguous."""
    start, stop = rank_bounds(len(order), rank, world_size)
    return order[start:stop]


def steps_per_rank(n: int, world_size: int, batch_size: int, drop_last: bool = False) -> int:
    """Steps every rank can run for an n-sample epoch: the most any rank needs (ranks with
    fewer batches must pad), or with drop_last the fewest full batches any rank has."""
    base, extra = divmod(n, world_size)
    longest = base + (1 if extra else 0)
    if drop_last:
        return base // batch_size
    return -(-longest // batch_size)
