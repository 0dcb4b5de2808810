import numpy as np
import pytest
import torch
from PIL import Image

from vwwfast import config as C
from vwwfast.cli import main
from vwwfast.errors import UserError
from vwwfast.constants import IMAGENET_MEAN
from vwwfast.data.render.color import finish
from vwwfast.data.render.reference import render_pil
from vwwfast.records.sheets import pick_samples, sheet_size, tile_origin, to_uint8, views_command
from vwwfast.data.shards import ShardSet
from vwwfast.data.views import COL, val_params, view_params
from vwwfast.viewspec import view_spec

MEAN_RGB = np.round(np.array(IMAGENET_MEAN) * 255)  # an erased pixel, un-normalised


def _sheet(synth_shards, tmp_path, **kw):
    settings = dict(shards=str(synth_shards), out=str(tmp_path / "s.png"), samples=4, views=3, size=32)
    cfg = C.resolve(C.ViewsConfig, {**settings, **kw})
    path = views_command(cfg)
    return cfg, np.asarray(Image.open(path).convert("RGB"))


def _tile(sheet, row, col, size):
    x, y = tile_origin(row, col, size)
    return sheet[y:y + size, x:x + size].astype(np.int16)


def test_sheet_written_with_expected_size(synth_shards, tmp_path, capsys):
    assert main(["views", "--shards", str(synth_shards), "--samples", "4", "--views", "3",
                 "--size", "32", "--view", "erase=0.5", "--out", str(tmp_path / "d" / "s.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "s.png")
    img = Image.open(tmp_path / "d" / "s.png")
    assert img.format == "PNG" and img.size == sheet_size(4, 1 + 3, 32)  # + the whole image
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["s.png"]  # no temp file left
    assert sheet_size(4, 5, 32)[0] - sheet_size(4, 4, 32)[0] == 32 + 4
    assert sheet_size(5, 4, 32)[1] > sheet_size(4, 4, 32)[1] + 32


def test_tiles_are_the_rendered_views(synth_shards, tmp_path):
    """Plain views are the whole image (column 0, the validation view) as the reference
    renderer draws it; erase=1 puts a mean-colour box where the parameters say."""
    split = ShardSet.open(synth_shards).split("train")
    idx = pick_samples(split.labels, 4)
    cfg, sheet = _sheet(synth_shards, tmp_path, view_spec="plain")
    for r, i in enumerate(idx):
        want = render_pil(split.read_jpeg(i), val_params([split.heights[i]], [split.widths[i]])[0], 32)
        for c in range(4):
            assert np.abs(_tile(sheet, r, c, 32) - want).max() <= 1, (r, c)

    _, sheet = _sheet(synth_shards, tmp_path, view_spec="plain", view={"erase": 1.0})
    spec = view_spec("plain", {"erase": 1.0})
    for v in range(3):
        p = view_params(spec, 0, v, idx, split.heights[idx], split.widths[idx])
        for r in range(len(idx)):
            y0, x0, h, w = (p[r, COL[k]] * 32 for k in ("erase_y0", "erase_x0", "erase_h", "erase_w"))
            inside = _tile(sheet, r, 1 + v, 32)[int(np.ceil(y0)) + 1:int(y0 + h) - 1,
                                               int(np.ceil(x0)) + 1:int(x0 + w) - 1]
            assert inside.size and np.abs(inside - MEAN_RGB).max() <= 1, (r, v)


def test_settings_change_the_sheet(synth_shards, tmp_path):
    _, default = _sheet(synth_shards, tmp_path)
    _, other_seed = _sheet(synth_shards, tmp_path, seed=1)
    _, erased = _sheet(synth_shards, tmp_path, view={"erase": 1.0})
    whole = lambda s: _tile(s, 0, 0, 32)  # noqa: E731
    assert (whole(default) == whole(other_seed)).all() and (whole(default) == whole(erased)).all()
    for r in range(4):
        assert (_tile(default, r, 1, 32) != _tile(other_seed, r, 1, 32)).any()
        assert (_tile(default, r, 1, 32) != _tile(erased, r, 1, 32)).any()


def test_refusals(synth_shards, tmp_path, capsys):
    with pytest.raises(UserError, match="ending in .png"):
        _sheet(synth_shards, tmp_path, out=str(tmp_path / "s.jpg"))
    assert main(["views", "--shards", str(synth_shards), "--view", "erasing=0.5",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'erase'" in err[0]
    assert not (tmp_path / "x.png").exists()


def test_pick_samples():
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 0])
    assert pick_samples(labels, 4).tolist() == [0, 1, 3, 5]
    assert pick_samples(labels, 3).tolist() == [0, 3, 5]
    assert pick_samples(np.array([0, 1, 0, 0, 0]), 4).tolist() == [0, 1, 2, 3]  # one person only
    assert pick_samples(labels, 20).tolist() == list(range(8))


def test_store_views(synth_shards, small_store, tmp_path):
    """--cache shows the store's own views (2 default ones, conftest); settings that
    contradict it are refused."""
    from vwwfast.teach.cache import TeacherCache
    store = TeacherCache(small_store)
    split = ShardSet.open(synth_shards).split("train")
    idx = pick_samples(split.labels, 4)
    _, sheet = _sheet(synth_shards, tmp_path, cache=small_store, views=5)  # the store has 2
    assert sheet.shape[:2][::-1] == sheet_size(4, 1 + 2, 32)
    params = store.params()
    for v in range(2):
        for r, i in enumerate(idx):  # the reference renderer on the stored parameters
            x = torch.from_numpy(np.array(render_pil(split.read_jpeg(i), params[v, i], 32)))
            x = x.permute(2, 0, 1)
            want = to_uint8(finish(x[None].float(), params[v, i:i + 1], scale=255.0))[0]
            assert np.abs(_tile(sheet, r, 1 + v, 32) - want).max() <= 1, (r, v)
    with pytest.raises(UserError, match="erase: store 0.0, asked 0.5"):
        _sheet(synth_shards, tmp_path, cache=small_store, view={"erase": 0.5})
    with pytest.raises(UserError, match="view seed"):
        _sheet(synth_shards, tmp_path, cache=small_store, seed=3)
    _sheet(synth_shards, tmp_path, cache=small_store, view={"erase": 0.0})  # agrees: fine


def test_mixed_views_are_blends_of_two_rendered_views(synth_shards, tmp_path):
    """--view-spec fm: each view tile is lam * own view + (1 - lam) * the partner's view,
    the partner drawn among the whole split (not among the samples shown)."""
    split = ShardSet.open(synth_shards).split("train")
    idx = pick_samples(split.labels, 4)
    _, sheet = _sheet(synth_shards, tmp_path, view_spec="fm", view={"crop": False, "flip": 0,
                      "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0})
    spec = view_spec("fm", {"crop": False, "flip": 0, "brightness": 0, "contrast": 0,
                            "saturation": 0, "hue": 0})
    table = view_params(spec, 0, 0, np.arange(len(split)), split.heights, split.widths)
    assert not set(table[idx, COL["partner"]].astype(int)) <= set(idx)
    for r, i in enumerate(idx):
        j, lam = int(table[i, COL["partner"]]), float(table[i, COL["mix_lam"]])
        own = render_pil(split.read_jpeg(i), table[i], 32).astype(np.float64)
        other = render_pil(split.read_jpeg(j), table[j], 32).astype(np.float64)
        assert np.abs(_tile(sheet, r, 1, 32) - (lam * own + (1 - lam) * other)).max() <= 2, r
        assert 0 < lam < 1
