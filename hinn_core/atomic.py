"""Atomic file writes: a temp file beside the target, then a rename, so that a crash or a full disk
never leaves a half-written model or dataset where a complete one was (or was expected)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file of this process and thread, flushed to disk,
    and a rename (a symlink at ``path`` is replaced, not written through); the temp file is removed
    on failure. The file gets the usual permissions (``open``'s, under the umask)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file name", str(path))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent writers
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    return path
