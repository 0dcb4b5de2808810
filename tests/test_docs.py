"""The docs are tested, so they cannot go stale: README.md, docs/*.md and examples/.

- Every fenced ```python block runs, in a folder holding `shards/vww` (the small shard set)
  and every `shards/vww/*.zarr` the block names (the small teacher cache; such a block is
  `slow`), its `for epoch in range(1, N)` loop cut to one epoch. A block marked
  `<!-- docs-test: compile REASON -->` on the line before it (a GPU, workers, several
  machines) is compiled and its imports run. Either way every name a block reads is imported
  or defined in it.
- Every ```yaml block resolves as `vwwfast distill --config` reads it
  (`<!-- docs-test: config CacheTeacherConfig -->` names another command's settings).
- Every `vwwfast ...` line of a fenced block (`python -m vwwfast`, `torchrun ... -m vwwfast`
  too) is parsed by the real command line and its settings resolved, never run: flags exist,
  values parse and are in range. A line in usage syntax (`[--flag X]`, `a|b`, `...`) and every
  inline `vwwfast ...` span get their flags and choices checked. A `--cache` store is one the
  block makes (`--out`), a placeholder (STORE), one a script makes (`<!-- docs-test: stores
  PATH made by tools/demo.sh -->`), or has the name `cache-teacher` gives a store by default.
- Every `vwwfast.x` named in the docs, the examples and the package's docstrings and
  comments exists; so do relative names of a stage's modules (`train.student.Student`),
  every relative link (and its heading) and every `NAME.md` named.
- What the README and docs/ARCHITECTURE.md state about the code holds: the stage order of
  tests/test_layout.py, the module map, the default store name, the help texts, the
  sweepable flags, the demo's sizes, the measured CPU figures SCALE.md uses.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import dataclasses
import functools
import re
import shlex
import tokenize
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from conftest import REPO

PKG = REPO / "vwwfast"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
MARKER = re.compile(r"<!--\s*docs-test:\s*(\w[\w-]*)\s*(.*?)\s*-->", re.S)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ---------------------------------------------------------------------------------------
# Reading the Markdown

@dataclasses.dataclass
class Block:
    path: Path
    line: int        # 1-based, the fence's line
    lang: str
    text: str
    marker: tuple[str, str] | None  # (kind, rest) of a `<!-- docs-test: ... -->` before it

    @property
    def id(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def _tokens(path: Path):
    return MarkdownIt("commonmark").enable("table").parse(path.read_text())


def blocks(path: Path) -> list[Block]:
    out, marker = [], None
    for tok in _tokens(path):
        if tok.type == "html_block":
            m = MARKER.search(tok.content)
            marker = (m.group(1), m.group(2)) if m else None
            continue
        if tok.type == "fence":
            out.append(Block(path, tok.map[0] + 1, (tok.info.split() or [""])[0], tok.content, marker))
        marker = None
    return out


def inline_code(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every inline code span."""
    out = []
    for tok in _tokens(path):
        if tok.type == "inline":
            out += [(tok.map[0] + 1, c.content) for c in tok.children or [] if c.type == "code_inline"]
    return out


ALL_BLOCKS = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
YAML = [b for b in ALL_BLOCKS if b.lang in ("yaml", "yml")]
SHELL = [b for b in ALL_BLOCKS if b.lang in ("", "bash", "sh", "shell", "console", "text")]


def test_the_docs_have_what_these_tests_read():
    assert len(DOCS) > 5 and len(PYTHON) >= 2 and len(YAML) >= 2 and len(SHELL) >= 10
    assert EXAMPLES


# ---------------------------------------------------------------------------------------
# Python blocks

def _bound_and_read(tree: ast.AST) -> tuple[set[str], set[str]]:
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, read


def _given(marker) -> set[str]:
    m = re.search(r"given=([\w,]+)", marker[1]) if marker else None
    return set(m.group(1).split(",")) if m else set()


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_block_reads_only_what_it_defines(block):
    """Every name a block reads is imported or assigned in it (or a builtin): a snippet
    copied into a file runs without a NameError."""
    tree = ast.parse(block.text, filename=block.id)
    bound, read = _bound_and_read(tree)
    missing = read - bound - set(dir(builtins)) - _given(block.marker)
    assert not missing, f"{block.id} reads {sorted(missing)} without importing or defining them"


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory, synth_shards):
    """A folder with shards/vww: the small shard set (its files linked, so what a block
    writes beside them stays here)."""
    root = tmp_path_factory.mktemp("docs")
    shards = root / "shards" / "vww"
    shards.mkdir(parents=True)
    for f in Path(synth_shards).iterdir():
        (shards / f.name).symlink_to(f)
    return root


