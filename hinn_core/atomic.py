"""Atomic file writes: a temp file beside the target, then a rename, so that a crash or a full disk
never leaves a half-written model or dataset where a complete one was (or was expected)."""

from __future__ import annotations

from pathlib import Path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``path.tmp`` and a rename; the temp file is removed on failure."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file name", str(path))
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    return path
