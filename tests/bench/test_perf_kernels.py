"""bench/perf/kernels: the four products it times compute the same thing — and the trunks' tiled
`matmul` is exact to round-off for every remainder of its tiles (rows and inner dimension)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.perf.kernels import _blas, _loop_tiles, _rows, _tiled
from hinn_core.fastpath import _trunk as tk


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("rows", "inner", "width"),
                         [(1, 32, 32), (7, 5, 3), (18, 64, 64), (21, 3, 32), (64, 33, 31), (257, 2, 1)])
def test_tiled_matmul_row_loop_and_blas_agree(dtype, rows, inner, width) -> None:
    rng = np.random.default_rng(rows + inner + width)
    A = rng.standard_normal((rows, inner)).astype(dtype)
    K = rng.standard_normal((inner, width)).astype(dtype)
    Z0 = rng.standard_normal((rows, width)).astype(dtype)
    expected = Z0.astype(np.float64) + A.astype(np.float64) @ K.astype(np.float64)
    tol = (1e-13 if dtype == np.float64 else 1e-5) * max(1.0, float(np.abs(expected).max()))
    for fn in (_tiled, _loop_tiles, _rows, _blas):  # accumulate: Z += A @ K, once
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", ["antitanh", "tanh"])
def test_flat_activation_and_the_row_loop_it_replaced_agree(dtype, act) -> None:
    """The activation table times two loops over the same elements: same values to round-off (FMA
    contraction may pair the multiply-adds differently in differently vectorised loops), same rows."""
    from bench.perf.kernels import _act_flat, _act_rows
    from hinn_core.fastpath._math import ACT_CODES

    rng = np.random.default_rng(3)
    Z = (3 * rng.standard_normal((11, 24))).astype(dtype)
    A0 = rng.standard_normal(Z.shape).astype(dtype)
    outs = []
    for fn in (_act_flat, _act_rows):
        A, D1, D2 = A0.copy(), np.zeros_like(Z), np.zeros_like(Z)
        fn(Z, A, D1, D2, ACT_CODES[act], 7, 2)  # rows < 7, twice (A accumulates)
        outs.append((A, D1, D2))
    eps = float(np.finfo(dtype).eps)
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=4 * eps, atol=4 * eps * float(np.abs(b).max()))
    assert (outs[0][0][7:] == A0[7:]).all() and (outs[0][1][7:] == 0).all()
    assert not np.array_equal(outs[0][0][:7], A0[:7])