STORE_LITERAL = re.compile(r"""["'](shards/vww/[\w.-]+\.zarr)["']""")


def _python_param(block: Block):
    """A block that reads a store needs the small teacher and its cache (a minute to make
    alone, shared with the rest of the suite): slow."""
    runs = not (block.marker and block.marker[0] == "compile")
    slow = runs and STORE_LITERAL.search(block.text)
    return pytest.param(block, id=block.id, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("block", [_python_param(b) for b in PYTHON])
@pytest.mark.filterwarnings("ignore:batch size .* is larger than")  # 96 samples, batch 128
def test_python_block(block, docs_dir, monkeypatch, request):
    """A block runs as written, in docs_dir, with one change: a `for epoch in range(1, N)`
    loop runs its first epoch only (one epoch shows the calls work; thirty take minutes)."""
    compile(block.text, block.id, "exec")  # a syntax error, marked or not, fails here
    if block.marker and block.marker[0] == "compile":
        # not run here (the marker says why); its imports must still work
        imports = [n for n in ast.parse(block.text).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), block.id, "exec"), {})
        return
    assert block.marker is None, f"{block.id}: unknown marker {block.marker}"
    for name in set(STORE_LITERAL.findall(block.text)):
        if not (docs_dir / name).exists():
            (docs_dir / name).symlink_to(request.getfixturevalue("small_store"))
    text = re.sub(r"(for epoch in range\(1), \d+\)", r"\1, 2)", block.text)
    monkeypatch.chdir(docs_dir)
    exec(compile(text, block.id, "exec"), {"__name__": "__docs__"})


# ---------------------------------------------------------------------------------------
# YAML blocks

@pytest.mark.parametrize("block", YAML, ids=lambda b: b.id)
def test_yaml_block_resolves(block):
    from vwwfast import config as C
    cls = C.DistillConfig
    if block.marker and block.marker[0] == "config":
        cls = getattr(C, block.marker[1].split()[0])
    data = yaml.safe_load(block.text)
    C.resolve_sweep(cls, data, where=block.id) if cls is C.DistillConfig else C.resolve(cls, data, where=block.id)


# ---------------------------------------------------------------------------------------
# Command lines

PLACEHOLDER = re.compile(r"^\$?\{?[A-Z][A-Z0-9_]*\}?$")  # DIR, N, $STORE


def _logical_lines(text: str) -> list[str]:
    """Lines with their `\\` continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    return out + ([cur] if cur else [])


def _vwwfast_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after `vwwfast` (or `python -m vwwfast`, `torchrun ... -m vwwfast`,
    `.venv/bin/vwwfast`), or None when the line runs something else."""
    i = 0
    while i < len(tokens) and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[i]):
        i += 1  # VAR=value before the command
    if i >= len(tokens):
        return None
    if tokens[i] == "vwwfast" or tokens[i].endswith("/vwwfast"):
        return tokens[i + 1:]
    for j in range(i, len(tokens) - 1):
        if tokens[j] == "-m" and tokens[j + 1] == "vwwfast" and \
                Path(tokens[i]).name.startswith(("python", "torchrun")):
            return tokens[j + 2:]
    return None


def _is_usage(argv: list[str]) -> bool:
    return any(("[" in t or "]" in t or "..." in t or ("|" in t and t != "|")) for t in argv)


def _cut_shell(argv: list[str]) -> list[str]:
    for k, t in enumerate(argv):
        if t in ("|", "&&", "||", ";", ">", "2>", ">>", "&") or t.startswith(("2>", ">")):
            return argv[:k]
    return argv


@functools.lru_cache(maxsize=1)
def _parser():
    from vwwfast import cli
    return cli.build_parser()


