"""Renderers agree on geometry and colour; the decoded cache, DALI on the CPU, the loader."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vwwfast.render import dali_available, iterate, make_renderer
from vwwfast.render.color import IMAGENET_MEAN, IMAGENET_STD, color_affine, finish
from vwwfast.render.decoded import DecodedRenderer, crop_grid, crop_theta
from vwwfast.shards import ShardSet, SourceItem, write_shards
from vwwfast.views import COL, ViewSpec, val_params, view_params

SIZES = [(120, 90), (90, 120), (100, 100), (160, 96)]  # (width, height)
MARKER = (70, 20, 82, 32)  # x0, y0, x1, y1 of a white square in the 120 x 90 marker images
N_SMOOTH, N_MARKER = 12, 2
OUT = 48

NAMES = ["reference", "decoded"] + (["dali"] if dali_available() else [])
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _smooth(rng, w, h):
    """Low-frequency colour image: renderers that resample slightly differently agree."""
    small = rng.integers(0, 255, (h // 12 + 2, w // 12 + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def _marker():
    a = np.full((90, 120, 3), 20, np.uint8)
    x0, y0, x1, y1 = MARKER
    a[y0:y1, x0:x1] = 255
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    rng = np.random.default_rng(0)
    items = []
    for i in range(N_SMOOTH + N_MARKER):
        im = _smooth(rng, *SIZES[i % len(SIZES)]) if i < N_SMOOTH else _marker()
        path = root / f"img{i}.png"  # lossless source; the shard writer makes the JPEG
        im.save(path)
        items.append(SourceItem(str(path), i % 2, {}))
    write_shards(root / "shards", {"train": items}, source={"kind": "test"}, size=224,
                 samples_per_shard=5, quality=95, show_progress=False)
    return ShardSet.open(root / "shards").split("train")


@pytest.fixture(scope="module")
def renderers(split):
    rs = {n: make_renderer(n, split, device="cpu", decoded_size=128, show_progress=False)
          for n in NAMES}
    yield rs
    for r in rs.values():
        r.close()


def to01(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.float().cpu() * std + mean


def _marker_params(flip):
    p = val_params([90], [120])
    p[0, :4] = [10 / 90, 40 / 120, 45 / 90, 60 / 120]  # y0, x0, h, w
    p[0, COL["flip"]] = flip
    return p


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_marker_lands_where_the_box_says(renderers, name, flip):
    idx = np.array([N_SMOOTH])
    x, y = renderers[name].render(idx, _marker_params(flip), OUT)
    img = to01(x)[0].mean(0)
    ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
    cy, cx = ys.float().mean().item() + 0.5, xs.float().mean().item() + 0.5
    mx, my = (MARKER[0] + MARKER[2]) / 2, (MARKER[1] + MARKER[3]) / 2
    ex = (mx / 120 - 40 / 120) / (60 / 120) * OUT
    ey = (my / 90 - 10 / 90) / (45 / 90) * OUT
    if flip:
        ex = OUT - ex
    assert abs(cx - ex) < 1.0 and abs(cy - ey) < 1.0, (cx, ex, cy, ey)
    # the square is 12 px of 60 across, 12 of 45 down
    assert len(ys) == pytest.approx((12 / 60 * OUT) * (12 / 45 * OUT), rel=0.25)
    assert y.tolist() == [N_SMOOTH % 2]


def _train_params(split, erase=0.0):
    spec = ViewSpec(erase=erase, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    return view_params(spec, 0, 0, np.arange(len(split)), split.heights, split.widths)


@pytest.mark.parametrize("views", ["train", "val", "erase"])
def test_renderers_agree(renderers, split, views):
    idx = np.arange(N_SMOOTH)
    if views == "val":
        p = val_params(split.heights, split.widths)[idx]
    else:
        p = _train_params(split, erase=1.0 if views == "erase" else 0.0)[idx]
    out = {n: to01(r.render(idx, p, OUT)[0]) for n, r in renderers.items()}
    for a in out:
        assert out[a].shape == (N_SMOOTH, 3, OUT, OUT)
        for b in out:
            if a < b:
                diff = (out[a] - out[b]).abs()
                assert diff.mean() < 0.01, (a, b, diff.mean())  # seen: under 0.004


def test_color_affine_matches_torchvision_steps():
    from torchvision.transforms import functional as TF
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0.35, 0.65, (4, 3, 8, 8)).astype(np.float32))
    p = val_params([8] * 4, [8] * 4)
    p[:, COL["brightness"]] = [1.0, 1.1, 0.9, 1.05]
    p[:, COL["contrast"]] = [1.0, 0.9, 1.1, 0.95]
    p[:, COL["saturation"]] = [1.2, 0.8, 1.0, 1.1]
    got = to01(finish(x * 255, p, scale=255.0))
    for i in range(4):
        e = TF.adjust_brightness(x[i], float(p[i, COL["brightness"]]))
        e = TF.adjust_contrast(e, float(p[i, COL["contrast"]]))
        e = TF.adjust_saturation(e, float(p[i, COL["saturation"]]))
        torch.testing.assert_close(got[i], e, atol=2e-5, rtol=0)


def test_hue_keeps_luma_and_full_turn_is_identity():
    x = torch.rand(3, 3, 6, 6) * 0.5 + 0.25
    p = val_params([6] * 3, [6] * 3)
    p[:, COL["hue"]] = [0.0, 0.05, 1.0]
    A, t = color_affine(p, x.mean(dim=(2, 3)))
    ident, _ = color_affine(val_params([6], [6]), x[:1].mean(dim=(2, 3)))
    torch.testing.assert_close(A[2], ident[0], atol=1e-5, rtol=0)
    out = to01(finish(x, p))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((out * luma).sum(1), (x * luma).sum(1), atol=1e-4, rtol=0)
    assert (out[1] - x[1]).abs().max() > 1e-3  # the shift does something


def test_erase_box_filled_with_the_mean():
    p = val_params([10], [10])
    p[0, COL["erase_y0"]:] = [0.25, 0.5, 0.5, 0.25]  # rows 2..5, cols 5..6 of 10
    x = finish(torch.rand(1, 3, 10, 10), p)
    erased = (x[0] == 0).all(0)
    expect = torch.zeros(10, 10, dtype=torch.bool)
    expect[2:7, 5:7] = True  # pixel centres (r + 0.5) / 10 in [0.25, 0.75) and [0.5, 0.75)
    assert torch.equal(erased, expect)


def test_crop_grid_is_affine_grid():
    p = torch.from_numpy(view_params(ViewSpec(), 1, 0, np.arange(16), [90] * 16, [120] * 16))
    ref = F.affine_grid(crop_theta(p), [16, 3, 20, 20], align_corners=False)
    torch.testing.assert_close(crop_grid(p, 20), ref, atol=1e-6, rtol=0)


def test_dtype_and_short_batches(renderers, split):
    p = _train_params(split)
    for name, r in renderers.items():
        full, _ = r.render(np.arange(8), p[:8], OUT)
        short, y = r.render(np.arange(3), p[:3], OUT)          # a short last batch
        torch.testing.assert_close(short, full[:3])
        bf, _ = r.render(np.arange(3), p[:3], OUT, dtype=torch.bfloat16)
        assert bf.dtype == torch.bfloat16 and y.dtype == torch.int64
        empty, ye = r.render(np.arange(0), p[:0], OUT)
        assert empty.shape == (0, 3, OUT, OUT) and ye.shape == (0,)


def test_decoded_cache_file_round_trip(split, tmp_path):
    a = DecodedRenderer(split, "cpu", 64, cache_dir=tmp_path, content_hash="h1", show_progress=False)
    assert a.first_pass["source"] == "decode"
    assert (tmp_path / "decoded-train-64.npy").is_file()
    assert (tmp_path / "decoded-train-64.json").is_file()
    b = DecodedRenderer(split, "cpu", 64, cache_dir=tmp_path, content_hash="h1", show_progress=False)
    assert b.first_pass["source"] == "file"
    p = _train_params(split)
    torch.testing.assert_close(a.render(np.arange(6), p[:6], 32)[0], b.render(np.arange(6), p[:6], 32)[0])
    c = DecodedRenderer(split, "cpu", 64, cache_dir=tmp_path, content_hash="h2", show_progress=False)
    assert c.first_pass["source"] == "decode"  # stale hash -> rebuilt
    assert not list(tmp_path.glob("*.tmp"))
    for r in (a, b, c):
        r.close()


def test_auto_choice(split):
    big = make_renderer("auto", split, device="cpu", decoded_size=64, out_size=48,
                        budget_bytes=1 << 30, show_progress=False)
    assert big.name == "decoded"
    small_cache = make_renderer("auto", split, device="cpu", decoded_size=32, out_size=48,
                                budget_bytes=1 << 30, show_progress=False)
    no_room = make_renderer("auto", split, device="cpu", decoded_size=64, out_size=48,
                            budget_bytes=10, show_progress=False)
    expect = "dali" if dali_available() else "reference"
    assert small_cache.name == expect and no_room.name == expect
    for r in (big, small_cache, no_room):
        r.close()


def test_iterate_order_short_batch_and_errors(renderers, split):
    r = renderers["decoded"]
    p = _train_params(split)
    order = np.array([5, 3, 9, 0, 1, 2, 13, 7, 8, 4, 6, 12, 10])
    got = list(iterate(r, order, lambda idx: p[idx], 5, 24))
    assert [len(i) for _, _, i in got] == [5, 5, 3]
    inline = list(iterate(r, order, lambda idx: p[idx], 5, 24, prefetch=0))
    for (x, _, i), (x2, _, i2) in zip(got, inline):
        assert torch.equal(x, x2) and (i == i2).all()
    np.testing.assert_array_equal(np.concatenate([i for _, _, i in got]), order)
    for x, y, idx in got:
        torch.testing.assert_close(x, r.render(idx, p[idx], 24)[0])
        assert y.tolist() == split.labels[idx].tolist()

    def boom(idx):
        raise RuntimeError("bad params")
    with pytest.raises(RuntimeError, match="bad params"):
        list(iterate(r, order, boom, 5, 24))
    for _ in iterate(r, order, lambda idx: p[idx], 2, 24):
        break  # an early stop ends the worker thread
    assert not [t for t in threading.enumerate() if t.name == "vwwfast-render"]


# ---------------------------------------------------------------------------------------
# GPU (run on a CUDA machine; skipped here)

@pytest.mark.gpu
@cuda
def test_gpu_decoded_matches_cpu(split):
    p = _train_params(split, erase=0.5)
    idx = np.arange(N_SMOOTH)
    cpu = DecodedRenderer(split, "cpu", 128, show_progress=False)
    for budget in (None, 0):  # on the GPU, then in pinned host memory
        gpu = DecodedRenderer(split, "cuda", 128, budget_bytes=budget, show_progress=False)
        assert gpu.first_pass["where"] == ("cuda" if budget is None else "pinned")
        x, y = gpu.render(idx, p[idx], OUT)
        assert x.is_cuda and y.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
        ref = cpu.render(idx, p[idx], OUT)[0]
        assert (to01(x) - to01(ref)).abs().mean() < 0.01
        gpu.close()


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not dali_available(), reason="needs NVIDIA DALI")
def test_gpu_dali_mixed_matches_cpu(split):
    from vwwfast.render.dali import DaliRenderer
    p = _train_params(split)
    idx = np.arange(N_SMOOTH)
    with DaliRenderer(split, "cuda") as g, DaliRenderer(split, "cpu") as c:
        xg, _ = g.render(idx, p[idx], OUT)
        assert xg.is_cuda
        assert (to01(xg) - to01(c.render(idx, p[idx], OUT)[0])).abs().mean() < 0.01


@pytest.mark.gpu
@cuda
def test_gpu_iterate_and_reference(split):
    p = _train_params(split)
    with make_renderer("reference", split, device="cuda") as r:
        batches = list(iterate(r, np.arange(len(split)), lambda idx: p[idx], 4, OUT))
        assert all(x.is_cuda and y.is_cuda for x, y, _ in batches)
        x = torch.cat([b[0] for b in batches])
        assert x.shape == (len(split), 3, OUT, OUT)


@pytest.mark.skipif(not dali_available(), reason="needs NVIDIA DALI")
def test_decoders_agree(split):
    """The decoded cache built by DALI (CPU) and by PIL hold nearly the same pixels."""
    a = DecodedRenderer(split, "cpu", 64, decoder="dali", show_progress=False)
    b = DecodedRenderer(split, "cpu", 64, decoder="pil", show_progress=False)
    diff = (a.cache.float() - b.cache.float()).abs().mean() / 255
    assert diff < 0.01
    a.close()
    b.close()
