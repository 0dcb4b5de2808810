import pytest
import yaml

from vwwfast import config as C
from vwwfast.config_compat import sectioned
from vwwfast.flags import from_args
from vwwfast.cli import build_parser
from vwwfast.errors import UserError


def _cfg(cls, argv, tmp_path=None, yaml_text=None, command="distill"):
    if yaml_text is not None:
        p = tmp_path / "c.yaml"
        p.write_text(yaml_text)
        argv = argv + ["--config", str(p)]
    ns = build_parser().parse_args([command, *argv])
    return from_args(cls, ns)


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
  alpha_end: 0.0
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
    assert (cfg.teacher, cfg.temperature) == (["t.pt"], 3.0)
    assert (cfg.teacher_arch, cfg.teacher_pretrained, cfg.teacher_input_size) == \
        ("mobilenet_v3_large", True, 224)
    with pytest.raises(UserError, match="kd.bogus"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  bogus: 1\n")


def test_bool_flags(tmp_path):
    assert _cfg(C.DistillConfig, ["--pretrained"]).pretrained is True
    assert _cfg(C.DistillConfig, ["--no-pretrained"], tmp_path, "pretrained: true\n").pretrained is False


def test_resolved_config_round_trips(tmp_path):
    """Both forms read back: the flat one a run saves, the sectioned one --print-config prints."""
    cfg = C.resolve(C.DistillConfig, {"alpha": 0.3}, {"epochs": 2})
    for text in (yaml.safe_dump(C.to_dict(cfg)), C.dump_yaml(cfg)):
        (tmp_path / "c.yaml").write_text(text)
        assert C.resolve(C.DistillConfig, C.load_yaml(tmp_path / "c.yaml")) == cfg


def test_alpha_constant_must_agree_with_alpha_end(tmp_path):
    with pytest.raises(UserError, match="alpha_constant: false needs kd.alpha_end"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  alpha: 0.5\n  alpha_constant: false\n")
    with pytest.raises(UserError, match="contradicts kd.alpha_end"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  alpha_constant: true\n  alpha_end: 0.1\n")
    cfg = _cfg(C.DistillConfig, [], tmp_path, "kd:\n  alpha_start: 0.6\n  alpha_end: 0.2\n")
    assert (cfg.alpha, cfg.alpha_end) == (0.6, 0.2)
    cfg = _cfg(C.DistillConfig, [], tmp_path, "kd:\n  alpha: 0.6\n  alpha_constant: true\n")
    assert (cfg.alpha, cfg.alpha_end) == (0.6, None)


def test_margin_weight_and_its_start_have_one_meaning(tmp_path):
    # The seed's run 16 wrote both: a different margin_weight beside the start is an error.
    with pytest.raises(UserError, match="both set the starting margin weight"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  margin_weight_start: 0.04\n  margin_weight: 0.0\n"
             "  margin_weight_end: 0.0\n  margin_weight_decay_end_epoch: 20\n")
    cfg = _cfg(C.DistillConfig, [], tmp_path, "kd:\n  margin_weight_start: 0.04\n  margin_weight: 0.04\n")
    assert cfg.margin_weight == 0.04


def test_null_confidence_gamma_means_off(tmp_path):
    assert _cfg(C.DistillConfig, [], tmp_path, "kd:\n  confidence_gamma: null\n").confidence_gamma == 0.0


def test_keys_in_the_wrong_section_say_where_they_belong(tmp_path):
    with pytest.raises(UserError, match="belongs in the teacher: section"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  temperature: 3\n")
    with pytest.raises(UserError, match="belongs in the kd: section"):
        _cfg(C.DistillConfig, [], tmp_path, "alpha_constant: true\n")
    with pytest.raises(UserError, match="did you mean 'confidence_gamma'"):
        _cfg(C.DistillConfig, [], tmp_path, "kd:\n  confidence_gama: 2\n")
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        _cfg(C.DistillConfig, [], tmp_path, "epoch: 3\n")


@pytest.mark.parametrize("yaml_text, match", [
    ("label_smoothing: 2\n", "--label-smoothing must be < 1"),
    ("margin_weight: -1\n", "--margin-weight must be >= 0"),
    ("patience: -1\n", "--patience must be >= 0"),
    ("confidence_gamma: -0.5\n", "--confidence-gamma must be >= 0"),
    ("bn_settle: -5\n", "--bn-settle must be >= 0"),
    ("margin_decay_end_epoch: -2\n", "--margin-decay-end-epoch must be >= 0"),
    ("alpha: 1.5\n", "--alpha must be <= 1"),
    ("temperature: 0\n", "--temperature must be > 0"),
    ("epochs: 0\n", "--epochs must be >= 1"),
    ("lr: .nan\n", "finite"),
    ("optimizer: adam\n", "--optimizer must be one of"),
    ("renderer: decode\n", "did you mean 'decoded'"),
])
def test_ranges_are_checked_before_any_work(tmp_path, yaml_text, match):
    with pytest.raises(UserError, match=match):
        _cfg(C.DistillConfig, [], tmp_path, yaml_text)


def test_windows_paths_resolve(tmp_path):
    cfg = _cfg(C.DistillConfig, [], tmp_path,
               "teacher:\n  checkpt: runs\\2025-10-26_17-53-08_teacher_mbv3l_vww96\\model.pt\n"
               "shards: D:\\vww\\shards\n")
    assert cfg.teacher == ["runs/2025-10-26_17-53-08_teacher_mbv3l_vww96/model.pt"]
    assert cfg.shards == "D:/vww/shards"


def test_yaml_number_without_a_dot(tmp_path):
    assert _cfg(C.DistillConfig, [], tmp_path, "lr: 1e-3\n").lr == 1e-3
    assert _cfg(C.DistillConfig, ["--lr", "2e-3"]).lr == 2e-3


def test_lists_make_a_sweep(tmp_path):
    sweep = _cfg(C.DistillConfig, ["--alpha", "0.5,0.55,0.6", "--confidence-gamma", "2,2.5"])
    assert isinstance(sweep, C.Sweep) and len(sweep.configs) == 6 and sweep.mode == "grid"
    assert {(c.alpha, c.confidence_gamma) for c in sweep.configs} == \
        {(a, g) for a in (0.5, 0.55, 0.6) for g in (2.0, 2.5)}
    zipped = _cfg(C.DistillConfig, ["--sweep-mode", "zip"], tmp_path,
                  "kd:\n  alpha: [0.5, 0.6]\n  margin_weight: [0.02, 0.03]\n")
    assert [(c.alpha, c.margin_weight) for c in zipped.configs] == [(0.5, 0.02), (0.6, 0.03)]
    with pytest.raises(UserError, match="lists of one length"):
        _cfg(C.DistillConfig, ["--sweep-mode", "zip", "--alpha", "0.5,0.6", "--lr", "1,2,3"])
    texts = _cfg(C.DistillConfig, ["--note", "batch 128, lr 3e-3", "--tag", "a,b"])
    assert texts.note == "batch 128, lr 3e-3" and texts.tag == "a,b"  # commas in text are text
    single = _cfg(C.DistillConfig, ["--alpha", "0.5"])
    assert isinstance(single, C.DistillConfig) and single.alpha == 0.5


@pytest.mark.parametrize("argv", [["--batch-size", "64,128"], ["--epochs", "3,4"],
                                  ["--input-size", "96,128"], ["--seed", "0,1"]])
def test_shared_settings_refuse_lists(argv):
    with pytest.raises(UserError, match="shared by every student"):
        _cfg(C.DistillConfig, argv)


def test_view_settings_from_flags_and_yaml(tmp_path):
    cfg = _cfg(C.DistillConfig, ["--view", "erase=0.25", "--view", "scale=0.08,1.0"])
    assert cfg.view == {"erase": 0.25, "scale": [0.08, 1.0]}
    cfg = _cfg(C.DistillConfig, [], tmp_path, "views:\n  erase: 0.25\n  hue: 0.0\n")
    assert cfg.view == {"erase": 0.25, "hue": 0.0}
    # cache-teacher: `views: 10` is the number of views, a mapping the view settings
    cfg = _cfg(C.CacheTeacherConfig, [], tmp_path, "views: 4\n", command="cache-teacher")
    assert cfg.views == 4 and cfg.view == {}
    with pytest.raises(UserError, match="KEY=VALUE"):
        _cfg(C.DistillConfig, ["--view", "erase"])


def test_sectioned_round_trips():
    cfg = C.resolve(C.DistillConfig, {"alpha": 0.3, "teacher": "t.pt", "view": {"erase": 0.25}})
    shaped = sectioned(C.to_dict(cfg))
    assert list(shaped)[:3] == ["kd", "teacher", "views"] and shaped["kd"]["alpha"] == 0.3
    assert C.resolve(C.DistillConfig, shaped) == cfg


def test_print_config(capsys):
    from vwwfast.cli import main
    assert main(["distill", "--shards", "s", "--alpha", "0.3", "--print-config"]) == 0
    import yaml
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["kd"]["alpha"] == 0.3 and printed["shards"] == "s"


# ---------------------------------------------------------------------------------------
# Byte budgets

@pytest.mark.parametrize("text,want", [("256KiB", 262_144), ("256KB", 256_000), ("0.25MB", 250_000),
                                       ("262144", 262_144), (262144, 262_144), ("1MiB", 1_048_576),
                                       ("256 kb", 256_000), ("1e3", 1000)])
def test_budget_sizes_parse(text, want):
    from vwwfast.fmt import parse_bytes
    assert parse_bytes(text) == want


@pytest.mark.parametrize("text", ["256QB", "KB", "-5KB", "0", "", "1,5MB", "big"])
def test_budget_sizes_refused(text):
    from vwwfast.fmt import parse_bytes
    with pytest.raises(ValueError):
        parse_bytes(text)


def test_budget_settings_of_distill_and_export():
    cfg = C.resolve(C.DistillConfig, {"max_flash": "256KiB"}, {"max_ram": 262144})
    assert (cfg.max_flash, cfg.max_ram) == ("256KiB", "262144")
    assert C.resolve(C.ExportConfig, {}, {"max_ram": "0.25MB"}).max_ram == "0.25MB"
    with pytest.raises(UserError, match="--max-flash '256QB' is not a size: write e.g. 256KB"):
        C.resolve(C.DistillConfig, {}, {"max_flash": "256QB"})
    with pytest.raises(UserError, match="unknown setting 'max_ram'"):
        C.resolve(C.TrainConfig, {}, {"max_ram": "1KB"})  # a teacher has no device budget


@pytest.mark.parametrize("argv,message", [
    (["export", "RUN", "--max-flash", "lots"], "--max-flash 'lots' is not a size"),
    (["distill", "--shards", "S", "--max-ram", "12 parsecs"], "--max-ram '12 parsecs' is not a size"),
])
def test_unparsable_budget_on_the_command_line(argv, message, capsys):
    from conftest import one_line_error
    assert message in one_line_error(capsys, *argv)


def test_width_is_a_sweepable_setting():
    sweep = C.resolve_sweep(C.DistillConfig, {}, {"width": "0.35,0.5,1.0"})
    assert [c.width for c in sweep.configs] == [0.35, 0.5, 1.0]
    assert C.short_name("width") == "w"
    cfg = C.resolve(C.DistillConfig, {"teacher": {"checkpt": "t.pt", "width": 0.5}})
    assert cfg.teacher_width == 0.5 and sectioned(C.to_dict(cfg))["teacher"]["width"] == 0.5
