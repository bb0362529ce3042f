"""The trunks' inner kernels against the versions they replaced, in one run, as ratios.

    python -m bench.perf.kernels          # ~1.5 min on 2 cores

``Z (+)= A @ K`` for 1 and 5 rows (batch 1, a short tail) and blocks of 16, 64 and 256 rows, widths
32 and 64, float64 and float32, the shapes a rollout block and the Hessian tangents have:
`_trunk.matmul` (at these widths the vector tiles and rows of `_vectiles`, accumulators in
registers), the loop tiles it used before them (`_trunk._matmul_tiles`, 4 rows × 4 rows of K,
accumulators in memory), the row-at-a-time loop those replaced (`_trunk._matmul_rows`), and numba's
``np.dot`` into scratch (BLAS calls in chunks, as the kernels made before). Prints ns per row and
matrix–vector product, and the ratios.

Then a layer's activation (value, σ' and σ'' of a resnet step) for the same shapes: `_math.activate`,
one flat run over the block's ``rows·w`` elements, against the row-at-a-time loops it replaced
(`_activate_rows` here), whose inner loop is only ``w`` elements long.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from numba import njit

from hinn_core.fastpath import _trunk as tk
from hinn_core.fastpath._math import ACT_CODES, TANH, activate, cst, tanh, tanh_logcosh


@njit(cache=False)
def _tiled(A, K, Z, R, n):
    for _ in range(n):
        tk.matmul(A, K, Z, R, True)


@njit(cache=False)
def _loop_tiles(A, K, Z, R, n):
    for _ in range(n):
        tk._matmul_tiles(A, K, Z, R, True, K.shape[1])


@njit(cache=False)
def _rows(A, K, Z, R, n):
    for _ in range(n):
        tk._matmul_rows(A, K, Z, 0, R, True, K.shape[1])


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


@njit(cache=False)
def _activate_rows(Z, A, D1, D2, S, act, rh, accumulate):
    """The replaced `_math.activate` (tanh and log-cosh): one inner loop of ``w`` per row."""
    w = Z.shape[1]
    one = cst(Z, 1.0)
    two = cst(Z, 2.0)
    keep = one if accumulate else cst(Z, 0.0)
    step = rh if accumulate else one
    for s in range(S):
        if not accumulate:
            for j in range(w):
                A[s, j] = cst(Z, 0.0)
        if act == TANH:
            for j in range(w):
                t = tanh(Z[s, j])
                d = one - t * t
                D1[s, j] = d
                D2[s, j] = -two * t * d
                A[s, j] = keep * A[s, j] + step * t
        else:
            for j in range(w):
                t, lc = tanh_logcosh(Z[s, j])
                D1[s, j] = t
                D2[s, j] = one - t * t
                A[s, j] = keep * A[s, j] + step * lc


@njit(cache=False)
def _act_flat(Z, A, D1, D2, act, R, n):
    for _ in range(n):
        activate(Z, A, D1, D2, R, act, cst(Z, 0.5), True)


@njit(cache=False)
def _act_rows(Z, A, D1, D2, act, R, n):
    for _ in range(n):
        _activate_rows(Z, A, D1, D2, R, act, cst(Z, 0.5), True)


def _ns_per_row(run, rows: int, budget: float = 0.3) -> float:
    """``run(n)`` repeats a kernel ``n`` times over ``rows`` rows: ns per row, doubling ``n`` until
    one timing takes ``budget`` seconds."""
    run(2)
    n = 16
    while True:
        t = time.perf_counter()
        run(n)
        el = time.perf_counter() - t
        if el > budget:
            return 1e9 * el / n / rows
        n *= 2


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m bench.perf.kernels", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print("| dtype | width | rows | matmul (ns/row) | loop tiles | row loop | BLAS | loop tiles / matmul "
          "| row loop / matmul | BLAS / matmul | max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for width in (32, 64):
            for rows in (1, 5, 16, 64, 256):
                A = rng.standard_normal((rows, width)).astype(dtype)
                K = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(dtype)
                ref = A.astype(np.float64) @ K.astype(np.float64)
                Z = np.zeros((rows, width), dtype)
                tk.matmul(A, K, Z, rows, False)
                diff = float(np.abs(Z - ref).max())
                fns = (_tiled, _loop_tiles, _rows, _blas)
                t = [_ns_per_row(partial(fn, A, K, np.zeros_like(Z), rows), rows) for fn in fns]
                print(f"| {np.dtype(dtype).name} | {width} | {rows} | {t[0]:.1f} | {t[1]:.1f} | {t[2]:.1f} "
                      f"| {t[3]:.1f} | {t[1] / t[0]:.2f}× | {t[2] / t[0]:.2f}× | {t[3] / t[0]:.2f}× | {diff:.1e} |",
                      flush=True)
    print()
    print("| dtype | activation | width | rows | flat (ns/row) | row loop | row loop / flat |")
    print("|---|---|---|---|---|---|---|")
    for dtype in (np.float64, np.float32):
        for name in ("antitanh", "tanh"):
            act = ACT_CODES[name]
            for width in (32, 64):
                for rows in (16, 64, 256):
                    Z = (2 * rng.standard_normal((rows, width))).astype(dtype)
                    A, D1, D2 = (np.zeros_like(Z) for _ in range(3))
                    t = [_ns_per_row(partial(fn, Z, A, D1, D2, act, rows), rows) for fn in (_act_flat, _act_rows)]
                    print(f"| {np.dtype(dtype).name} | {name} | {width} | {rows} | {t[0]:.1f} | {t[1]:.1f} "
                          f"| {t[1] / t[0]:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
