"""What a terminal shows, through the real console path: `vwwfast runs` in a subprocess, its
stdout a pipe, the width from COLUMNS as a shell exports it."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from rich.cells import cell_len

from conftest import T0, T1, finished_run, teacher_info, vwwfast_cmd, vwwfast_env
from vwwfast.config import DistillConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("quick_curves")


@pytest.fixture
def runs(tmp_path):
    """A teacher and six students that differ in four settings, with long tags and goals."""
    teacher = finished_run(tmp_path, TrainConfig(shards="shards/vww", tag="base",
                                                 note="the teacher every student learns from"),
                           T0, 0.94, kind="teacher")
    students = []
    for k, (alpha, temperature, gamma, lr) in enumerate([(0.3, 2.0, 0.0, 2e-3), (0.5, 4.0, 2.0, 1e-3),
                                                         (0.7, 2.0, 1.0, 3e-3), (0.9, 8.0, 2.0, 2e-3),
                                                         (0.55, 1.0, 0.5, 5e-4), (0.1, 4.0, 3.0, 4e-3)]):
        cfg = DistillConfig(shards="shards/vww", cache="shards/vww/teacher-mbv3l224.zarr", alpha=alpha,
                            temperature=temperature, confidence_gamma=gamma, lr=lr,
                            tag=f"long_tag_{k}_a{alpha:g}-T{temperature:g}-g{gamma:g}-lr{lr:g}",
                            note="which alpha, temperature, gamma and learning rate suit this teacher")
        students.append(finished_run(tmp_path, cfg, T1 + timedelta(minutes=k), 0.80 + 0.01 * k,
                                     teacher=teacher_info(teacher)))
    return tmp_path, [teacher, *students]


def _runs_table(root, **env) -> list[str]:
    r = subprocess.run(vwwfast_cmd("runs", "--runs-dir", root), capture_output=True, text=True,
                       env=vwwfast_env(**env), timeout=120, check=True)
    return r.stdout.splitlines()


def test_runs_table_fits_columns_100_through_the_cli(runs):
    root, made = runs
    env = vwwfast_env()
    env.pop("COLUMNS", None)
    unfitted = subprocess.run(vwwfast_cmd("runs", "--runs-dir", root), capture_output=True, text=True,
                              env=env, timeout=120, check=True).stdout.splitlines()
    assert max(map(cell_len, unfitted)) > 100  # piped into a file: its natural width
    lines = _runs_table(root, COLUMNS="100")
    assert max(map(cell_len, lines)) <= 100, "\n".join(lines)
    text = "\n".join(lines)
    for run in made:  # every run on its own row, named by its whole short id
        assert sum(line.startswith(run.short_id + " ") for line in lines) == 1, run.short_id
    assert "0.8500" in text and "0.9400" in text


def test_a_narrow_table_gives_up_the_cost_columns_before_a_run_id(tmp_path):
    """Long run ids and the model's cost columns: at 100 columns the goal and the cost columns
    go (named in the caption), a setting stays, every run id is whole."""
    made = [finished_run(tmp_path, DistillConfig(shards="shards/vww", alpha=alpha,
                                                 tag=f"a_rather_long_tag_for_alpha_{alpha:g}",
                                                 note="a goal"),
                         T1 + timedelta(minutes=k), 0.8 + 0.01 * k, params=1_517_618, macs=5_500_000)
            for k, alpha in enumerate((0.0, 0.55))]
    lines = _runs_table(tmp_path, COLUMNS="100")
    assert max(map(cell_len, lines)) <= 100, "\n".join(lines)
    for run in made:
        assert sum(line.startswith(run.short_id + " ") for line in lines) == 1, "\n".join(lines)
    header = next(line for line in lines if line.startswith("run "))
    assert "a" in header.split() and "params" not in header.split()
    assert "params, MACs, flash and RAM: --wide shows them" in " ".join(lines)
    wide = _runs_table(tmp_path, COLUMNS="200")
    assert "params" in next(line for line in wide if line.startswith("run ")).split()
