import json
import subprocess
import sys

import pytest

from conftest import write_jpeg
from vwwfast.cli import main


def test_missing_root_exits_2_with_one_line(tmp_path, capsys):
    assert main(["shard", "--coco-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "COCO root not found" in err[0]


def test_malformed_annotations(tmp_path, capsys):
    (tmp_path / "c" / "annotations").mkdir(parents=True)
    (tmp_path / "c" / "annotations" / "instances_train2014.json").write_text("{oops")
    assert main(["shard", "--coco-root", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    assert "malformed JSON" in capsys.readouterr().err
    (tmp_path / "c" / "annotations" / "instances_train2014.json").write_text("{}")
    assert main(["shard", "--coco-root", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    assert "not a COCO instances file" in capsys.readouterr().err


def test_missing_annotation_file(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    assert main(["shard", "--coco-root", str(tmp_path / "c")]) == 2
    assert "annotation file not found" in capsys.readouterr().err


def test_folder_without_classes(tmp_path, capsys):
    write_jpeg(tmp_path / "f" / "person" / "a.jpg", 20, 20)
    assert main(["shard", "--image-folder", str(tmp_path / "f"), "--out", str(tmp_path / "o")]) == 2
    assert "non_person" in capsys.readouterr().err


def test_shard_cli_and_overwrite(image_folder, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["shard", "--image-folder", str(image_folder), "--out", str(out), "--size", "32"]
    assert main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    for key in ("format_version", "source", "options", "label_rule", "splits", "skipped", "content_hash"):
        assert key in m
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


def test_unknown_flag_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["shard", "--bogus"])
    assert e.value.code == 2


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vwwfast", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("vwwfast ")
