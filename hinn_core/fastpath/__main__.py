"""``python -m hinn_core.fastpath``: compile the prediction kernels into numba's disk cache.

Run once after installing (``make install`` and the Docker image do) so that the first prediction
does not pay the ~45 s compilation.
"""

from hinn_core.fastpath import available, warm

if __name__ == "__main__":
    if not available():
        raise SystemExit("numba is not installed: the compiled prediction path is unavailable")
    print(f"hinn fast path ready ({warm():.1f} s)")
