"""vwwfast: fast knowledge distillation for Visual Wake Words.

The stages, each a subpackage that imports only the ones before it (tests/test_layout.py):
data (sources, shards, views, rendering) -> teach (teacher sources, the teacher cache) ->
records (run folders, cards, tables, plots) -> train (losses, students, the loop; it writes
run records) -> deploy (evaluation, export) / bench (times them). cli.py is a thin layer over
all of it; docs/ARCHITECTURE.md is the map.

For other trainers (api.py): `KDData` (the batches `distill` trains on), `wds_dataset` (a
webdataset pipeline of the shards with an epoch's view parameters and logits), `render_view`
(such a view with torchvision) and `vwwfast.losses` (the KD loss). They are imported on first
use, so `import vwwfast` stays light.
"""

from vwwfast.provenance import __version__

__all__ = ["__version__", "KDData", "wds_dataset", "render_view"]

_API = ("KDData", "wds_dataset", "render_view")


def __getattr__(name: str):
    if name in _API:
        from vwwfast import api
        return getattr(api, name)
    if name == "losses":
        import importlib
        return importlib.import_module("vwwfast.losses")
    raise AttributeError(f"module 'vwwfast' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API) + ["losses"])
