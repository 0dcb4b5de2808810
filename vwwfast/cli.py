"""The command line: parse, resolve the config, call one stage function. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import os
import sys

from vwwfast import __version__, config as C
from vwwfast.errors import UserError


def _synth(cfg):
    from vwwfast.sources.synthetic import write_synthetic
    C.require(cfg, "out")
    write_synthetic(cfg.out, train=cfg.train, val=cfg.val, seed=cfg.seed, overwrite=cfg.overwrite)


def _shard(cfg):
    from vwwfast.sources import shard_command
    shard_command(cfg)


def _train_teacher(cfg):
    from vwwfast.train import train_teacher
    train_teacher(cfg)


def _distill(cfg):
    from vwwfast.train import distill
    distill(cfg)


def _eval(cfg):
    from vwwfast.evaluate import evaluate_command
    evaluate_command(cfg)


def _cache_teacher(cfg):
    from vwwfast.teacher_cache import cache_teacher
    cache_teacher(cfg)


def _runs(cfg):
    from vwwfast.runs import runs_command
    runs_command(cfg)


def _bench_loader(cfg):
    from vwwfast.bench import bench_loader
    bench_loader(cfg)


def _bench_kd(cfg):
    from vwwfast.bench_kd import bench_kd
    bench_kd(cfg)


COMMANDS = {
    "synth": (C.SynthConfig, _synth, "write the built-in synthetic set in the COCO 2014 layout"),
    "shard": (C.ShardConfig, _shard, "COCO 2014 or person/non_person folders -> WebDataset shards"),
    "train-teacher": (C.TrainConfig, _train_teacher, "train the teacher (MobileNetV3-Large)"),
    "cache-teacher": (C.CacheTeacherConfig, _cache_teacher,
                      "run the teacher once over E views of every sample into a Zarr store"),
    "distill": (C.DistillConfig, _distill,
                "train the student from cached (or online) teacher logits; --alpha 0 = supervised"),
    "eval": (C.EvalConfig, _eval, "evaluate a checkpoint: accuracy, recall, confusion matrix"),
    "runs": (C.RunsConfig, _runs, "list runs side by side, or --diff two of them"),
}
BENCH = {
    "loader": (C.BenchLoaderConfig, _bench_loader, "images/s of each renderer vs the student's step"),
    "kd": (C.BenchKDConfig, _bench_kd, "conventional vs online vs cached KD, in one run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vwwfast", description=(
        "Fast knowledge distillation for Visual Wake Words: "
        "synth -> shard -> train-teacher -> cache-teacher -> distill -> runs"))
    parser.add_argument("--version", action="version", version=f"vwwfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        C.add_flags(p, cls)
    bench = sub.add_parser("bench", help="measure speed (loader, kd)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for name, (cls, _, help_) in BENCH.items():
        p = bench_sub.add_parser(name, help=help_, description=help_)
        C.add_flags(p, cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    table = BENCH if ns.command == "bench" else COMMANDS
    cls, handler, _ = table[ns.bench_command if ns.command == "bench" else ns.command]
    try:
        cfg = C.from_args(cls, ns)
        launched = os.environ.get("WORLD_SIZE", "1") != "1"  # started by torchrun
        if launched:
            from vwwfast import distributed
            distributed.init()
        handler(cfg)
        if launched:
            distributed.shutdown()
    except UserError as e:
        print(f"vwwfast {ns.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vwwfast {ns.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