def _command(argv: list[str]):
    """(name, parser, config class, rest of argv) of a vwwfast command line."""
    from vwwfast import cli
    parser = _parser()
    if not argv or argv[0].startswith("-") or argv == ["bench"]:
        return None, parser, None, argv
    name = " ".join(argv[:2]) if argv[0] == "bench" else argv[0]
    assert name in parser.commands, f"no command 'vwwfast {name}'"
    table = cli.BENCH if argv[0] == "bench" else cli.COMMANDS
    cls = table[argv[1] if argv[0] == "bench" else argv[0]][0]
    return name, parser.commands[name], cls, argv[2 if argv[0] == "bench" else 1:]


def check_usage(argv: list[str]) -> None:
    """Flags of a usage line or a fragment: each exists, and a value it is shown with (each
    of a|b|c; not a placeholder such as DIR) resolves as that setting."""
    from vwwfast import config as C
    name, parser, cls, rest = _command(argv)
    if cls is None:
        return
    actions = {o: a for a in parser._actions for o in a.option_strings}
    tokens = [t.strip("[]") for t in rest]
    for k, token in enumerate(tokens):
        for word in token.split("|"):  # [--val-fraction F | --val-folder DIR]
            if not word.startswith("--"):
                continue
            flag, _, value = word.partition("=")
            assert flag in actions, f"`vwwfast {name}` has no flag {flag}"
            action = actions[flag]
            if action.dest.startswith("_") or action.nargs not in (None,) or \
                    action.option_strings[0] != flag or action.const is not None:
                continue  # --config, --diff A B, --no-x, yes/no flags: nothing to resolve
            values = [value] if value else tokens[k + 1].split("|") if k + 1 < len(tokens) else []
            for v in values:
                if not v or PLACEHOLDER.match(v) or re.fullmatch(r"[A-Z_]+=[A-Z_]+", v) or \
                        v.startswith("-") or v == "...":
                    continue
                try:
                    typed = action.type(v) if action.type else v  # as argparse hands it on
                    given = {action.dest: [typed] if isinstance(action, argparse._AppendAction) else typed}
                    (C.resolve_sweep if cls is C.DistillConfig else C.resolve)(cls, given)
                except Exception as e:
                    raise AssertionError(f"`vwwfast {name} {flag} {v}`: {e}") from None


def check_command(argv: list[str]) -> None:
    """A concrete command line: parsed and its settings resolved, as `vwwfast` would before
    any work (a --config file is not read)."""
    from vwwfast.flags import from_args
    parser = _parser()
    try:
        ns, extras = parser.parse_known_args(argv)
    except SystemExit as e:
        assert e.code == 0, f"`vwwfast {' '.join(argv)}` does not parse"
        return
    assert not extras, f"`vwwfast {' '.join(argv)}`: unknown arguments {extras}"
    name, _, cls, _ = _command(argv)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in list(vars(ns).items()):
        # a placeholder stands for a number or a size: its type is not checked
        if key in fields and isinstance(value, str) and PLACEHOLDER.match(value) and \
                fields[key].type not in ("str", "Optional[str]"):
            delattr(ns, key)
    ns._config = None
    from_args(cls, ns)


def _shell_commands(block: Block):
    """(line, argv, usage) of every vwwfast line of a shell block, $VARS of the block expanded."""
    env: dict[str, str] = {}
    for k, line in enumerate(_logical_lines(block.text)):
        stripped = line.strip()
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(\S.*)$", stripped)
        if m and " vwwfast" not in stripped:
            env[m.group(1)] = " ".join(shlex.split(m.group(2)))
            continue
        for var, value in env.items():
            stripped = re.sub(rf"\${{?{var}}}?(?!\w)", value, stripped)
        try:
            tokens = shlex.split(stripped, comments=True)
        except ValueError:
            continue
        argv = _vwwfast_argv(tokens)
        if argv is not None:
            usage = _is_usage(argv)
            yield block.line + 1 + k, (argv if usage else _cut_shell(argv)), usage


COMMANDS = [(f"{rel(b.path)}:{line}", argv, usage, b) for b in SHELL
            for line, argv, usage in _shell_commands(b)]
INLINE = [(f"{rel(p)}:{line}", shlex.split(text.replace("'", "")))
          for p in DOCS for line, text in inline_code(p) if re.match(r"^vwwfast \w", text)]


