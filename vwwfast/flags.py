"""Command-line flags of a command's config: one `--kebab-case` flag per setting, each
given at most once (argparse keeps the last silently), read into the config by
config.resolve / resolve_sweep with the YAML file under them."""

from __future__ import annotations

import argparse

from vwwfast import config as C
from vwwfast.errors import UserError


class _Once(argparse.Action):
    """A flag that takes one value: given twice, it is refused (argparse would keep the last
    one silently). Repeatable settings (--teacher, --view) append instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        _refuse_twice(self, namespace, values)
        setattr(namespace, self.dest, values)


class _OnceBool(argparse.BooleanOptionalAction):
    def __call__(self, parser, namespace, values, option_string=None):
        if hasattr(namespace, self.dest):
            raise argparse.ArgumentError(self, "given twice: give one of " + " / ".join(self.option_strings))
        super().__call__(parser, namespace, values, option_string)


def _refuse_twice(action, namespace, value) -> None:
    if hasattr(namespace, action.dest):  # every default is SUPPRESS: present = given before
        raise argparse.ArgumentError(action, f"given twice ({getattr(namespace, action.dest)}, then "
                                             f"{value}); it takes one value: give it once")


HEADINGS = {C.OptimSettings: "optimisation", C.RecipeSettings: "the KD recipe (the loss)",
            C.TeacherSettings: "the teacher", C.BudgetSettings: "microcontroller budgets",
            C.RenderSettings: "rendering"}


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field; every default is SUPPRESS so only what the user typed overrides.
    A flag given twice is refused, except the repeatable ones (action append)."""
    types_ = C.field_types(cls)
    defaults = cls()
    sweeps = cls is C.DistillConfig
    sections: dict = {}  # settings group -> its heading in --help
    for f in C.fields_in_order(cls):
        meta = f.metadata
        group = C.group_of(cls, f.name)
        if group is not None and group not in sections:
            sections[group] = parser.add_argument_group(HEADINGS[group])
        target = sections.get(group, parser)
        base = C.base_type(types_[f.name])
        default = getattr(defaults, f.name)
        help_ = meta.get("help", "").replace("%", "%%")  # argparse formats help with %
        if default not in (None, "", False) and base not in (list, dict):
            help_ += f" (default {default})"
        if sweeps and meta.get("sweep") and base is not bool:
            help_ += "; a comma-separated list makes a sweep"
        if meta.get("positional"):
            target.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=help_)
            continue
        flag = "--" + f.name.replace("_", "-")
        if base is bool:
            target.add_argument(flag, action=_OnceBool, default=argparse.SUPPRESS, help=help_)
        elif meta.get("action") == "append":
            target.add_argument(flag, action="append", metavar=meta.get("metavar"),
                                default=argparse.SUPPRESS, help=help_)
        elif base is list:
            target.add_argument(flag, nargs=meta.get("nargs", "+"), metavar=meta.get("metavar"),
                                action=_Once, default=argparse.SUPPRESS, help=help_)
        else:
            typ = str if sweeps else base  # resolve_sweep reads lists ("0.5,0.55") and numbers
            target.add_argument(flag, type=typ, action=_Once, default=argparse.SUPPRESS, help=help_,
                                metavar=f.name.upper())
    parser.add_argument("--config", dest="_config", default=None, metavar="FILE.yaml",
                        help="YAML file of settings; flags given here win")
    parser.add_argument("--print-config", dest="_print_config", action="store_true",
                        help="print the resolved settings as YAML (what --config accepts) and exit")


def from_args(cls, ns: argparse.Namespace):
    flags = {k: v for k, v in vars(ns).items() if not k.startswith("_") and k != "command"
             and k != "bench_command"}
    yaml_data = C.load_yaml(ns._config) if getattr(ns, "_config", None) else None
    where = str(getattr(ns, "_config", None) or "config")
    if flags.get("resume"):  # a resumed run keeps the settings it started with
        given = [f"--{k.replace('_', '-')}" for k in flags if k not in ("resume", "runs_dir")]
        if yaml_data:
            given.append("--config")
        if given:
            raise UserError(f"--resume continues a run with the settings it started with; drop "
                            f"{', '.join(given)} (a new run with other settings can start from "
                            f"its weights with --init RUN/last.pt)")
    if cls is C.DistillConfig:
        return C.resolve_sweep(cls, yaml_data, flags, where=where)
    return C.resolve(cls, yaml_data, flags, where=where)
