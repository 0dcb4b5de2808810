"""What ran: the vwwfast version, the git commit, the library versions, and the short name
of an architecture. Records, stores and exports all name their code through this module."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Optional

__version__ = "0.1.0"

SHORT_ARCH = {"mobilenet_v3_small": "mbv3s", "mobilenet_v3_large": "mbv3l", "mobilenet_v2": "mbv2"}


def arch_short(arch: str) -> str:
    """'mobilenet_v3_small' -> 'mbv3s' (run folder names, store names, tables)."""
    return SHORT_ARCH.get(arch, arch.replace("_", ""))


def model_short(arch: str, width=None) -> str:
    """An arch and its width multiplier in short: 'mbv3s', 'mbv3s-0.35' (width 1 is left out)."""
    name = arch_short(arch)
    return name if width in (None, 1, 1.0) else f"{name}-{float(width):g}"


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """'abc1234' or 'abc1234+dirty' (something under vwwfast/ changed or is new) when this
    package runs from a git checkout; None otherwise (an installed wheel, no git). Found from
    the package's own folder, so running inside some other repository is not mistaken for
    it. Computed once per process: a run's start and end agree."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "vwwfast"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + ("+dirty" if dirty else "")


def versions() -> dict:
    from importlib import metadata
    out = {"vwwfast": __version__, "git": git_commit(), "python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
