import pytest
import torch

from vwwfast.errors import UserError
from vwwfast.models import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint, set_bn_momentum


def _save(tmp_path, arch="mobilenet_v3_small", size=96):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model(arch), arch=arch, input_size=size, config={"a": 1},
                    epoch=3, metrics={"acc": 0.5})
    return path


def test_checkpoint_round_trip(tmp_path):
    path = _save(tmp_path)
    ck = load_checkpoint(path)
    assert (ck["arch"], ck["input_size"], ck["epoch"], ck["classes"]) == (
        "mobilenet_v3_small", 96, 3, ["no_person", "person"])
    assert ck["normalization"]["mean"] == [0.485, 0.456, 0.406] and "vwwfast_version" in ck
    model, _ = model_from_checkpoint(path)
    x = torch.randn(2, 3, 96, 96)
    assert model(x).shape == (2, 2)


def test_wrong_arch_or_size_is_a_clear_error(tmp_path):
    path = _save(tmp_path)
    with pytest.raises(UserError, match="holds a mobilenet_v3_small, expected a mobilenet_v3_large"):
        model_from_checkpoint(path, arch="mobilenet_v3_large")
    with pytest.raises(UserError, match="trained at 96 px, not 224"):
        model_from_checkpoint(path, input_size=224)
    with pytest.raises(UserError, match="holds a mobilenet_v3_small, not a mobilenet_v3_large"):
        build_model("mobilenet_v3_large", init=str(path))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"state_dict": {}}, tmp_path / "y.pt")
    with pytest.raises(UserError, match="not a vwwfast checkpoint"):
        load_checkpoint(tmp_path / "y.pt")


def test_init_from_local_checkpoint(tmp_path):
    path = _save(tmp_path)
    a = build_model("mobilenet_v3_small", init=str(path))
    ref = load_checkpoint(path)["state_dict"]
    assert all(torch.equal(a.state_dict()[k], v) for k, v in ref.items())


