"""Mixed views (mixup / cutmix): rendered as the reference blends them, the same in the
trainer, the teacher cache and the online teacher; soft labels; stores that mix or that
were made before mixing existed. View-parameter draws: tests/test_views.py."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vwwfast import config as C
from vwwfast.data.split import SplitData
from vwwfast.errors import UserError
from vwwfast.data.mixing import blend, coverage, mixes, partner_weight, render_mixed, unmixed
from vwwfast.data.render.reference import ReferenceRenderer
from vwwfast.data.shards import ShardSet
from vwwfast.data.views import COL, PARAM_COLUMNS, view_params
from vwwfast.viewspec import ViewSpec, view_spec

# mixed and unmixed rows, mixup and cutmix, with erasing: every path of the blend
SPEC = dict(mixup=0.4, cutmix=1.0, mix_prob=0.75, switch_prob=0.5, erase=0.5)


def _how(renderer="decoded", decoded_size=64):
    return C.RenderSettings(renderer=renderer, decoded_size=decoded_size)


@pytest.fixture(scope="module")
def split(synth_shards):
    return ShardSet.open(synth_shards).split("train")


@pytest.fixture(scope="module")
def table(split):
    return view_params(view_spec("default", SPEC), 0, 0, np.arange(len(split)), split.heights,
                       split.widths)


def _numpy_mask(row, S):
    """The partner's share of each pixel, written out on its own: the area of pixel (r, c)
    inside the box (cutmix), or 1 - lam everywhere (mixup)."""
    if row[COL["mix_h"]] == 0:
        return np.full((S, S), 1.0 - row[COL["mix_lam"]])
    y0, x0 = row[COL["mix_y0"]] * S, row[COL["mix_x0"]] * S
    y1, x1 = y0 + row[COL["mix_h"]] * S, x0 + row[COL["mix_w"]] * S
    m = np.zeros((S, S))
    for r in range(S):
        for c in range(S):
            m[r, c] = max(0.0, min(r + 1, y1) - max(r, y0)) * max(0.0, min(c + 1, x1) - max(c, x0))
    return m


def _reference_blend(split, table, idx, S):
    """Both stored crops rendered by the reference renderer, blended in numpy."""
    ref = ReferenceRenderer(split, "cpu")
    try:
        own = ref.render(idx, table[idx], S)[0].numpy().astype(np.float64)
        out = own.copy()
        for k, i in enumerate(idx):
            j = int(table[i, COL["partner"]])
            if j < 0:
                continue
            other = ref.render(np.array([j]), table[[j]], S)[0].numpy()[0].astype(np.float64)
            m = _numpy_mask(table[i].astype(np.float64), S)
            out[k] = (1 - m) * own[k] + m * other
    finally:
        ref.close()
    return out


@pytest.mark.parametrize("S", [32, 48])
def test_blend_equals_the_reference_blend_of_the_two_stored_crops(synth_shards, split, table, S):
    idx = np.arange(24)
    rows = table[idx]
    assert (rows[:, COL["partner"]] < 0).any() and (rows[:, COL["mix_h"]] > 0).any()
    assert ((rows[:, COL["partner"]] >= 0) & (rows[:, COL["mix_h"]] == 0)).any()  # mixup too
    want = _reference_blend(split, table, idx, S)
    ref = SplitData(ShardSet.open(synth_shards), "train", _how("reference"), "cpu", S)
    dec = SplitData(ShardSet.open(synth_shards), "train", _how("decoded"), "cpu", S)
    try:
        x_ref, _ = ref.render_batch(idx, table)
        np.testing.assert_allclose(x_ref.numpy(), want, atol=1e-5)   # the same crops: exact
        x_dec, _ = dec.render_batch(idx, table)                      # the student's renderer:
        diff = np.abs(x_dec.numpy() - want)                          # the renderers' own bound
        assert diff.mean() < 0.025 and np.quantile(diff, 0.99) < 0.25, (diff.mean(), np.quantile(diff, 0.99))
    finally:
        ref.close()
        dec.close()


def test_soft_labels_sum_to_one_and_weigh_own_and_partner(synth_shards, split, table):
    idx = np.arange(len(split))
    data = SplitData(ShardSet.open(synth_shards), "train", _how(), "cpu", 32)
    try:
        _, y = data.render_batch(idx, table)
    finally:
        data.close()
    assert y.dtype == torch.float32 and y.shape == (len(idx), 2)
    torch.testing.assert_close(y.sum(1), torch.ones(len(idx)))
    lam = torch.from_numpy(table[:, COL["mix_lam"]])
    partner = table[:, COL["partner"]].astype(int)
    labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
    other = labels[np.where(partner >= 0, partner, idx)]
    want = lam[:, None] * F.one_hot(labels, 2) + (1 - lam[:, None]) * F.one_hot(other, 2)
    torch.testing.assert_close(y, want.float())
    assert (y[partner < 0].max(1).values == 1).all()                 # unmixed rows: one-hot


@pytest.mark.parametrize("S", [7, 32, 96, 224])
def test_cutmix_pastes_exactly_the_area_lam_says_at_every_size(table, S):
    cut = table[table[:, COL["mix_h"]] > 0]
    w = partner_weight(cut, S, "cpu")[:, 0]
    torch.testing.assert_close(w.mean(dim=(1, 2)), torch.from_numpy(1 - cut[:, COL["mix_lam"]]),
                               atol=2e-6, rtol=0)
    assert ((w >= 0) & (w <= 1)).all()
    mix = table[(table[:, COL["partner"]] >= 0) & (table[:, COL["mix_h"]] == 0)]
    w = partner_weight(mix, S, "cpu")[:, 0]
    torch.testing.assert_close(w, torch.from_numpy(1 - mix[:, COL["mix_lam"]])[:, None, None].expand(-1, S, S))


def test_coverage_of_a_box_edge():
    c = coverage(torch.tensor([0.25]), torch.tensor([0.3]), 8)[0]   # [2.0, 4.4) of 8 px
    torch.testing.assert_close(c, torch.tensor([0, 0, 1, 1, 0.4, 0, 0, 0]), atol=1e-6, rtol=0)


def test_blend_is_mixup_and_cutmix():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    rows = np.zeros((2, len(PARAM_COLUMNS)), np.float32)
    rows[:, COL["partner"]] = 1
    rows[0, COL["mix_lam"]] = 0.3                                   # mixup: 70% of the partner
    rows[1, [COL["mix_lam"], COL["mix_y0"], COL["mix_x0"], COL["mix_h"], COL["mix_w"]]] = \
        [0.75, 0.5, 0.0, 0.5, 0.5]                                  # cutmix: bottom-left quarter
    x = blend(a, b, rows)
    torch.testing.assert_close(x[0], torch.full((3, 4, 4), 0.7))
    want = torch.zeros(4, 4)
    want[2:, :2] = 1
    torch.testing.assert_close(x[1], want.expand(3, 4, 4))


def test_batches_render_what_render_batch_renders(synth_shards, table):
    data = SplitData(ShardSet.open(synth_shards), "train", _how(), "cpu", 32)
    order = np.array([5, 90, 3, 17, 60, 2, 41, 8, 77, 30])
    try:
        got = list(data.batches(order, table, 4))
        assert [len(i) for _, _, i in got] == [4, 4, 2]
        x = torch.cat([b[0] for b in got])
        y = torch.cat([b[1] for b in got])
        x2, y2 = data.render_batch(order, table)
        torch.testing.assert_close(x, x2)
        torch.testing.assert_close(y, y2)
        # a table that does not mix: integer labels, the renderer's own images
        plain = view_params(ViewSpec(), 0, 0, np.arange(len(data)), data.split.heights, data.split.widths)
        assert not mixes(plain) and mixes(table)
        xs, ys, _ = next(iter(data.batches(order, plain, 10)))
        assert ys.dtype == torch.int64
        torch.testing.assert_close(xs, data.renderer.render(order, plain[order], 32)[0])
        # unmixed(): the same table without its mixing, rendered as the renderer renders it
        off = unmixed(table)
        assert not mixes(off) and mixes(table)
        np.testing.assert_array_equal(off[:, :COL["partner"]], table[:, :COL["partner"]])
        torch.testing.assert_close(data.render_batch(order, off)[0], data.renderer.render(order, off[order], 32)[0])
        # the unmixed rows of a mixed table are rendered as they are
        own = table[order, COL["partner"]] < 0
        torch.testing.assert_close(x[own], data.renderer.render(order[own], table[order[own]], 32)[0])
    finally:
        data.close()


def test_render_mixed_in_bf16(synth_shards, table):
    """Blended in float32, then cast: the bf16 batch is the float batch, rounded."""
    data = SplitData(ShardSet.open(synth_shards), "train", _how(), "cpu", 32)
    idx = np.arange(6)
    try:
        want, y = render_mixed(data.renderer, idx, table, 32)
        half, y2 = data.render_batch(idx, table, dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half.float(), want, atol=0.05, rtol=0.01)
        torch.testing.assert_close(y, y2)
    finally:
        data.close()


# ---------------------------------------------------------------------------------------
# The teacher cache and the trainer on mixed views

@pytest.fixture(scope="module")
def fm_store(synth_shards, small_teacher, tmp_path_factory):
    """small_teacher's cache of 2 'fm' views (mixup on every view)."""
    from vwwfast.teach.build import cache_teacher
    out = tmp_path_factory.mktemp("fm_store") / "fm.zarr"
    return str(cache_teacher(C.resolve(C.CacheTeacherConfig, dict(
        shards=str(synth_shards), teacher=small_teacher, views=2, out=str(out), batch_size=32,
        renderer="decoded", decoded_size=48, view_spec="fm"))))


