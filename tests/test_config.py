import pytest

from vwwfast import config as C
from vwwfast.cli import build_parser
from vwwfast.errors import UserError


def _cfg(cls, argv, tmp_path=None, yaml_text=None, command="distill"):
    if yaml_text is not None:
        p = tmp_path / "c.yaml"
        p.write_text(yaml_text)
        argv = argv + ["--config", str(p)]
    ns = build_parser().parse_args([command, *argv])
    return C.from_args(cls, ns)


def test_precedence_defaults_yaml_flags(tmp_path):
    cfg = _cfg(C.DistillConfig, ["--epochs", "7"], tmp_path, "epochs: 3\nlr: 0.01\n")
    assert cfg.epochs == 7            # flag beats YAML
    assert cfg.lr == 0.01             # YAML beats default
    assert cfg.alpha == 0.55          # default
    assert cfg.arch == "mobilenet_v3_small" and cfg.input_size == 96


def test_unknown_key_and_wrong_type(tmp_path):
    with pytest.raises(UserError, match="unknown setting 'epochz'"):
        _cfg(C.DistillConfig, [], tmp_path, "epochz: 3\n")
    with pytest.raises(UserError, match="'epochs' should be int"):
        _cfg(C.DistillConfig, [], tmp_path, "epochs: many\n")
    with pytest.raises(UserError, match="not valid YAML"):
        _cfg(C.DistillConfig, [], tmp_path, "a: [\n")


def test_int_yaml_value_for_float_field(tmp_path):
    assert _cfg(C.DistillConfig, [], tmp_path, "lr: 1\n").lr == 1.0


def test_kd_and_teacher_sections(tmp_path):
    cfg = _cfg(C.DistillConfig, [], tmp_path, """
kd:
  alpha: 0.7
  alpha_constant: false
  confidence_gamma: 1.5
  label_smoothing: 0.05
  margin_weight_start: 0.1
  margin_weight_end: 0.0
  margin_weight_decay_end_epoch: 5
teacher:
  arch: mobilenet_v3_large
  checkpt: t.pt
  pretrained: true
  teacher_input_size: 224
  temperature: 3
""")
    assert (cfg.alpha, cfg.alpha_end, cfg.confidence_gamma, cfg.label_smoothing) == (0.7, 0.0, 1.5, 0.05)
    assert (cfg.margin_weight, cfg.margin_weight_end, cfg.margin_decay_end_epoch) == (0.1, 0.0, 5)
    assert (cfg.teacher, cfg.temperature) == ("t.pt", 3.0)
    with pytest.raises(UserError, match="kd.bogus"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  bogus: 1\n")


def test_bool_flags(tmp_path):
    assert _cfg(C.DistillConfig, ["--pretrained"]).pretrained is True
    assert _cfg(C.DistillConfig, ["--no-pretrained"], tmp_path, "pretrained: true\n").pretrained is False


def test_resolved_config_round_trips(tmp_path):
    cfg = C.resolve(C.DistillConfig, {"alpha": 0.3}, {"epochs": 2})
    C.save_yaml(cfg, tmp_path / "c.yaml")
    again = C.resolve(C.DistillConfig, C.load_yaml(tmp_path / "c.yaml"))
    assert again == cfg