def _no_network(monkeypatch):
    """torch.hub's download fails as it does offline (and no test reaches the network)."""
    from urllib.error import URLError

    def offline(url, dst, *a, **kw):
        raise URLError(f"no network for {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_pretrained_weights_come_from_torchvisions_cache(arch, tmp_path, monkeypatch):
    """--pretrained reads the weights file torchvision's weights API expects under TORCH_HOME
    (a freshly built 1000-class model stands in for the real ImageNet file)."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _no_network(monkeypatch)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    imagenet = torchvision.models.get_model(arch, weights=None)
    with torch.no_grad():
        imagenet.features[0][0].weight.normal_()  # not what a new model draws
    place = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    place.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), place)
    model = build_model(arch, pretrained=True)
    own, ref = model.state_dict(), imagenet.state_dict()
    backbone = [k for k in own if not k.startswith("classifier.3.")]
    assert all(torch.equal(own[k], ref[k]) for k in backbone)
    assert own["classifier.3.weight"].shape[0] == 2  # the two-class head stays new
    assert not torch.equal(build_model(arch).state_dict()["features.0.0.weight"], ref["features.0.0.weight"])


def test_pretrained_offline_names_the_file_to_place(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    _no_network(monkeypatch)
    with pytest.raises(UserError) as e:
        build_model("mobilenet_v3_small", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "--init PATH" in msg
    assert f"place mobilenet_v3_small-047dcff4.pth (from https://download.pytorch.org/models/" \
           f"mobilenet_v3_small-047dcff4.pth) in {home / 'hub' / 'checkpoints'}" in msg
    # a damaged file where the weights belong: said so, with what to do
    (home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth").write_bytes(b"torn")
    with pytest.raises(UserError, match=r"mobilenet_v3_small-047dcff4.pth .* is not readable .*delete it"):
        build_model("mobilenet_v3_small", pretrained=True)


def test_pretrained_from_the_command_line_offline(synth_shards, tmp_path, monkeypatch, capsys):
    """Offline, `distill --pretrained` stops with the one line, before any run is recorded."""
    from vwwfast.cli import main
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _no_network(monkeypatch)
    rc = main(["distill", "--shards", str(synth_shards), "--alpha", "0", "--pretrained", "--epochs", "1",
               "--runs-dir", str(tmp_path / "runs"), "--renderer", "decoded", "--decoded-size", "48",
               "--input-size", "32", "--batch-size", "32"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after torch.hub's "Downloading: ..."
    assert rc == 2 and "error: ImageNet weights for mobilenet_v3_small are not in" in last
    assert "place mobilenet_v3_small-047dcff4.pth" in last
    assert not (tmp_path / "runs").exists()  # no run recorded


def test_unknown_arch_and_bn_momentum():
    with pytest.raises(UserError, match="unknown --arch"):
        build_model("mobilenet_v9")
    m = build_model("mobilenet_v3_small", bn_momentum=0.2)
    assert {b.momentum for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {0.2}
    set_bn_momentum(m, 0.01)
    assert {b.momentum for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {0.01}


def test_init_from_a_torchvision_state_dict(tmp_path):
    """The ImageNet weights file of torchvision, downloaded elsewhere: 1000-class head left out."""
    import torchvision
    imagenet = torchvision.models.mobilenet_v3_small(weights=None)  # stands in for the real file
    path = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model("mobilenet_v3_small", init=str(path))
    ref = imagenet.state_dict()
    own = model.state_dict()
    assert torch.equal(own["features.0.0.weight"], ref["features.0.0.weight"])
    assert own["classifier.3.weight"].shape == (2, 1024)  # the 2-class head stays new
    with pytest.raises(UserError, match="is not a mobilenet_v3_large state_dict"):
        build_model("mobilenet_v3_large", init=str(path))


# ---------------------------------------------------------------------------------------
# Width multipliers and what a model costs

def _torchvision_figures(arch: str, width: float, size: int) -> tuple[int, int]:
    """params and MACs (FLOPs / 2) of torchvision's own two-class model, counted here."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode
    model = getattr(torchvision.models, arch)(width_mult=width, num_classes=2).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


@pytest.mark.parametrize("arch,width", [("mobilenet_v3_small", 0.35), ("mobilenet_v3_small", 0.5),
                                        ("mobilenet_v2", 0.35)])
def test_width_builds_torchvisions_narrow_model(arch, width):
    from vwwfast.footprint import count_macs, count_params
    model = build_model(arch, width=width)
    params, macs = _torchvision_figures(arch, width, 64)
    assert count_params(model) == params and count_macs(model, 64) == macs
    assert count_params(model) < 0.5 * count_params(build_model(arch))
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_mobilenet_v3_small_figures_at_96():
    """The figures the docs quote: 1.52M params and 11.0M MACs at width 1, 198k at 0.35."""
    from vwwfast.footprint import count_macs, count_params
    full = build_model("mobilenet_v3_small")
    assert round(count_params(full), -4) == 1_520_000 and round(count_macs(full, 96), -5) == 11_000_000
    assert round(count_params(build_model("mobilenet_v3_small", width=0.35)), -3) == 198_000


def test_width_recorded_in_checkpoints_and_refused_across_widths(tmp_path):
    path = tmp_path / "narrow.pt"
    save_checkpoint(path, build_model("mobilenet_v3_small", width=0.5), arch="mobilenet_v3_small",
                    width=0.5, input_size=64, config={}, epoch=1, metrics={})
    assert load_checkpoint(path)["width"] == 0.5
    model, _ = model_from_checkpoint(path)  # built at the width it records
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(UserError, match="width 0.5, not 1; give --width 0.5"):
        build_model("mobilenet_v3_small", init=str(path))
    with pytest.raises(UserError, match="of width 0.5, expected width 0.35"):
        model_from_checkpoint(path, width=0.35)
    build_model("mobilenet_v3_small", init=str(path), width=0.5)  # the same width loads
    # a plain state_dict of another width: refused, the width named
    torch.save(build_model("mobilenet_v3_small").state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match="not a mobilenet_v3_small of width 0.35 state_dict"):
        build_model("mobilenet_v3_small", init=str(tmp_path / "sd.pt"), width=0.35)
    # a checkpoint written before widths were recorded is width 1
    old = load_checkpoint(_save(tmp_path))
    old.pop("width")
    torch.save(old, tmp_path / "old.pt")
    assert model_from_checkpoint(tmp_path / "old.pt", width=1.0)[1]["arch"] == "mobilenet_v3_small"


@pytest.mark.parametrize("kw,message", [
    (dict(arch="resnet18", width=0.5), "resnet18 has no width multiplier"),
    (dict(arch="mobilenet_v3_small", width=0.0), "must be > 0 and <= 2"),
    (dict(arch="mobilenet_v3_small", width=2.5), "must be > 0 and <= 2"),
    (dict(arch="mobilenet_v3_small", width=0.5, pretrained=True), "ImageNet weights are for width 1"),
])
def test_bad_widths(kw, message):
    with pytest.raises(UserError, match=message):
        build_model(**kw)


@pytest.mark.parametrize("argv,message", [
    (["--width", "0"], "--width must be > 0"),
    (["--width", "-1"], "--width must be > 0"),
    (["--width", "2.5"], "--width must be <= 2"),
    (["--width", "0.5", "--arch", "resnet18"], "resnet18 has no width multiplier"),
    (["--width", "0.5", "--pretrained"], "ImageNet weights are for width 1 only"),
    (["--width", "wide"], "'width' should be float"),
])
def test_bad_widths_on_the_command_line(argv, message, synth_shards, tmp_path, capsys):
    from conftest import one_line_error
    line = one_line_error(capsys, "distill", "--shards", synth_shards, "--alpha", "0",
                          "--runs-dir", tmp_path / "runs", *argv)
    assert message in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_torch_activation_estimate():
    """The int8 activation peak of a traced model: input + the first convolution's output
    for MobileNetV3-Small (BatchNorm and hard-swish reuse the buffer), smaller when narrower."""
    from vwwfast.footprint import torch_peak_bytes
    full = torch_peak_bytes(build_model("mobilenet_v3_small"), 96)
    assert full == 3 * 96 * 96 + 16 * 48 * 48
    assert torch_peak_bytes(build_model("mobilenet_v3_small", width=0.35), 96) < full
    # a plain chain: the peak is the step with the most input + output (ReLU reuses its input)
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1))
    assert torch_peak_bytes(seq, 10) == 100 * (8 + 4)  # the second convolution's in + out


