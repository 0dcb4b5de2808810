"""`vwwfast export`: ONNX / int8 ONNX (and TFLite where its extra is installed) of a
student, each file's accuracy in export.json, and `vwwfast eval` on each file agreeing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import one_line_error
from vwwfast import config as C
from vwwfast.cli import main
from vwwfast.errors import UserError
from vwwfast.deploy.evaluate import evaluate_command
from vwwfast.deploy.export import export_command

RENDER = dict(renderer="decoded", decoded_size=48, batch_size=16)


def train_student(shards, runs, size: int, epochs: int, **kw) -> Path:
    from vwwfast.train.commands import distill
    s = distill(C.resolve(C.DistillConfig, dict(
        shards=str(shards), alpha=0.0, input_size=size, epochs=epochs, batch_size=32,
        runs_dir=str(runs), compile="off", **kw)))
    return Path(s["run_dir"])


@pytest.fixture(scope="module")
def exported(student) -> dict:
    """ONNX and int8 ONNX of `student`, calibrated on 32 views: its export.json."""
    return export_command(C.resolve(C.ExportConfig, dict(run=str(student), calib=32, **RENDER)))


def eval_file(path, **kw) -> dict:
    return evaluate_command(C.resolve(C.EvalConfig, dict(checkpoint=str(path), **RENDER, **kw)))


def val_batch(shards, n: int, size: int) -> torch.Tensor:
    """The first n val images as the model sees them (normalised, NCHW)."""
    from vwwfast.data.split import SplitData, val_params
    from vwwfast.data.shards import ShardSet
    data = SplitData(ShardSet.open(shards), "val", C.resolve(C.EvalConfig, RENDER), "cpu", size)
    try:
        x, _, _ = next(data.batches(np.arange(n), val_params(data.split), n))
    finally:
        data.close()
    return x.contiguous()


@pytest.mark.slow
def test_onnx_logits_equal_pytorch(student, exported, synth_shards):
    import onnxruntime as ort
    from vwwfast.models import model_from_checkpoint
    model, _ = model_from_checkpoint(student / "model.pt")
    session = ort.InferenceSession(str(student / "export" / "model.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("input", "logits") and inp.shape[1:] == [3, 48, 48]
    assert isinstance(inp.shape[0], str)  # a dynamic batch
    views = val_batch(synth_shards, 8, 48)
    for batch in (1, 8):
        x = views[:batch]
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == (batch, 2) and np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_export_json_records_each_file_and_agrees_with_eval(student, exported):
    out = student / "export"
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["files"].keys() == {"model.onnx", "model-int8.onnx"}
    assert on_disk["quantization"]["calibration_views"] == 32
    assert on_disk["quantization"]["onnx"]["format"] == "QDQ"
    assert on_disk["float"]["confusion"] == eval_file(student)["confusion"]
    for name, f in on_disk["files"].items():
        assert f["bytes"] == (out / name).stat().st_size and Path(f["path"]) == (out / name).resolve()
        m = eval_file(out / name)  # its shards come from the file's metadata
        assert (m["acc"], m["recall_0"], m["recall_1"], m["confusion"]) == \
            (f["acc"], f["recall_0"], f["recall_1"], f["confusion"])
    assert on_disk["files"]["model.onnx"]["confusion"] == on_disk["float"]["confusion"]
    assert on_disk["files"]["model.onnx"]["agreement_with_float"] == 1.0
    assert 0.5 < on_disk["files"]["model-int8.onnx"]["agreement_with_float"] <= 1.0
    assert on_disk["files"]["model-int8.onnx"]["bytes"] < on_disk["files"]["model.onnx"]["bytes"] / 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_card_export_section_from_a_real_export(student, exported):
    """`vwwfast export` rewrites the run's card: one row per file, each figure the file's own
    (its size on disk, its measured accuracy and recalls, its distance to the float model)."""
    card = (student / "card.md").read_text()
    assert card.count("## Export") == 1
    section = card[card.index("## Export"):card.index("Details: `export/export.json`.")]
    from vwwfast.fmt import fmt_bytes
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
             if line.startswith("| model")]
    rows = {cells[0]: cells[1:] for cells in table}
    assert list(rows) == ["model.pt (float)", "model.onnx", "model-int8.onnx"]
    base = exported["float"]["acc"]
    for name, path, f in [("model.pt (float)", student / "model.pt", exported["float"]),
                          *((n, student / "export" / n, f) for n, f in exported["files"].items())]:
        vs = "-" if name.startswith("model.pt") else f"{100 * (f['acc'] - base):+.2f} points"
        assert rows[name] == [f["precision"], fmt_bytes(path.stat().st_size),
                              fmt_bytes(f.get("peak_activation_bytes")), f"{f['acc']:.4f}",
                              vs, f"{f['recall_0']:.4f}", f"{f['recall_1']:.4f}"], name
    assert rows["model.onnx"][4] == "+0.00 points" and rows["model-int8.onnx"][0] == "int8"


@pytest.mark.slow
def test_onnx_metadata_and_fixed_size(student, exported):
    import onnx
    proto = onnx.load(str(student / "export" / "model-int8.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta["vwwfast"])
    assert info["input_size"] == 48 and info["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert info["run"] == student.name and "pixel / 255 - mean" in meta["normalization"]
    with pytest.raises(UserError, match="runs at 48 px only"):
        eval_file(student / "export" / "model.onnx", input_size=64)


@pytest.mark.slow
def test_export_to_another_folder_without_int8(student, tmp_path, capsys):
    assert main(["export", str(student / "model.pt"), "--no-int8", "--out", str(tmp_path / "x"),
                 "--renderer", "decoded", "--decoded-size", "48"]) == 0
    report = json.loads((tmp_path / "x" / "export.json").read_text())
    assert list(report["files"]) == ["model.onnx"] and report["quantization"] is None
    assert "model.onnx" in capsys.readouterr().out


def test_bad_export_inputs_are_one_line_errors(student, tmp_path, capsys, monkeypatch):
    assert "no run 'nope'" in one_line_error(capsys, "export", "nope", "--runs-dir", str(student.parent))
    assert "--format 'onnx,coreml'" in one_line_error(capsys, "export", str(student),
                                                      "--format", "onnx,coreml")
    assert "--qat-epochs" in one_line_error(capsys, "export", str(student), "--qat-epochs", "2")
    ckpt = torch.load(student / "model.pt", weights_only=True)
    ckpt["config"] = {}
    torch.save(ckpt, tmp_path / "bare.pt")
    assert "pass --shards" in one_line_error(capsys, "export", str(tmp_path / "bare.pt"))
    # without the TFLite extra: what to install, in one line, before any work
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    err = one_line_error(capsys, "export", str(student), "--format", "onnx,tflite")
    assert "pip install 'vwwfast[tflite]'" in err
    assert not (student / "export" / "model.tflite").exists()


@pytest.mark.slow
def test_int8_onnx_of_a_trained_student_within_two_points(tmp_path_factory):
    """A demo-sized student (MobileNetV3-Small at 96 px, 4 epochs on 640 synthetic
    images): int8 costs at most 2 points of val accuracy."""
    from vwwfast.data.shards import write_shards
    from vwwfast.data.sources.coco import LABEL_RULE, coco_items
    from vwwfast.data.sources.synthetic import write_synthetic
    root = tmp_path_factory.mktemp("demo_sized")
    write_synthetic(root / "coco", train=640, val=240, seed=1, show_progress=False)
    splits, source = coco_items(root / "coco", "minival")
    write_shards(root / "shards", splits, source=source, size=112, samples_per_shard=500,
                 label_rule=LABEL_RULE, show_progress=False)
    run = train_student(root / "shards", root / "runs", 96, 4, renderer="decoded",
                        decoded_size=112, bn_settle=256, lr=3e-3)
    report = export_command(C.resolve(C.ExportConfig, dict(
        run=str(run), calib=128, renderer="decoded", decoded_size=112)))
    float_acc, int8 = report["float"]["acc"], report["files"]["model-int8.onnx"]
    assert float_acc > 0.6, "the student learned too little for the comparison to mean anything"
    assert abs(int8["drop_vs_float"]) <= 2.0 and abs(int8["acc"] - float_acc) <= 0.02


@pytest.mark.slow
def test_tflite_files(student, tmp_path, synth_shards):
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fb
    from vwwfast.models import model_from_checkpoint
    out = tmp_path / "tfl"
    report = export_command(C.resolve(C.ExportConfig, dict(
        run=str(student), format="tflite", calib=32, out=str(out), **RENDER)))
    assert list(report["files"]) == ["model.tflite", "model-int8.tflite"]
    for name, f in report["files"].items():
        m = eval_file(out / name)
        assert (m["acc"], m["confusion"]) == (f["acc"], f["confusion"])
        assert f["size_bytes"] == (out / name).stat().st_size
    # the arena estimate walks the TFLite graph too: the same order of size as the model's own
    from vwwfast.footprint import torch_peak_bytes
    model, _ = model_from_checkpoint(student / "model.pt")
    expect = torch_peak_bytes(model, 48)
    for f in report["files"].values():
        assert 0.5 * expect < f["peak_activation_bytes"] < 2 * expect, (f, expect)
    # float: NHWC pixels in, the PyTorch logits out
    model, _ = model_from_checkpoint(student / "model.pt")
    it = Interpreter(model_path=str(out / "model.tflite"))
    it.allocate_tensors()
    x = val_batch(synth_shards, 1, 48)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = ((x.permute(0, 2, 3, 1) * std + mean) * 255).contiguous()  # what a camera gives
    it.set_tensor(it.get_input_details()[0]["index"], pixels.numpy())
    it.invoke()
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(it.get_tensor(it.get_output_details()[0]["index"]) - want).max() < 1e-4
    # int8: int8 in (pixel - 128) and out, 1x48x48x3, buffers inline (TFLite Micro reads them)
    it = Interpreter(model_path=str(out / "model-int8.tflite"))
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and outp["dtype"] == np.int8
    assert list(inp["shape"]) == [1, 48, 48, 3]
    assert inp["quantization"] == pytest.approx((1.0, -128))
    model8 = fb.convert_bytearray_to_object(bytearray((out / "model-int8.tflite").read_bytes()))
    assert all(not b.offset for b in model8.buffers)


def test_calibration_of_a_mixed_view_run_uses_its_views_unmixed(synth_shards):
    """int8 is calibrated on the single images a deployed model sees: an 'fm' run's
    calibration views are its crops without the blend, i.e. the 'default' spec's views
    (mixing draws come after every other draw)."""
    from vwwfast.deploy.export import calibration_views
    from vwwfast.data.shards import ShardSet
    shards = ShardSet.open(synth_shards)
    base = dict(seed=0, renderer="decoded", decoded_size=48)
    fm = calibration_views(shards, {**base, "view_spec": "fm"}, 40, "cpu", 32)
    default = calibration_views(shards, {**base, "view_spec": "default"}, 40, "cpu", 32)
    assert fm.shape == (40, 3, 32, 32)
    np.testing.assert_array_equal(fm, default)


# ---------------------------------------------------------------------------------------
# A narrow student: width, MACs, file sizes, activation peak, budgets

NARROW = dict(arch="mobilenet_v3_small", width=0.35)


@pytest.fixture(scope="module")
def narrow(synth_shards, tmp_path_factory) -> Path:
    """`vwwfast distill --width 0.35`, supervised (no cache), 1 epoch at 48 px: its run folder."""
    runs = tmp_path_factory.mktemp("narrow_runs")
    assert main(["distill", "--shards", str(synth_shards), "--arch", "mobilenet_v3_small",
                 "--width", "0.35", "--alpha", "0", "--input-size", "48", "--epochs", "1",
                 "--batch-size", "32", "--bn-settle", "64", "--compile", "off",
                 "--renderer", "decoded", "--decoded-size", "48", "--runs-dir", str(runs)]) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_narrow_student_records_torchvisions_params_and_macs(narrow):
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode
    reference = torchvision.models.mobilenet_v3_small(width_mult=0.35, num_classes=2).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        reference(torch.zeros(1, 3, 48, 48))
    params = sum(p.numel() for p in reference.parameters())
    macs = counter.get_total_flops() / 2
    summary = json.loads((narrow / "summary.json").read_text())
    assert summary["params"] == pytest.approx(params, rel=0.02)
    assert summary["macs"] == pytest.approx(macs, rel=0.02)
    assert summary["width"] == 0.35 and summary["peak_activation_bytes_est"] > 0
    assert "_mbv3s-0.35_vww48" in narrow.name
    assert torch.load(narrow / "model.pt", weights_only=True)["width"] == 0.35
    card = (narrow / "card.md").read_text()
    assert "mbv3s-0.35" in card and "MACs" in card


@pytest.fixture(scope="module")
def narrow_export(narrow) -> dict:
    return export_command(C.resolve(C.ExportConfig, dict(run=str(narrow), calib=32, **RENDER)))


@pytest.mark.slow
def test_narrow_int8_onnx_is_under_400_kb_with_sizes_and_peak(narrow, narrow_export):
    files = json.loads((narrow / "export" / "export.json").read_text())["files"]
    int8, float_ = files["model-int8.onnx"], files["model.onnx"]
    assert int8["size_bytes"] == (narrow / "export" / "model-int8.onnx").stat().st_size < 400_000
    assert float_["size_bytes"] > 2.5 * int8["size_bytes"]  # 4 bytes a weight against 1
    # the peak: the input [3, 48, 48] and the first convolution's output [8, 24, 24]
    # (0.35 x 16 rounded to 8 channels) are live together; QDQ pairs add nothing
    assert int8["peak_activation_bytes"] == float_["peak_activation_bytes"] >= 3 * 48 * 48
    assert int8["peak_activation_bytes"] < 3 * 48 * 48 * 4
    assert narrow_export["width"] == 0.35 and narrow_export["params"] < 250_000
    card = (narrow / "card.md").read_text()
    assert "peak RAM" in card


@pytest.mark.slow
def test_export_over_a_flash_budget_is_one_line_and_writes_nothing(narrow, narrow_export, tmp_path,
                                                                   capsys):
    out = tmp_path / "budget"
    line = one_line_error(capsys, "export", str(narrow), "--max-flash", "100KB", "--calib", "8",
                          "--out", str(out), "--renderer", "decoded", "--decoded-size", "48")
    assert "model-int8.onnx: file size" in line and "over --max-flash 100KB" in line and " by " in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    line = one_line_error(capsys, "export", str(narrow), "--max-ram", "1KiB", "--calib", "8",
                          "--out", str(out), "--renderer", "decoded", "--decoded-size", "48")
    assert "activation peak (estimate)" in line and "over --max-ram 1KiB (1,024 bytes)" in line
    assert not out.exists()


def test_onnx_peak_of_a_small_graph(tmp_path):
    """The walk over an ONNX graph: a tensor live from its producer to its last consumer,
    weights left out, a skip connection kept live across the steps between."""
    from vwwfast.footprint import onnx_peak_bytes

    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(4, 4, 1)
            self.b = torch.nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return x + self.b(self.a(x))

    path = tmp_path / "skip.onnx"
    torch.onnx.export(Skip().eval(), (torch.zeros(1, 4, 5, 5),), str(path), dynamo=True,
                      external_data=False, verbose=False)
    # at b: x (kept for the add), a's output and b's output: 3 tensors of 100 elements
    assert onnx_peak_bytes(path) == 300


def test_distill_budget_refuses_an_oversized_student(synth_shards, tmp_path, capsys):
    line = one_line_error(capsys, "distill", "--shards", synth_shards, "--alpha", "0",
                          "--max-flash", "256KB", "--runs-dir", tmp_path / "runs")
    assert "mbv3s at 96 px: int8 weights (estimate: 1 byte per parameter) is 1.52 MB" in line
    assert "over --max-flash 256KB (256,000 bytes) by 1.26 MB" in line
    line = one_line_error(capsys, "distill", "--shards", synth_shards, "--alpha", "0",
                          "--width", "0.35", "--max-ram", "10KiB", "--runs-dir", tmp_path / "runs")
    assert "mbv3s-0.35 at 96 px: int8 activation peak (estimate)" in line
    assert not (tmp_path / "runs").exists()
