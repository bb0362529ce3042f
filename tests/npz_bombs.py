"""Crafted NPZ archives whose arrays declare far more than their compressed bytes (plain functions)."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def deflate_npz(shapes: dict[str, tuple[int, ...]], *, dtype: str = "<f8", truncated: bool = False) -> bytes:
    """An NPZ of all-zero arrays of ``shapes``, streamed through ZIP_DEFLATED (~1000:1), never held in memory.

    With ``truncated`` only the ``.npy`` headers are written: the arrays are declared but absent.
    """
    itemsize = np.dtype(dtype).itemsize
    chunk = bytes(1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, shape in shapes.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
                left = 0 if truncated else int(np.prod(shape, dtype=object)) * itemsize
                while left:
                    f.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))
    return buf.getvalue()