def test_fm_store_holds_mixed_views_and_their_logits(fm_store, synth_shards, small_teacher, split):
    from vwwfast.models import model_from_checkpoint
    from vwwfast.teach.cache import TeacherCache
    store = TeacherCache(fm_store)
    params = store.params()
    assert store.attrs["param_columns"] == list(PARAM_COLUMNS) and store.spec == view_spec("fm")
    assert not store.plain and (params[..., COL["partner"]] >= 0).all()
    for v in range(2):  # the stored rows are the regenerated ones
        np.testing.assert_array_equal(params[v], view_params(view_spec("fm"), 0, v, np.arange(len(split)),
                                                             split.heights, split.widths))
    assert all(0 <= a <= 1 for a in store.attrs["train_view_acc"])
    # the teacher on the same mixed images, rendered as the online teacher renders them
    model, _ = model_from_checkpoint(small_teacher)
    data = SplitData(ShardSet.open(synth_shards), "train", _how(decoded_size=48), "cpu", 48)
    idx = np.array([3, 50, 7, 95, 0, 61])
    try:
        x, _ = data.render_batch(idx, params[1])
        unmixed, _ = data.renderer.render(idx, params[1][idx], 48)
    finally:
        data.close()
    with torch.no_grad():
        online = model(x).numpy()
        other = model(unmixed).numpy()
    cached = store.logits()[1][idx].astype(np.float32)
    np.testing.assert_allclose(cached, online, rtol=2e-3, atol=2e-3)   # float16 rounding
    assert np.abs(cached - other).max() > 10 * 2e-3                     # not the unmixed views'


