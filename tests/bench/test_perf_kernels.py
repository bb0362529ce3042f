"""bench/perf/kernels: the three products it times compute the same thing — and the trunks' tiled
`matmul` is exact to round-off for every remainder of its 4 × 4 tiles (rows and inner dimension)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.perf.kernels import _blas, _rows, _tiled
from hinn_core.fastpath import _trunk as tk


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("rows", "inner", "width"), [(1, 32, 32), (7, 5, 3), (18, 64, 64), (64, 33, 31), (257, 2, 1)])
def test_tiled_matmul_row_loop_and_blas_agree(dtype, rows, inner, width) -> None:
    rng = np.random.default_rng(rows + inner + width)
    A = rng.standard_normal((rows, inner)).astype(dtype)
    K = rng.standard_normal((inner, width)).astype(dtype)
    Z0 = rng.standard_normal((rows, width)).astype(dtype)
    expected = Z0.astype(np.float64) + A.astype(np.float64) @ K.astype(np.float64)
    tol = (1e-13 if dtype == np.float64 else 1e-5) * max(1.0, float(np.abs(expected).max()))
    for fn in (_tiled, _rows, _blas):  # accumulate: Z += A @ K, once
        Z = Z0.copy()
        fn(A, K, Z, rows, 1)
        assert float(np.abs(Z - expected).max()) <= tol, fn
    Z = Z0.copy()
    tk.matmul(A, K, Z, rows, False)  # overwrite
    assert float(np.abs(Z - (expected - Z0)).max()) <= tol


def test_tiled_matmul_leaves_rows_past_the_count_alone() -> None:
    A = np.ones((9, 8))
    K = np.ones((8, 4))
    Z = np.full((9, 4), -1.0)
    tk.matmul(A, K, Z, 6, False)
    assert (Z[:6] == 8.0).all() and (Z[6:] == -1.0).all()
