"""Ctrl-C where it is safe: blocks that hold it back until what they write is whole, and the
named points at which the tests send it.

Tests: VWWFAST_TEST_INTERRUPT=POINT[:N][,...] sends Ctrl-C's signal the N-th time (default:
the first) the process reaches `interrupt_point(POINT)`; see tests/test_interrupt.py. The
points: runs-made, epoch-logged, epoch-ended, closing, report (train/), view-done (teach/).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Iterator

INTERRUPT_HOOK = "VWWFAST_TEST_INTERRUPT"
_reached: dict[str, int] = {}   # interrupt_point: how often each point was reached
_holding: list[list] = []       # held_interrupt: the Ctrl-Cs held back by each open block


@contextlib.contextmanager
def held_interrupt(raise_after: bool = True) -> Iterator[list]:
    """Ctrl-C held back while the block runs, so that what it writes is written whole; on
    leaving, a Ctrl-C that came meanwhile is raised (raise_after) or only listed in the
    yielded list. Outside the main thread, or where SIGINT is ignored, a plain block."""
    got: list = []
    old = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(old):
        yield got
        return
    signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    _holding.append(got)
    try:
        yield got
    finally:
        _holding.remove(got)
        signal.signal(signal.SIGINT, old)
    if got and raise_after:
        old(signal.SIGINT, None)  # the handler that was there: KeyboardInterrupt by default


def interrupt_point(name: str) -> None:
    """Tests: Ctrl-C at a named point of a pass, when the environment's VWWFAST_TEST_INTERRUPT
    names it: NAME or NAME:N (the N-th time the point is reached), several joined by commas.
    The signal goes to the process group when this process leads it (as a terminal's Ctrl-C
    does), else to this process alone."""
    wanted = [w.partition(":") for w in os.environ.get(INTERRUPT_HOOK, "").split(",") if w]
    nths = [int(n or 1) for point, _, n in wanted if point == name]
    if not nths:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] not in nths:
        return
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(_holding):  # held: raised when the block ends
        time.sleep(0.01)  # KeyboardInterrupt arrives here
