"""Contact sheets: rendered views in a labelled grid, written as one PNG.

`vwwfast views` shows a few training samples under a view spec (or the views a teacher
store holds), so a person sees what the student will see before paying for a cache. Each
row is one sample (key, label); the first column is the whole image (the validation
view), then one column per view, captioned with its crop area and flip / erase marks.
The tiles are the renderer's output at the training size, un-normalised, not resized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vwwfast import config as C
from vwwfast.errors import UserError
from vwwfast.files import write_atomic

PAD = 4        # between tiles and around the grid
LABEL_W = 72   # row labels (sample key, label) on the left
TITLE_H = 18   # one title line
HEAD_H = 14    # column headers
CAPTION_H = 13  # one caption line under each tile
BACKGROUND, INK, FAINT = (255, 255, 255), (20, 20, 20), (110, 110, 110)


def tile_origin(row: int, col: int, tile: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of tile (row, col) on the sheet."""
    return LABEL_W + PAD + col * (tile + PAD), TITLE_H + HEAD_H + row * (tile + CAPTION_H + PAD)


def sheet_size(rows: int, cols: int, tile: int) -> tuple[int, int]:
    """(width, height) of a sheet of rows x cols tiles of tile x tile pixels."""
    x, y = tile_origin(rows, cols, tile)
    return x, y + PAD


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def grid_image(tiles: np.ndarray, *, title: str, col_labels, row_labels, captions=None) -> Image.Image:
    """tiles uint8 [rows, cols, S, S, 3] -> a sheet. row_labels: one string per row (lines
    split by newlines); captions: [rows][cols] strings under the tiles, or None."""
    rows, cols, s = tiles.shape[0], tiles.shape[1], tiles.shape[2]
    img = Image.new("RGB", sheet_size(rows, cols, s), BACKGROUND)
    draw, font = ImageDraw.Draw(img), _font()
    draw.text((PAD, 3), title, fill=INK, font=font)  # clipped where the sheet is narrower
    for c, label in enumerate(col_labels):
        x, _ = tile_origin(0, c, s)
        draw.text((x, TITLE_H), label, fill=INK, font=font)
    for r in range(rows):
        _, y = tile_origin(r, 0, s)
        for i, line in enumerate(str(row_labels[r]).split("\n")):
            draw.text((PAD, y + i * 13), line, fill=INK if i == 0 else FAINT, font=font)
        for c in range(cols):
            x, y = tile_origin(r, c, s)
            img.paste(Image.fromarray(tiles[r, c]), (x, y))
            if captions is not None and captions[r][c]:
                draw.text((x, y + s + 1), captions[r][c], fill=FAINT, font=font)
    return img


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A renderer's normalised batch [N, 3, S, S] -> uint8 [N, S, S, 3] as shown."""
    from vwwfast.constants import IMAGENET_MEAN, IMAGENET_STD
    x = x.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def write_png(img: Image.Image, path: Path) -> None:
    """The sheet as a PNG, written atomically (no half-written sheet under its name)."""
    import io
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())


