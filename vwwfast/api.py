"""The data of `vwwfast distill` for any training loop.

`KDData` hands out the batches `distill` trains on (rendered views on the device, labels, the
teacher cache's logits of view (epoch - 1) mod E), through the very code `distill` uses
(train/inputs.py). `wds_dataset` hands a webdataset pipeline the shard samples as they are
stored (JPEG bytes and label), with the view parameters and logits of an epoch, and
`render_view` renders such a view with torchvision.

    from vwwfast import KDData
    from vwwfast.losses import kd_loss

    with KDData("shards/vww", "shards/vww/teacher-mbv3l-224-default-1a2b3c4d.zarr") as data:
        for epoch in range(1, 31):
            for x, y, z_t, idx in data.train_batches(epoch, 128):
                loss, _ = kd_loss(model(x), z_t, y, alpha=0.5, temperature=2.0,
                                  confidence_gamma=0.0, margin_weight=0.0, label_smoothing=0.0)
                ...
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from vwwfast import config as C
from vwwfast import distributed as D
from vwwfast.data.tv_views import render_view
from vwwfast.errors import UserError
from vwwfast.teach.teacher import CachedTeacher

__all__ = ["KDData", "wds_dataset", "render_view"]

PathLike = Union[str, Path]


class KDData:
    """The training and validation batches of `vwwfast distill` with these settings.

    shards: a folder written by `vwwfast shard`. cache: a teacher cache of those shards (from
    `vwwfast cache-teacher`), or None (no logits; views drawn from view_spec / view / seed).
    Settings a store fixes (view spec and seed) are taken from it; given ones that contradict
    it are refused, with the line `distill` prints (a UserError). The other settings are
    `distill`'s of the same name, with its defaults where left None (`vwwfast distill
    --help`). Under torchrun each rank gets its share of every epoch and of val, as in
    `distill`.

    Holds renderers, files and the logits table: `close()` it, or use it in a `with`.
    """

    def __init__(self, shards: PathLike, cache: Optional[PathLike] = None, *,
                 input_size: Optional[int] = None, device: Optional[str] = None,
                 seed: Optional[int] = None, view_spec: Optional[str] = None,
                 view: Optional[dict] = None, renderer: Optional[str] = None,
                 decoded_size: Optional[int] = None, decoded_budget_gb: Optional[float] = None,
                 view_seed: Optional[int] = None, val_center_crop: Optional[bool] = None,
                 train_limit: Optional[int] = None, train_limit_seed: Optional[int] = None,
                 holdout: Optional[int] = None, holdout_seed: Optional[int] = None):
        from vwwfast.train.inputs import Inputs, resolve_configs
        given = dict(shards=str(shards), cache=None if cache is None else str(cache),
                     input_size=input_size, device=device, seed=seed, view_spec=view_spec,
                     view=view, renderer=renderer, decoded_size=decoded_size,
                     decoded_budget_gb=decoded_budget_gb, view_seed=view_seed,
                     val_center_crop=val_center_crop, train_limit=train_limit,
                     train_limit_seed=train_limit_seed, holdout=holdout, holdout_seed=holdout_seed)
        # what is left None takes distill's default (config.DistillConfig), declared there only
        cfg = C.resolve(C.DistillConfig, {k: v for k, v in given.items() if v is not None}, where="KDData")
        C.require(cfg, "shards")
        D.init()  # under torchrun: join the process group, as the CLI does (no-op otherwise)
        uses_cache = cfg.cache is not None
        (self.config,) = resolve_configs([cfg], needs_teacher=uses_cache)
        self._inputs = Inputs(self.config, needs_teacher=uses_cache)
        self._warned = False

    # -- what it holds ----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._inputs.device

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def num_train(self) -> int:
        """Training samples of an epoch, over every rank (the --train-limit subset if given;
        never the holdout)."""
        return len(self._inputs.subset)

    @property
    def num_val(self) -> int:
        return len(self._inputs.val)

    @property
    def num_views(self) -> Optional[int]:
        """E, the store's views; None without a cache."""
        source = self._inputs.source
        return source.store.num_views if isinstance(source, CachedTeacher) else None

    def view_of(self, epoch: int) -> Optional[int]:
        """The store's view epoch `epoch` reads logits of; None without a cache."""
        source = self._inputs.source
        return source.view_of(_epoch(epoch)) if isinstance(source, CachedTeacher) else None

    def steps(self, batch_size: int) -> int:
        """Full batches `train_batches(epoch, batch_size)` yields on this rank (each epoch)."""
        return self._inputs.steps(_batch_size(batch_size))

    # -- batches ----------------------------------------------------------------------------

    def train_batches(self, epoch: int, batch_size: int
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], np.ndarray]]:
        """Epoch `epoch` (from 1) as `distill` trains on it: (x, y, z_t, idx) per full batch.

        x float32 [B, 3, S, S], normalised, on the device; y int64 [B] labels (float [B, 2]
        soft labels when the views mix); z_t float32 [B, C], the store's logits of view
        (epoch - 1) mod E for these samples, or None without a cache; idx int64 [B] numpy,
        the sample indices. Every sample at most once (each rank's remainder after the last
        full batch is left out, as in `distill`); the same call gives the same batches."""
        epoch, batch_size = _epoch(epoch), _batch_size(batch_size)
        if self.steps(batch_size) < 1 and not self._warned:
            self._warned = True
            warnings.warn(f"batch size {batch_size} is larger than the {self.num_train // D.world_size()} "
                          f"training samples each process gets: no full batch, nothing to train on",
                          UserWarning, stacklevel=2)
        inputs = self._inputs
        return inputs.train_batches(inputs.epoch(epoch), batch_size)

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(x, y, idx) over every val sample of this rank once, in index order, on the
        validation view, as `distill` evaluates (the last batch may be short)."""
        return self._inputs.val_batches(_batch_size(batch_size))

    @property
    def holdout(self) -> np.ndarray:
        """int64 sorted: the train split's samples set apart by `holdout` (never in
        `train_batches`); empty without one."""
        return self._inputs.holdout

    def holdout_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(x, y, idx) over this rank's `holdout` samples once, in index order, rendered as
        `val_batches` renders val: the split to choose a checkpoint or settings on, so that
        val is only reported. Nothing without a holdout."""
        return self._inputs.holdout_batches(_batch_size(batch_size))

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._inputs.close()

    def __enter__(self) -> "KDData":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
        raise UserError(f"epochs are numbered from 1, got {epoch!r}")
    return int(epoch)


def _batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch size should be a whole number of at least 1, got {batch_size!r}")
    return int(batch_size)


# ---------------------------------------------------------------------------------------
# webdataset

def wds_dataset(shards: Union[PathLike, Sequence[str]], split: str = "train",
                cache: Optional[PathLike] = None, epoch: int = 1):
    """A `webdataset.DataPipeline` over a split's tar shards, every sample once, in the order
    they are stored (add `webdataset.shuffle` for another). Shards are split across torchrun
    ranks (`split_by_node`) and DataLoader workers (`split_by_worker`).

    shards: a folder written by `vwwfast shard`, or tar URLs webdataset opens: a list, or
    one URL or brace pattern (`.../train-{000000..000009}.tar`); with a cache the
    manifest.json beside them is read, to check the store.
    Each sample is a dict: "__key__" (the sample index, zero-padded), "jpg" (JPEG bytes),
    "cls" (int label), the other stored members as bytes; with a cache (train split only)
    also "params" (float32 [P], the view's parameters; `render_view` renders it) and "logits"
    (float32 [C]), of the view that `distill`'s epoch `epoch` uses: the store's view
    (epoch - 1) mod E (a plain store: the student's own views at distill's default seed,
    with the one plain-view logits)."""
    import webdataset as wds
    from webdataset.shardlists import expand_urls
    epoch = _epoch(epoch)
    local = isinstance(shards, Path) or (isinstance(shards, str) and not _is_url(shards))
    if isinstance(shards, Path) or (isinstance(shards, str) and local):
        urls = _tar_urls(Path(shards), split)
    else:
        urls = expand_urls(shards) if isinstance(shards, str) else [str(u) for u in shards]
    if not urls:
        raise UserError("wds_dataset: no shards given")
    params = logits = None
    if cache is not None:
        if split != "train":
            raise UserError(f"a teacher cache holds views and logits of the train split, not "
                            f"'{split}': drop cache for split '{split}'")
        params, logits = _views_and_logits(shards if local else None, urls, cache, epoch)
    return wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker,
                            wds.tarfile_to_samples(), wds.map(_WithView(params, logits)))


def _is_url(text: str) -> bool:
    """A URL or a brace pattern of tars (webdataset expands `train-{000000..000009}.tar`)."""
    return "://" in text or text.startswith("pipe:") or ("{" in text and ".." in text)


def _tar_urls(root: Path, split: str) -> list[str]:
    from vwwfast.data.shards import ShardSet
    return [str(p) for p in ShardSet.open(root).split(split).tar_paths]


def _views_and_logits(root, urls: list[str], cache, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(params [N, P], logits float32 [N, C]) of epoch `epoch`, by the code `distill` uses."""
    from vwwfast.teach.teacher import make_source, open_store, store_view
    if root is not None:
        from vwwfast.data.shards import ShardSet
        from vwwfast.train.inputs import resolve_configs
        cfg = C.resolve(C.DistillConfig, {"shards": str(root), "cache": str(cache)}, where="wds_dataset")
        (cfg,) = resolve_configs([cfg], needs_teacher=True)
        source = make_source(cfg, ShardSet.open(root), "cpu", needs_teacher=False)
        assert isinstance(source, CachedTeacher)  # a config with a cache makes one
        return source.views(epoch), source.view_logits(epoch)
    # tar URLs: the store is checked against the manifest beside them, and its own views used
    store = open_store(cache)
    manifest = _manifest_beside(urls[0])
    store.check_shards(SimpleNamespace(content_hash=manifest.get("content_hash"),
                                       root=urls[0].rsplit("/", 1)[0]))
    if store.plain:
        raise UserError(f"{store.path} is a plain store: its students draw their own views from the "
                        f"shards' samples table; give the shard folder instead of URLs")
    view = store_view(store, epoch)
    return store.params(view), store.read("train/logits", (view,)).astype(np.float32)


def _manifest_beside(url: str) -> dict:
    import webdataset as wds
    from vwwfast.data.shards import content_hash
    where = url.rsplit("/", 1)[0] + "/manifest.json" if "/" in url else "manifest.json"
    try:
        with wds.gopen(where) as f:
            manifest = json.load(f)
    except Exception as e:  # not found, not JSON, no network: all one refusal
        raise UserError(f"cannot read {where} ({type(e).__name__}): a teacher cache is checked "
                        f"against the shards' manifest beside their tars") from None
    if not isinstance(manifest, dict) or content_hash(manifest) != manifest.get("content_hash"):
        raise UserError(f"{where}: content hash does not match its contents (edited by hand?)")
    return manifest


class _WithView:
    """A webdataset map: the label as an int, and the epoch's view parameters and logits of
    the sample (by its key, the sample index). Plain data: pickled to DataLoader workers."""

    def __init__(self, params: Optional[np.ndarray], logits: Optional[np.ndarray]):
        self.params, self.logits = params, logits

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        out["cls"] = int(bytes(sample["cls"]).decode())
        if self.params is not None:
            i = int(sample["__key__"])
            if i >= len(self.params):
                raise UserError(f"sample {sample['__key__']} of {sample.get('__url__')} is not in the "
                                f"teacher cache ({len(self.params)} samples): other shards")
            assert self.logits is not None  # given with the params
            out["params"], out["logits"] = self.params[i], self.logits[i]
        return out