def test_online_teacher_logits_equal_the_cached_ones_on_mixed_views(fm_store, synth_shards, small_teacher):
    from vwwfast.models import load_checkpoint
    from vwwfast.teach.teacher import OnlineTeacher
    from vwwfast.teach.cache import TeacherCache
    store = TeacherCache(fm_store)
    online = OnlineTeacher(small_teacher, load_checkpoint(small_teacher), store.spec, 0,
                           ShardSet.open(synth_shards), _how(decoded_size=48), "cpu")
    idx = np.array([3, 50, 7, 95])
    try:
        z = online.logits(1, idx, store.params()[0]).numpy()
    finally:
        online.close()
    np.testing.assert_allclose(store.logits()[0][idx].astype(np.float32), z, rtol=2e-3, atol=2e-3)


def _distill_cfg(shards, tmp_path, **kw):
    base = dict(shards=str(shards), input_size=32, epochs=1, batch_size=32, renderer="decoded",
                decoded_size=48, runs_dir=str(tmp_path / "runs"), bn_settle=32)
    base.update(kw)
    return C.resolve(C.DistillConfig, base)


@pytest.mark.parametrize("kw, match", [
    ({"view_spec": "default"}, "mixup: store 1.0, asked 0.0 \\(from --view-spec default\\)"),
    ({"view": {"mixup": 0}}, "mixup: store 1.0, asked 0.0"),
    ({"view": {"cutmix": 1.0}}, "cutmix: store 0.0, asked 1.0"),
])
def test_mixed_store_is_refused_by_a_run_asking_for_other_views(fm_store, synth_shards, tmp_path, kw, match):
    from vwwfast.train.commands import distill
    with pytest.raises(UserError, match=match):
        distill(_distill_cfg(synth_shards, tmp_path, cache=fm_store, **kw))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_distill_on_a_mixed_store_replays_its_views(fm_store, synth_shards, tmp_path):
    import json

    import yaml

    from vwwfast.train.student import views_digest
    from vwwfast.teach.cache import TeacherCache
    from vwwfast.train.commands import distill
    s = distill(_distill_cfg(synth_shards, tmp_path, cache=fm_store, alpha=0.5, label_smoothing=0.1))
    assert s["status"] == "finished"
    saved = yaml.safe_load(open(s["run_dir"] + "/config.yaml"))
    assert saved["view_spec"] == "fm" and not saved["view"]
    rec = [json.loads(line) for line in open(s["run_dir"] + "/metrics.jsonl")]
    assert rec[0]["views_sha256"] == views_digest(TeacherCache(fm_store).params()[0])
    assert np.isfinite(rec[0]["loss"]) and rec[0]["loss_kl"] > 0 and rec[0]["loss_ce"] > 0