def pick_samples(labels: np.ndarray, n: int) -> np.ndarray:
    """n sample indices, half of each class where the split allows, the first of each in
    index order (the same samples whatever the spec or seed, so sheets compare)."""
    labels = np.asarray(labels)
    person, other = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    k = min(len(person), max(n - len(other), (n + 1) // 2))
    return np.sort(np.concatenate([person[:k], other[:n - k]]))


def _caption(p: np.ndarray) -> str:
    from vwwfast.data.views import COL
    parts = [f"{100 * p[COL['h']] * p[COL['w']]:.0f}%"]
    if p[COL["flip"]] >= 0.5:
        parts.append("flip")
    if p[COL["erase_h"]] > 0:
        parts.append("erase")
    if p[COL["partner"]] >= 0:   # the share of the sample's own image
        parts.append(f"{'cut' if p[COL['mix_h']] > 0 else 'mix'} {100 * p[COL['mix_lam']]:.0f}%")
    return " ".join(parts)


def _store_views(cfg, shards, idx: np.ndarray):
    """The views the store holds for samples `idx`: (params [V, n, P], title, tables),
    after checking the view settings given against the store's. tables: the whole views
    [V, N, P] when they mix (a partner's row is needed to render it), else None."""
    from vwwfast.data.shards import with_shard_views
    from vwwfast.data.views import in_layout
    from vwwfast.viewspec import ViewSpec, spec_conflicts
    from vwwfast.progress import info
    from vwwfast.teach.cache import TeacherCache

    store = TeacherCache(cfg.cache)
    store.check_shards(shards)
    fp = store.fingerprint
    named = C.is_given(cfg, "view_spec")  # a named spec means this shard set's version of it
    conflicts = spec_conflicts(fp["view_spec"], cfg.view_spec if named else None,
                               with_shard_views(shards.manifest, cfg.view) if named else cfg.view)
    if conflicts:
        raise UserError(f"{store.path} was made with other views than asked "
                        f"({'; '.join(conflicts)}); drop the view settings to show the store's")
    seed = cfg.seed if C.is_given(cfg, "seed") else None
    if seed is not None and seed != fp["seed"]:
        raise UserError(f"--seed {seed} differs from the view seed of {store.path} ({fp['seed']}); "
                        f"drop it to show the store's views")
    done = store.views_completed
    if done == 0:
        raise UserError(f"{store.path} holds no finished view yet; run `vwwfast cache-teacher` to fill it")
    n_views = min(cfg.views, done)
    if n_views < cfg.views:
        info(f"{store.path} holds {done} views: showing {n_views}, not {cfg.views}")
    base = store.attrs.get("view_spec_name", "default")
    spec = ViewSpec.from_dict(fp["view_spec"], str(store.path))
    rows = slice(None) if spec.mixes else idx
    params = store.read("train/params", (slice(0, n_views), rows, slice(None)))
    params = in_layout(params, store.attrs["param_columns"], str(store.path))
    tables = params if spec.mixes else None
    params = params[:, idx] if spec.mixes else params
    title = (f"{store.path.name};  views 1-{n_views} of {store.num_views};  {spec.describe(base)};  "
             f"seed {fp['seed']}")
    if store.plain:
        info("a plain store: its one view is the whole image; a student using it draws its own "
             "augmented views (show them without --cache)")
    return params, title, tables


def views_command(cfg) -> Path:
    """`vwwfast views`: render cfg.samples train samples x cfg.views views at cfg.size
    under the resolved spec (or the store's views with --cache), write the sheet atomically
    and print its path."""
    from vwwfast.data.shards import KEY_DIGITS, ShardSet, with_shard_views
    from vwwfast.data.split import SplitData
    from vwwfast.data.views import val_params, view_params
    from vwwfast.viewspec import view_spec
    from vwwfast.devices import resolve_device
    from vwwfast.progress import info
    from vwwfast.progress import out as stdout

    C.require(cfg, "shards")
    out = Path(cfg.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {cfg.out}: the contact sheet is a PNG; give a name ending in .png")
    shards = ShardSet.open(cfg.shards)
    split = shards.split("train")
    idx = pick_samples(split.labels, cfg.samples)
    if len(idx) < cfg.samples:
        info(f"{shards.root} has {len(idx)} train samples: showing {len(idx)} rows, not {cfg.samples}")
    H, W = split.heights[idx], split.widths[idx]
    if cfg.cache:
        params, title, tables = _store_views(cfg, shards, idx)
    else:
        base = cfg.view_spec or "default"
        spec = view_spec(base, with_shard_views(shards.manifest, cfg.view))
        seed = cfg.seed if cfg.seed is not None else 0
        # mixed views draw partners among the whole split: generate it whole (numpy, cheap)
        tables = (np.stack([view_params(spec, seed, v, np.arange(len(split)), split.heights,
                                        split.widths) for v in range(cfg.views)])
                  if spec.mixes else None)
        params = (tables[:, idx] if tables is not None else
                  np.stack([view_params(spec, seed, v, idx, H, W) for v in range(cfg.views)]))
        title = f"{shards.root.name} (train);  {spec.describe(base)};  seed {seed}"
    params = np.concatenate([val_params(H, W)[None], params])   # column 0: the whole image

    data = SplitData(shards, "train", cfg, resolve_device(cfg.device), cfg.size)
    try:
        def column(c: int):   # c = 0: the whole image; c >= 1: view c - 1
            if c and tables is not None:   # a mix renders its partner's row too
                return data.render_batch(idx, tables[c - 1], cfg.size)[0]
            return data.renderer.render(idx, params[c], cfg.size)[0]
        tiles = np.stack([to_uint8(column(c)) for c in range(len(params))], axis=1)
    finally:
        data.close()
    names = {0: "no person", 1: "person"}
    captions = [[f"{W[r]}x{H[r]} px"] + [_caption(p[r]) for p in params[1:]] for r in range(len(idx))]
    title += ";  captions: crop area, flip, erase" + (", own share of a mix" if tables is not None else "")
    img = grid_image(tiles, title=title, col_labels=["image"] + [f"view {v}" for v in range(1, len(params))],
                     row_labels=[f"{i:0{KEY_DIGITS}d}\n{names.get(int(split.labels[i]), split.labels[i])}"
                                 for i in idx],
                     captions=captions)
    write_png(img, out)
    stdout.print(str(out), soft_wrap=True)
    return out
