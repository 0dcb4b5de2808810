"""Writing files so that a crash never leaves half a file under its final name."""

from __future__ import annotations

import os
import secrets
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
