"""vwwfast: fast knowledge distillation for Visual Wake Words.

The stages, each a subpackage that imports only the ones before it:
data (sources, shards, views, rendering) -> teach (teacher sources, the teacher cache) ->
train (losses, students, the loop) -> records (run folders, cards, tables, plots) ->
deploy (evaluation, export); bench times them. cli.py is a thin layer over all of it.
"""

from vwwfast.provenance import __version__

__all__ = ["__version__"]