@pytest.mark.slow
def test_a_width_sweep_trains_one_student_per_width(synth_shards, tmp_path, capsys):
    """`distill --width 0.35,0.5,1.0`: three runs in one pass, each named by its width and
    recording its own model's params."""
    import json
    from conftest import cli
    runs = tmp_path / "runs"
    rc, err, _ = cli(capsys, "distill", "--shards", synth_shards, "--alpha", "0", "--width",
                     "0.35,0.5,1.0", "--input-size", "32", "--epochs", "1", "--batch-size", "32",
                     "--bn-settle", "32", "--compile", "off", "--renderer", "decoded",
                     "--decoded-size", "48", "--runs-dir", runs)
    assert rc == 0, err
    members = sorted(p for p in runs.iterdir() if (p / "summary.json").is_file())
    by_width = {json.loads((p / "summary.json").read_text())["width"]: p for p in members}
    assert set(by_width) == {0.35, 0.5, 1.0}
    assert "mbv3s-0.35_vww32_w0.35" in by_width[0.35].name and "_mbv3s_vww32_w1" in by_width[1.0].name
    params = {w: json.loads((p / "summary.json").read_text())["params"] for w, p in by_width.items()}
    assert params[0.35] < params[0.5] < params[1.0]
    assert load_checkpoint(by_width[0.5] / "model.pt")["width"] == 0.5
