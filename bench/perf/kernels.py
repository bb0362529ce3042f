"""The trunks' matrix product three ways, in one run, as ratios: why `_trunk.matmul` is tiled.

    python -m bench.perf.kernels          # ~1 min on 2 cores

``Z (+)= A @ K`` for blocks of 16, 64 and 256 rows, widths 32 and 64, float64 and float32, the shapes
a rollout block and the Hessian tangents have: `_trunk.matmul` (4 rows × 4 rows of K per tile), the
row-at-a-time loop it replaced (`_trunk._matmul_rows`), and numba's ``np.dot`` into scratch (BLAS
calls in chunks, as the kernels made before). Prints ns per row and matrix–vector product, and the ratios.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from hinn_core.fastpath import _trunk as tk


@njit(cache=False)
def _tiled(A, K, Z, R, n):
    for _ in range(n):
        tk.matmul(A, K, Z, R, True)


@njit(cache=False)
def _rows(A, K, Z, R, n):
    for _ in range(n):
        tk._matmul_rows(A, K, Z, 0, R, True)


#: as the replaced BLAS path: calls of at most this many rows·k·n, below OpenBLAS's threshold for
#: starting its own threads (which would compete with the rollout's)
BLAS_MAX_WORK = 1 << 17


@njit(cache=False)
def _blas(A, K, Z, R, n):
    out = np.empty_like(Z)
    m, w = K.shape
    chunk = max(8, BLAS_MAX_WORK // (m * w))
    for _ in range(n):
        for r0 in range(0, R, chunk):
            r1 = min(R, r0 + chunk)
            np.dot(A[r0:r1], K, out[r0:r1])
        for r in range(R):
            for j in range(w):
                Z[r, j] += out[r, j]


def _ns_per_row(fn, A, K, Z, rows: int, budget: float = 0.3) -> float:
    fn(A, K, Z, rows, 2)
    n = 16
    while True:
        t = time.perf_counter()
        fn(A, K, Z, rows, n)
        el = time.perf_counter() - t
        if el > budget:
            return 1e9 * el / n / rows
        n *= 2


def main() -> None:
    print("| dtype | width | rows | tiled (ns/row) | row loop | BLAS | row loop / tiled | BLAS / tiled | max diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for width in (32, 64):
            for rows in (16, 64, 256):
                A = rng.standard_normal((rows, width)).astype(dtype)
                K = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(dtype)
                ref = A.astype(np.float64) @ K.astype(np.float64)
                Z = np.zeros((rows, width), dtype)
                tk.matmul(A, K, Z, rows, False)
                diff = float(np.abs(Z - ref).max())
                t = [_ns_per_row(fn, A, K, np.zeros_like(Z), rows) for fn in (_tiled, _rows, _blas)]
                print(f"| {np.dtype(dtype).name} | {width} | {rows} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} "
                      f"| {t[1] / t[0]:.2f}× | {t[2] / t[0]:.2f}× | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
