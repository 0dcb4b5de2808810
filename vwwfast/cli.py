"""The command line: parse, resolve the config, call one stage function. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import os
import sys

from vwwfast import config as C
from vwwfast import flags
from vwwfast.checks import did_you_mean
from vwwfast.errors import UserError
from vwwfast.provenance import __version__


def _synth(cfg):
    from vwwfast.data.sources.synthetic import write_synthetic
    C.require(cfg, "out")
    write_synthetic(cfg.out, train=cfg.train, val=cfg.val, seed=cfg.seed, overwrite=cfg.overwrite,
                    workers=cfg.workers)


def _shard(cfg):
    from vwwfast.data.sources.command import shard_command
    shard_command(cfg)


def _train_teacher(cfg):
    from vwwfast.train.commands import train_teacher
    train_teacher(cfg)


def _distill(cfg):
    from vwwfast.train.commands import distill
    distill(cfg)


def _tune(cfg):
    from vwwfast.tune.command import tune
    tune(cfg)


def _eval(cfg):
    from vwwfast.deploy.evaluate import evaluate_command
    evaluate_command(cfg)


def _cache_teacher(cfg):
    from vwwfast.teach.build import cache_teacher
    cache_teacher(cfg)


def _export(cfg):
    from vwwfast.deploy.export import export_command
    export_command(cfg)


def _views(cfg):
    from vwwfast.records.sheets import views_command
    views_command(cfg)


def _runs(cfg):
    from vwwfast.records.table import runs_command
    runs_command(cfg)


def _bench_loader(cfg):
    from vwwfast.bench.loader import bench_loader
    bench_loader(cfg)


def _bench_kd(cfg):
    from vwwfast.bench.kd import bench_kd
    bench_kd(cfg)


COMMANDS = {
    "synth": (C.SynthConfig, _synth, "write the built-in synthetic set in the COCO 2014 layout"),
    "shard": (C.ShardConfig, _shard,
              "COCO 2014, person/non_person folders or Wake Vision -> WebDataset shards"),
    "train-teacher": (C.TrainConfig, _train_teacher,
                      "train the teacher (any torchvision classifier; default MobileNetV3-Large at 224)"),
    "cache-teacher": (C.CacheTeacherConfig, _cache_teacher,
                      "run the teacher once over E views of every sample into a Zarr store"),
    "distill": (C.DistillConfig, _distill,
                "train the student from cached (or online) teacher logits; --alpha 0 = supervised"),
    "tune": (C.TuneConfig, _tune,
             "race KD settings on a --holdout split: cut the clearly worse, say what cannot be told apart"),
    "eval": (C.EvalConfig, _eval,
             "evaluate a run, a checkpoint, an .onnx or a .tflite file: accuracy, recall, confusion matrix"),
    "export": (C.ExportConfig, _export,
               "a run's student as ONNX / int8 ONNX / int8 TFLite, with each file's val accuracy"),
    "views": (C.ViewsConfig, _views, "a contact sheet of training views under a view spec"),
    "runs": (C.RunsConfig, _runs, "list runs side by side, --diff two of them, --plot several"),
}
BENCH = {
    "loader": (C.BenchLoaderConfig, _bench_loader, "images/s of each renderer vs the student's step"),
    "kd": (C.BenchKDConfig, _bench_kd, "conventional vs online vs cached KD, in one run"),
}


class _Parser(argparse.ArgumentParser):
    """Errors in one line (what is wrong, where to look), not the whole usage text."""
    commands: dict[str, argparse.ArgumentParser]  # the top parser's: name -> its parser

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unknown_flags(parser: argparse.ArgumentParser, extras: list[str]) -> None:
    """argparse's error for unknown arguments, with a "did you mean" for a mistyped flag."""
    message = "unrecognized arguments: " + " ".join(extras)
    names = [o for a in parser._actions for o in a.option_strings]
    hints = [did_you_mean(w.split("=")[0], names) for w in extras if w.startswith("--")]
    parser.error(message + next((h for h in hints if h), ""))


def build_parser() -> _Parser:
    parser = _Parser(prog="vwwfast", description=(
        "Fast knowledge distillation for Visual Wake Words: "
        "synth -> shard -> train-teacher -> cache-teacher -> distill -> runs"))
    parser.add_argument("--version", action="version", version=f"vwwfast {__version__}")
    parser.commands = {}  # command name -> its parser, for error messages
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for name, (cls, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        flags.add_flags(p, cls)
        parser.commands[name] = p
    bench = sub.add_parser("bench", help="measure speed (loader, kd)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True,
                                     parser_class=_Parser)
    for name, (cls, _, help_) in BENCH.items():
        p = bench_sub.add_parser(name, help=help_, description=help_)
        flags.add_flags(p, cls)
        parser.commands[f"bench {name}"] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, extras = parser.parse_known_args(argv)
    if extras:
        name = f"bench {ns.bench_command}" if ns.command == "bench" else ns.command
        _unknown_flags(parser.commands[name], extras)
    table = BENCH if ns.command == "bench" else COMMANDS
    cls, handler, _ = table[ns.bench_command if ns.command == "bench" else ns.command]
    try:
        cfg = flags.from_args(cls, ns)
        if ns._print_config:
            print(C.dump_yaml(cfg), end="")
            return 0
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
    except BrokenPipeError:  # `vwwfast runs --csv | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