# ---------------------------------------------------------------------------------------
# Soft targets in the loss

def test_kd_loss_takes_soft_targets():
    from vwwfast.train.losses import kd_loss
    torch.manual_seed(0)
    z_s, z_t = torch.randn(8, 2), torch.randn(8, 2)
    lam = torch.rand(8, 1)
    y_a, y_b = torch.randint(0, 2, (8,)), torch.randint(0, 2, (8,))
    soft = lam * F.one_hot(y_a, 2) + (1 - lam) * F.one_hot(y_b, 2)
    kw = dict(temperature=2.0, confidence_gamma=2.0, margin_weight=0.03)
    for eps in (0.0, 0.1):
        loss, terms = kd_loss(z_s, z_t, soft, alpha=0.3, label_smoothing=eps, **kw)
        target = soft * (1 - eps) + eps / 2
        ce = -(target * F.log_softmax(z_s, 1)).sum(1).mean()
        torch.testing.assert_close(terms["ce"], ce)
        one_hot, _ = kd_loss(z_s, z_t, F.one_hot(y_a, 2).float(), alpha=0.3, label_smoothing=eps, **kw)
        torch.testing.assert_close(one_hot, kd_loss(z_s, z_t, y_a, alpha=0.3, label_smoothing=eps, **kw)[0])
    # alpha 1: pure function matching, the labels do not enter the loss
    a, _ = kd_loss(z_s, z_t, soft, alpha=1.0, label_smoothing=0.0, **kw)
    b, _ = kd_loss(z_s, z_t, 1 - soft, alpha=1.0, label_smoothing=0.0, **kw)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------
# A store made before the mixing columns existed

def _as_old_store(path):
    """Rewrite a store's train/params in the 13-column layout of vwwfast before mixing."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    g = zarr.open_group(str(path), mode="r+")
    old = [c for c in PARAM_COLUMNS if not (c == "partner" or c.startswith("mix_"))]
    data = np.asarray(g["train/params"][...])[..., :len(old)]
    chunks = g["train/params"].chunks
    del g["train/params"]
    g.create_array("train/params", shape=data.shape, chunks=chunks[:2] + (len(old),), dtype="float32",
                   serializer=BytesCodec(), compressors=(ZstdCodec(level=3), Crc32cCodec()),
                   fill_value=np.nan)
    g["train/params"][...] = data
    g.attrs["param_columns"] = old
    return old


def test_a_store_made_before_mixing_reads_as_not_mixed(small_store, synth_shards, tmp_path):
    import shutil

    from vwwfast.teach.cache import TeacherCache
    from vwwfast.train.commands import distill
    path = tmp_path / "old.zarr"
    shutil.copytree(small_store, path)
    before = TeacherCache(small_store).params()
    old = _as_old_store(path)
    store = TeacherCache(path)
    assert store.attrs["param_columns"] == old and len(old) == 13
    params = store.params()
    assert params.shape == before.shape
    np.testing.assert_array_equal(params, before)                    # not mixed: -1, 1, 0...
    assert not mixes(params[0])
    # its fingerprint's view spec is what a spec without mixing writes today
    assert store.fingerprint["view_spec"] == ViewSpec().to_dict()
    s = distill(_distill_cfg(synth_shards, tmp_path, cache=str(path)))
    assert s["status"] == "finished"


def test_batchnorm_settles_on_the_views_unmixed(synth_shards, split):
    """Evaluation sees single images: BatchNorm statistics of a mixed-view run are settled
    on its views without the blend ('fm' minus mixing is 'default', draw for draw)."""
    import torchvision

    from vwwfast.data.split import SplitData
    from vwwfast.train.evaluate import settle_bn
    fm, default = (view_params(view_spec(name), 0, 0, np.arange(len(split)), split.heights, split.widths)
                   for name in ("fm", "default"))
    assert mixes(fm) and np.array_equal(unmixed(fm), default)
    data = SplitData(ShardSet.open(synth_shards), "train", _how(decoded_size=48), "cpu", 32)
    stats = []
    try:
        for table in (fm, default):
            torch.manual_seed(0)
            model = torchvision.models.mobilenet_v3_small(num_classes=2)
            settle_bn([model], data, np.arange(64), table, 32, [64])
            stats.append(torch.cat([m.running_var for m in model.modules()
                                    if isinstance(m, torch.nn.BatchNorm2d)]))
    finally:
        data.close()
    torch.testing.assert_close(stats[0], stats[1])
