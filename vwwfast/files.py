"""Writing files so that a crash never leaves half a file under its final name, and the
worker processes that make them."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import secrets
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def write_atomic(path, data) -> None:
    """Write to a temp name in the same folder, then os.replace: a crash never leaves half a
    file under the final name. The file gets 0666 less the umask (0644 under the usual 022),
    as torch.save gives the checkpoints; tempfile.mkstemp would make it 0600."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def worker_pool(workers: int) -> ProcessPoolExecutor | None:
    """Processes for CPU-bound encoding, None for one. Started by a fork server, never by
    forking this process: threads of libraries already loaded here (torch, JAX under the
    tflite extra) do not survive a fork."""
    if workers <= 1:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
