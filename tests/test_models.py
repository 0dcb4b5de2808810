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


def test_pretrained_offline_names_init(monkeypatch):
    import torchvision
    from urllib.error import URLError
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT

    def offline(*a, **kw):
        raise URLError("no network")
    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(UserError, match="cannot download ImageNet weights.*--init PATH"):
        build_model("mobilenet_v3_small", pretrained=True)


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