def test_there_are_commands_to_check():
    assert len(COMMANDS) > 30 and len(INLINE) > 30


@pytest.mark.parametrize("where,argv,usage,block", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_line(where, argv, usage, block):
    (check_usage if usage else check_command)(argv)


@pytest.mark.parametrize("where,argv", INLINE, ids=[c[0] for c in INLINE])
def test_inline_command(where, argv):
    check_usage(argv[1:])


def default_store_pattern() -> re.Pattern:
    """The default store name as cache-teacher's --out help states it, as a regex."""
    from vwwfast import config as C
    help_ = {f.name: f for f in dataclasses.fields(C.CacheTeacherConfig)}["out"].metadata["help"]
    m = re.search(r"<shards>/(teacher-\S+?\.zarr)", help_)
    assert m, f"cache-teacher --out help names no default store: {help_}"
    return re.compile("^" + re.sub(r"<\w+>", "[^/]+", re.escape(m.group(1)).replace(r"\<", "<")
                                   .replace(r"\>", ">")) + "$")


@pytest.mark.parametrize("block", [b for b in SHELL if " --cache " in b.text], ids=lambda b: b.id)
def test_a_store_a_command_reads_exists(block):
    """`--cache X` names a store the block makes (`cache-teacher --out X`), a placeholder
    (STORE) or a store under the name `cache-teacher` gives it by default: never a name that
    no command made (the next command would stop with "teacher cache not found")."""
    pattern = default_store_pattern()
    made: set[str] = set()
    if block.marker and block.marker[0] == "stores":  # made by a script the text names
        words = block.marker[1].split()
        made = {w for w in words if w.endswith(".zarr")}
        for script in (w for w in words if w.startswith("tools/")):
            text = (REPO / script).read_text()
            assert all("/".join(Path(m).parts[-2:]) in text for m in made), f"{script} makes no {made}"
    for line, argv, usage in _shell_commands(block):
        if usage:
            continue
        if argv[:1] == ["cache-teacher"] and "--out" in argv:
            made.add(argv[argv.index("--out") + 1])
        if "--cache" in argv:
            store = argv[argv.index("--cache") + 1]
            assert store in made or PLACEHOLDER.match(store) or pattern.match(Path(store).name), \
                f"{rel(block.path)}:{line}: --cache {store} is made by no command of the block " \
                f"and is not a default store name"


# ---------------------------------------------------------------------------------------
# Names of modules, files and links

def _module_file(name: str) -> Path | None:
    p = PKG.parent.joinpath(*name.split("."))
    for f in (p.with_suffix(".py"), p / "__init__.py"):
        if f.is_file():
            return f
    return None


@functools.lru_cache(maxsize=None)
def _defined(path: Path) -> dict[str, ast.AST]:
    tree = ast.parse(path.read_text())
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
    if path == PKG / "__init__.py":  # names handed out on first use (__getattr__)
        out.update({n: tree for n in ("KDData", "wds_dataset", "render_view", "losses")})
    return out


def resolves(name: str) -> bool:
    """vwwfast.a.b.c names a module, or a name defined in one (a class's own names too)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        f = _module_file(".".join(parts[:k]))
        if f is None:
            continue
        rest = parts[k:]
        if not rest:
            return True
        node = _defined(f).get(rest[0])
        if node is None:
            return False
        if len(rest) > 1 and isinstance(node, ast.ClassDef):
            names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            names |= {t.id for n in node.body if isinstance(n, ast.Assign) for t in n.targets
                      if isinstance(t, ast.Name)}
            names |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)
                      and isinstance(n.target, ast.Name)}
            return rest[1] in names
        return True
    return False


FULL = re.compile(r"(?<![\w/.])vwwfast(?:\.[A-Za-z_]\w*)+")
STAGE_ROOTS = ("data", "teach", "records", "train", "deploy", "bench", "render", "sources")
RELATIVE = re.compile(rf"(?<![\w/.])(?:{'|'.join(STAGE_ROOTS)})(?:\.[A-Za-z_]\w*)+")
FILE_EXT = {"py", "md", "json", "jsonl", "yaml", "yml", "png", "zarr", "npy", "csv", "tar", "onnx",
            "tflite", "pt", "idx", "sh", "txt", "gz"}


def resolves_relative(name: str) -> bool:
    return resolves("vwwfast." + name) or resolves("vwwfast.data." + name)


@functools.lru_cache(maxsize=None)
def _prose_of_python(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the docstrings and comments of a Python file."""
    out = []
    with open(path, "rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.COMMENT:
                out.append((tok.start[0], tok.string))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((node.body[0].lineno, doc))
    return out


def _texts():
    for p in DOCS:
        yield p, [(1, p.read_text())]
    for p in [*sorted(PKG.rglob("*.py")), *EXAMPLES]:
        yield p, _prose_of_python(p)


def stale_names() -> list[str]:
    wrong = []
    for path, texts in _texts():
        for line0, text in texts:
            def where(m, within=text, offset=0):
                return f"{rel(path)}:{line0 + within.count(chr(10), 0, m.start()) + offset}"
            for m in FULL.finditer(text):
                name = m.group(0)
                if name.split(".")[-1] in FILE_EXT:
                    name = name.rsplit(".", 1)[0]
                if not resolves(name):
                    wrong.append(f"{where(m)}: {m.group(0)}")
            if path.suffix == ".md":  # code blocks run or are parsed; `data` there is a variable
                text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text,
                              flags=re.M | re.S)
            for m in RELATIVE.finditer(text):  # a.b.c, or a.b in backticks
                parts = m.group(0).split(".")
                ticked = text[:m.start()].count("`") % 2 == 1
                if parts[-1] in FILE_EXT or len(parts) < (2 if ticked else 3):
                    continue
                if not resolves_relative(m.group(0)):
                    wrong.append(f"{where(m)}: {m.group(0)}")
    return sorted(set(wrong))


def test_every_module_named_exists():
    assert stale_names() == []


def test_the_name_check_sees_a_stale_name():
    assert not resolves("vwwfast.mixing") and not resolves("vwwfast.student")
    assert not resolves("vwwfast.data.render.prefetch.input_buffers")
    assert not resolves_relative("train.sweep.SweepInfo") and not resolves_relative("render.iterate")
    assert resolves("vwwfast.data.mixing.MixingRenderer.render") and resolves("vwwfast.KDData")
    assert resolves_relative("render.prefetch.iterate") and resolves("vwwfast.errors.UserError")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def links(path: Path) -> list[str]:
    """The targets of the links of a Markdown file (code blocks and spans left out)."""
    out = []
    for tok in _tokens(path):
        if tok.type == "inline":
            for c in tok.children or []:
                if c.type in ("link_open", "image"):
                    out.append(c.attrs.get("href") or c.attrs.get("src"))
    return [str(h) for h in out if h]


def test_every_link_and_doc_named_exists():
    wrong = []
    for path in DOCS:
        for target in links(path):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file) if file else path
            if not dest.exists():
                wrong.append(f"{rel(path)}: link {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                wrong.append(f"{rel(path)}: link {target} (no such heading)")
    for path, texts in _texts():
        for line, text in texts:
            for m in re.finditer(r"(?<![\w/])((?:docs/)?[A-Z][A-Z_]+\.md)\b", text):
                name = m.group(1)
                if not ((REPO / name).exists() or (REPO / "docs" / name).exists()):
                    wrong.append(f"{rel(path)}:{line}: {name}")
    assert wrong == []


# ---------------------------------------------------------------------------------------
# What the docs state about the code

README = (REPO / "README.md").read_text()
ARCH = (REPO / "docs" / "ARCHITECTURE.md").read_text() if (REPO / "docs" / "ARCHITECTURE.md").exists() else ""


def _stages():
    import importlib.util
    spec = importlib.util.spec_from_file_location("_layout", REPO / "tests" / "test_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.STAGES


def test_the_stage_order_is_the_one_test_layout_enforces():
    """Every `a -> b -> ...` chain of stage names in the README, docs/ARCHITECTURE.md and the
    package docstring follows tests/test_layout.py's order, and so does the module map."""
    import vwwfast
    stages = _stages()
    names = "|".join(stages)
    chains = 0
    for where, text in (("README.md", README), ("docs/ARCHITECTURE.md", ARCH),
                        ("vwwfast/__init__.py", vwwfast.__doc__)):
        flat = re.sub(r"\([^()]*\)", "", text.replace("\n", " "))  # without (what each holds)
        for m in re.finditer(rf"\b(?:{names})\b(?:\s*(?:->|/)\s*\b(?:{names})\b)+", flat):
            if "->" not in m.group(0):
                continue
            named = re.findall(rf"\b({names})\b", m.group(0))
            assert named == sorted(named, key=stages.index), f"{where}: {m.group(0)}"
            chains += 1
    assert chains >= 2
    table = [re.match(r"^\| `vwwfast/(\w+)/", line) for line in ARCH.splitlines()]
    order = [m.group(1) for m in table if m and m.group(1) in stages]
    order = [s for k, s in enumerate(order) if k == 0 or order[k - 1] != s]  # data/, data/render/
    assert order == stages, "docs/ARCHITECTURE.md's module map lists the stages in another order"


def test_the_module_map_names_every_module():
    """docs/ARCHITECTURE.md's table has a row per package (`vwwfast/data/render/`, the top
    level as `vwwfast/`) naming each of its modules."""
    rows = {}
    for line in ARCH.splitlines():
        m = re.match(r"^\| `vwwfast/([\w/]*)` \|(.*)$", line)
        if m:
            rows[m.group(1).rstrip("/")] = m.group(2)
    missing = []
    for f in sorted(PKG.rglob("*.py")):
        if f.name in ("__init__.py", "__main__.py"):
            continue
        pkg = str(f.parent.relative_to(PKG)).replace(".", "")
        if f"`{f.name}`" not in rows.get(pkg, ""):
            missing.append(str(f.relative_to(PKG)))
    assert missing == []


def test_where_a_change_lands_names_real_files():
    from vwwfast import config as C
    for path in ("train/losses.py", "config.py", "data/render/factory.py", "teach/teacher.py",
                 "deploy/export.py", "deploy/predictors.py"):
        assert f"`{path}`" in ARCH and (PKG / path).is_file()
    assert "RENDERER_CHOICES" in ARCH and C.RENDERER_CHOICES


def test_the_default_store_name_is_stated_and_true():
    """cache-teacher's --out help states the default store name; the README states the same;
    the code makes names of that form."""
    from vwwfast.teach.cache import default_out
    pattern = default_store_pattern()
    member = {"arch": "mobilenet_v3_large", "input_size": 224, "sha256": "1a2b3c4d" + "0" * 56}
    assert pattern.match(default_out(Path("shards/vww"), [member], "default").name)
    assert re.search(r"teacher-<arch>-<size>-<spec>-<sha8>\.zarr", README)
    assert default_out(Path("s"), [member], "default").name == "teacher-mbv3l-224-default-1a2b3c4d.zarr"


def test_help_texts_say_what_the_commands_do():
    from vwwfast import cli
    from vwwfast import config as C
    helps = {name: h for name, (_, _, h) in cli.COMMANDS.items()}
    assert "Wake Vision" in helps["shard"]
    assert "any torchvision classifier" in helps["train-teacher"]
    out = {f.name: f for f in dataclasses.fields(C.ShardConfig)}["out"].metadata["help"]
    assert "wake-vision-" in out


def test_sweepable_flags_are_the_ones_the_docs_list():
    """docs/TRAINING.md's list of sweepable settings is every flag that takes a list, and
    names the yes/no ones as YAML-only (a boolean flag takes no list)."""
    from vwwfast import config as C
    m = re.search(r"Sweepable:(.*?)\.\s", (REPO / "docs" / "TRAINING.md").read_text(), re.S)
    assert m
    listed = set(re.findall(r"`--([\w-]+)`", m.group(1)))
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(C.DistillConfig)}
    sweep = {n for n, f in fields.items() if f.metadata.get("sweep")}
    bools = {n for n in sweep if fields[n].type in ("bool", bool)}
    assert listed == sweep - bools
    for name in bools:
        assert f"`{name.replace('-', '_')}: [" in m.group(1), f"{name}: say it sweeps in YAML only"


def test_install_is_said():
    """The README says how to install, and how to reach the `vwwfast` the Makefile installs."""
    assert re.search(r"^## Install", README, re.M)
    assert "source .venv/bin/activate" in README and "pip install -e" in README
    for path in DOCS:  # `pip install 'vwwfast[...]'` needs vwwfast on a package index
        assert not re.search(r"pip install ['\"]?vwwfast\[", path.read_text()), rel(path)


def test_the_readme_stays_a_way_in():
    assert len(README.splitlines()) < 300


def test_the_demo_figures_are_the_demo_of_today():
    """The README's demo sizes are tools/demo.sh's defaults; docs that quote an earlier demo
    say so."""
    demo = (REPO / "tools" / "demo.sh").read_text()
    default = dict(re.findall(r"^(\w+)=\$\{DEMO_\w+:-(\d+)\}", demo, re.M))
    assert f"{int(default['TRAIN']):,} train" in README and f"{int(default['VAL']):,} val" in README
    for path in DOCS:
        for para in path.read_text().split("\n\n"):
            if re.search(r"\bdemo\b", para) and re.search(r"3,000 (synthetic )?(train|training)", para):
                assert "earlier" in para, f"{rel(path)}: an old demo described as current: {para[:120]}"


STALE = [  # (pattern, why it is wrong)
    (r"only the stages above it", "each stage imports only the stages before it (test_layout.py)"),
    (r"one file per module", "tests/ is not one file per module"),
    (r"config\.yaml`[^.]*?`views: \{", "config.yaml is flat: `view: {region: center}`"),
    (r"~190 / ~28", "no source; docs/BENCHMARKS.md measured the 2-core CPU"),
    (r"input_buffers|static buffers?\b(?![^\n]*removed)", "the static-buffer path was removed"),
]


@pytest.mark.parametrize("pattern,why", STALE, ids=[s[0][:30] for s in STALE])
def test_no_stale_statement(pattern, why):
    import vwwfast
    texts = [(rel(p), p.read_text()) for p in DOCS] + [("vwwfast/__init__.py", vwwfast.__doc__)]
    found = [where for where, text in texts if re.search(pattern, text, re.S)]
    assert found == [], why


def test_scale_uses_the_measured_cpu_figures():
    """SCALE.md's 2-core figures are BENCHMARKS.md's measurements."""
    scale = (REPO / "docs" / "SCALE.md").read_text()
    bench = (REPO / "docs" / "BENCHMARKS.md").read_text()
    row = next(line for line in scale.splitlines() if line.startswith("|") and "2-core" in line)
    for number in re.findall(r"\d+(?:-\d+)?", row.split("|")[2]):
        for n in number.split("-"):
            assert re.search(rf"\b{n}\b", bench), f"SCALE.md's {n} img/s is not in BENCHMARKS.md"


def test_examples_compile():
    for path in EXAMPLES:
        compile(path.read_text(), str(path), "exec")


def test_distill_names_the_stores_beside_the_shards(tmp_path, synth_shards, capsys):
    """The default store name carries the teacher's sha256, so a `distill` without a store,
    or with one that is not there, names the stores the shard folder holds."""
    from conftest import one_line_error
    shards = tmp_path / "vww"
    shards.mkdir()
    for f in Path(synth_shards).iterdir():
        (shards / f.name).symlink_to(f)
    one = shards / "teacher-mbv3l-224-default-1a2b3c4d.zarr"
    (one / "zarr.json").parent.mkdir()
    (one / "zarr.json").write_text("{}")
    runs = ["--runs-dir", tmp_path / "runs"]
    line = one_line_error(capsys, "distill", "--shards", shards, *runs)
    assert f"holds one store: --cache {one}" in line
    line = one_line_error(capsys, "distill", "--shards", shards, "--cache", shards / "teacher.zarr", *runs)
    assert f"teacher cache not found: {shards / 'teacher.zarr'}" in line and f"--cache {one}" in line
    two = shards / "teacher-mbv3s-96-fm-5e6f7a8b.zarr"
    (two / "zarr.json").parent.mkdir()
    (two / "zarr.json").write_text("{}")
    line = one_line_error(capsys, "distill", "--shards", shards, *runs)
    assert f"{shards} holds 2 stores: {one.name}, {two.name}" in line
    assert not (tmp_path / "runs").exists()  # refused before any record
