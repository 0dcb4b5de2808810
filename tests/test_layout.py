"""The package's shape: no import cycle (imports inside functions counted too), each stage
imports only the stages before it, and every import names a module that exists."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vwwfast"
# A stage may import the shared top-level modules and the stages before it, never after.
# records sits below train: a run folder is what training writes (as shards are what
# `shard` writes); its readers (card, table, plots) know no trainer.
STAGES = ["data", "teach", "records", "train", "tune", "deploy", "bench"]
TOP = {"cli", "__main__", "api", "losses", "__init__"}  # above every stage (api, losses: public names)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The vwwfast modules `path` imports, at module level or inside a function. `from
    vwwfast.x import y` names module vwwfast.x.y when that is a module, else vwwfast.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vwwfast")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vwwfast"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def top_name(mod: str) -> str:
    """A module's own name; the package itself (vwwfast/__init__.py) is '__init__'."""
    return "__init__" if mod == "vwwfast" else mod.split(".")[-1]


def stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_every_import_names_a_module():
    mods = modules()
    missing = sorted((m, i) for m, p in mods.items() for i in imports(p, set(mods)) if i not in mods)
    assert not missing


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_a_stage_imports_only_the_stages_before_it():
    wrong = []
    for mod, deps in graph().items():
        own = stage(mod)
        for dep in deps:
            theirs = stage(dep)
            if own in STAGES and theirs in STAGES and STAGES.index(theirs) > STAGES.index(own):
                wrong.append(f"{mod} -> {dep}")
            if theirs is None and dep.split(".")[-1] in TOP and top_name(mod) not in TOP:
                wrong.append(f"{mod} -> {dep}")
    assert wrong == []


def test_a_base_module_imports_no_stage():
    """config, models, viewspec, distributed, ... lie below every stage: data/ may use them."""
    wrong = [f"{mod} -> {dep}" for mod, deps in graph().items() for dep in deps
             if stage(mod) is None and top_name(mod) not in TOP and stage(dep) is not None]
    assert wrong == []


MAX_FUNCTION_LINES = 80  # a function does one named step: longer ones are several


def test_no_function_runs_a_whole_command():
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PKG)}:{node.name} ({lines} lines)")
    assert long == []


def test_no_setting_is_read_by_name_with_a_default():
    """getattr(cfg, "setting", default) hides a renamed or mistyped setting behind a default
    that restates config.py's: a stage takes its typed settings group instead."""
    pattern = re.compile(r"getattr\((cfg|self\.cfg|base|s\.cfg|c)\s*,\s*['\"](\w+)['\"]\s*,")
    hits = [f"{p.relative_to(PKG)}: {m.group(0)}" for p in sorted(PKG.rglob("*.py"))
            for m in pattern.finditer(p.read_text())]
    assert hits == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_training_loads_no_export_toolchain():
    code = ("import sys, vwwfast.train.loop, vwwfast.train.commands; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'litert_torch', 'ai_edge_litert', "
            "'ai_edge_quantizer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", STAGES)
def test_a_package_init_defines_nothing(package):
    """A package's __init__ hands names on; its modules never import from it."""
    tree = ast.parse((PKG / package / "__init__.py").read_text())
    assert all(isinstance(n, (ast.Expr, ast.ImportFrom, ast.Import)) for n in tree.body)
