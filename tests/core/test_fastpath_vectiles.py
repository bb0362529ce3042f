"""The products' vector tiles and rows (`hinn_core.fastpath._vectiles`) against numpy, and their
register budget.

Both are LLVM IR written by hand, so they are checked directly: every width, dtype, row count
around the tile's size, both modes (overwrite, accumulate), rows past the tiles left untouched,
inputs wider than ``K``, the order of each output's multiply-adds (bitwise, in float32), and the
shapes as the compiled code chose them for this machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from hinn_core.fastpath import _trunk
from hinn_core.fastpath._vectiles import WIDTHS, register_budget, row_shape, tile_shape, vector_row, vector_tiles
from hinn_core.fastpath.vectorwidth import active_features


@njit(cache=False)
def _tiles32(A, K, Z, R, accumulate, b=None):
    return vector_tiles(A, K, Z, R, accumulate, 32, b)


@njit(cache=False)
def _tiles64(A, K, Z, R, accumulate, b=None):
    return vector_tiles(A, K, Z, R, accumulate, 64, b)


@njit(cache=False)
def _row32(A, K, Z, r, accumulate, b=None):
    vector_row(A, K, Z, r, accumulate, 32, b)


@njit(cache=False)
def _row64(A, K, Z, r, accumulate, b=None):
    vector_row(A, K, Z, r, accumulate, 64, b)


ROOT = Path(__file__).resolve().parents[2]
TILES = {32: _tiles32, 64: _tiles64}
ROWS = {32: _row32, 64: _row64}
TOL = {np.float64: 1e-13, np.float32: 2e-5}


def _rows_per_tile(dtype, width: int) -> int:
    return tile_shape(active_features(), np.dtype(dtype).itemsize, width)[0]


@pytest.mark.parametrize("mode", ["overwrite", "accumulate", "bias"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("extra_rows", "m"), [(0, 32), (5, 64), (-1, 2), (1, 7), (3, 1)])
def test_tiles_match_numpy_and_leave_the_other_rows_alone(extra_rows: int, m: int, width: int, dtype,
                                                           mode: str) -> None:
    rt = _rows_per_tile(dtype, width)
    R = max(0, 2 * rt + extra_rows)  # two tiles and a tail (or one row short of two tiles)
    rng = np.random.default_rng(R * 1000 + m)
    A = rng.standard_normal((R + 2, m + 3)).astype(dtype)  # wider than K: only the first m columns count
    K = rng.standard_normal((m, width)).astype(dtype)
    Z0 = rng.standard_normal((R + 2, width)).astype(dtype)
    b = rng.standard_normal(width).astype(dtype) if mode == "bias" else None
    Z = Z0.copy()
    done = TILES[width](A, K, Z, R, mode == "accumulate", b)  # a bias: Z = b + A @ K, Z's contents ignored
    assert done == R - R % rt
    exact = A[:done, :m].astype(np.float64) @ K.astype(np.float64)
    exact += Z0[:done] if mode == "accumulate" else b if mode == "bias" else 0.0
    scale = max(1.0, float(np.abs(exact).max()))
    np.testing.assert_allclose(Z[:done], exact, rtol=0, atol=TOL[dtype] * scale)
    np.testing.assert_array_equal(Z[done:], Z0[done:])  # the tail is the caller's (`matmul`'s row loop)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_output_is_the_in_order_multiply_add_chain(dtype) -> None:
    """In float32 each step ``z ← fma(a_i, k_i, z)`` rounds once: float64 arithmetic (the product of
    two floats is exact there) rounded to float32 after every step reproduces the chain, barring a
    double rounding these inputs do not hit. A reordered or split sum would not match bitwise."""
    rt = _rows_per_tile(dtype, 32)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((rt, 32)).astype(dtype)
    K = rng.standard_normal((32, 32)).astype(dtype)
    Z = np.zeros((rt, 32), dtype)
    _tiles32(A, K, Z, rt, False)
    if dtype is np.float32:
        chain = np.zeros((rt, 32), np.float32)
        for i in range(32):
            chain = (np.float64(1) * A[:, i:i + 1] * K[i] + chain).astype(np.float32)
        np.testing.assert_array_equal(Z, chain)
    else:
        np.testing.assert_allclose(Z, A @ K, rtol=0, atol=1e-13)


@pytest.mark.parametrize("mode", ["overwrite", "accumulate", "bias"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("m", [1, 2, 7, 32, 64, 67])  # whole groups of P chains, and remainders
def test_a_row_matches_numpy_and_leaves_the_other_rows_alone(m: int, width: int, dtype, mode: str) -> None:
    rng = np.random.default_rng(m + width)
    A = rng.standard_normal((3, m + 2)).astype(dtype)
    K = rng.standard_normal((m, width)).astype(dtype)
    Z0 = rng.standard_normal((3, width)).astype(dtype)
    b = rng.standard_normal(width).astype(dtype) if mode == "bias" else None
    Z = Z0.copy()
    ROWS[width](A, K, Z, 1, mode == "accumulate", b)
    exact = A[1, :m].astype(np.float64) @ K.astype(np.float64)
    exact += Z0[1] if mode == "accumulate" else b if mode == "bias" else 0.0
    np.testing.assert_allclose(Z[1], exact, rtol=0, atol=TOL[dtype] * max(1.0, float(np.abs(exact).max())))
    np.testing.assert_array_equal(Z[[0, 2]], Z0[[0, 2]])


@pytest.mark.parametrize("m", [32, 35])
def test_a_rows_sum_runs_in_independent_chains_added_pairwise(m: int) -> None:
    """float32, bitwise: chain ``p`` takes ``i ≡ p (mod P)`` over whole groups of ``P`` (the
    remainder goes on chain 0, which starts from ``Z`` when accumulating), then
    ``(c0 + c1) + (c2 + c3)``; each step rounds once (see the tiles' chain test)."""
    parts = row_shape(active_features(), 4, 32)[0]
    rng = np.random.default_rng(7)
    A = rng.standard_normal((1, m)).astype(np.float32)
    K = rng.standard_normal((m, 32)).astype(np.float32)
    Z0 = rng.standard_normal((1, 32)).astype(np.float32)
    Z = Z0.copy()
    _row32(A, K, Z, 0, True)

    def step(z, i):
        return (np.float64(1) * A[0, i] * K[i] + z).astype(np.float32)

    chains = [Z0[0].copy()] + [np.zeros(32, np.float32) for _ in range(parts - 1)]
    whole = m - m % parts
    for i in range(whole):
        chains[i % parts] = step(chains[i % parts], i)
    for i in range(whole, m):
        chains[0] = step(chains[0], i)
    while len(chains) > 1:
        chains = [chains[k] + chains[k + 1] if k + 1 < len(chains) else chains[k] for k in range(0, len(chains), 2)]
    np.testing.assert_array_equal(Z[0], chains[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("R", [1, 7, 8, 21, 64])
def test_matmul_takes_the_tiles_and_vector_rows_for_the_rest(dtype, R: int) -> None:
    """`matmul` (overwrite, accumulate) and `matmul_bias` at the vector widths and at one without."""
    rng = np.random.default_rng(R)
    for width in (32, 64, 48):  # 48: no vector tiles, the loop tiles alone
        A = rng.standard_normal((R, 40)).astype(dtype)
        K = rng.standard_normal((40, width)).astype(dtype)
        Z = np.full((R, width), 7.0, dtype)
        _trunk.matmul(A, K, Z, R, False)
        np.testing.assert_allclose(Z, A.astype(np.float64) @ K, rtol=0, atol=TOL[dtype] * 40)
        Z2 = np.ones((R, width), dtype)
        _trunk.matmul(A, K, Z2, R, True)
        np.testing.assert_allclose(Z2, 1.0 + A.astype(np.float64) @ K, rtol=0, atol=TOL[dtype] * 40)
        b = rng.standard_normal(width).astype(dtype)
        Z3 = np.full((R + 1, width), 7.0, dtype)
        _trunk.matmul_bias(A, K, b, Z3, R)
        np.testing.assert_allclose(Z3[:R], b + A.astype(np.float64) @ K, rtol=0, atol=TOL[dtype] * 40)
        assert (Z3[R] == 7.0).all()


def test_register_budget_follows_the_targets_vector_registers() -> None:
    assert register_budget("+avx2,+avx,+fma,+avx512f,-prefer-256-bit") == (64, 16)
    assert register_budget("+avx2,+avx,+avx512f,+prefer-256-bit") == (32, 16)  # ymm halves of 32 registers
    assert register_budget("+avx2,+avx,+fma,-avx512f") == (32, 8)  # 16 ymm registers
    assert register_budget("+sse2,-avx") == (16, 8)
    assert register_budget("") == (16, 8)  # unknown features: the smallest budget


@pytest.mark.parametrize(("shape_of", "features", "itemsize", "width", "shape"), [
    (tile_shape, "+avx512f", 4, 32, (8, 32)),  # tiles: 2 zmm per row, 8 rows: 16 accumulators
    (tile_shape, "+avx512f", 8, 64, (8, 16)),
    (tile_shape, "+avx512f,+prefer-256-bit", 4, 64, (8, 16)),
    (tile_shape, "+avx,+avx2", 4, 32, (4, 16)),  # 8 of 16 ymm registers
    (tile_shape, "+avx,+avx2", 8, 32, (4, 8)),
    (tile_shape, "+sse2", 8, 32, (4, 4)),
    (row_shape, "+avx512f", 4, 32, (4, 32)),  # rows: the whole row, 2 zmm per chain, 4 chains
    (row_shape, "+avx512f", 8, 64, (2, 64)),  # the whole row: 8 zmm per chain, 2 chains
    (row_shape, "+avx,+avx2", 4, 32, (2, 32)),  # 4 ymm per chain, 2 chains
    (row_shape, "+avx,+avx2", 8, 64, (4, 8)),  # 16 ymm would not fit: chunks of 2 ymm, 4 chains
    (row_shape, "+sse2", 8, 32, (4, 4)),
])
def test_shapes_keep_accumulators_within_half_the_registers(shape_of, features: str, itemsize: int, width: int,
                                                            shape: tuple[int, int]) -> None:
    """(tile rows or row chains, columns): their accumulators fit the budget, the columns divide the width."""
    assert shape_of(features, itemsize, width) == shape
    vbytes, regs = register_budget(features)
    lead, nc = shape
    assert lead * nc * itemsize <= regs * vbytes and width % nc == 0


def test_bad_arguments_are_refused_when_compiling() -> None:
    @njit(cache=False)
    def width16(A, K, Z):
        return vector_tiles(A, K, Z, 4, False, 16, None)

    @njit(cache=False)
    def strided(A, K, Z):
        return vector_tiles(A[:, ::2], K, Z, 4, False, 32, None)

    A, K, Z = np.ones((8, 64)), np.ones((32, 32)), np.ones((8, 32))
    with pytest.raises(TypingError, match="width must be one of"):
        width16(A, K[:, :16].copy(), Z[:, :16].copy())
    with pytest.raises(TypingError, match="C-contiguous"):
        strided(A, K, Z)
    with pytest.raises(TypingError, match="one float dtype"):
        _tiles32(A.astype(np.float32), K, Z, 8, False)
    with pytest.raises(TypingError, match="one float dtype"):
        _row32(A, K.astype(np.float32), Z, 0, False)
    with pytest.raises(TypingError, match="b must be None or a 1-d"):
        _tiles32(A, K, Z, 8, False, np.ones(32, np.float32))
    with pytest.raises(TypingError, match="b must be None or a 1-d"):
        _row32(A, K, Z, 0, False, np.ones((1, 32)))


#: an AVX2 target (16 ymm registers) for numba, whatever this host has
_AVX2 = "+64bit,+avx,+avx2,+fma,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+cx16,+popcnt,-avx512f"
_PROBE = """
import numpy as np
from hinn_core.fastpath._trunk import matmul, matmul_bias
from hinn_core.fastpath._vectiles import row_shape, tile_shape
from hinn_core.fastpath.vectorwidth import active_features

features = active_features()
assert "+avx512f" not in features.split(","), features
rng = np.random.default_rng(0)
worst = 0.0
for dt, tol in ((np.float32, 2e-5), (np.float64, 1e-13)):
    for rows in (1, 5, 13, 64):
        for width in (32, 64):
            A = rng.standard_normal((rows, 40)).astype(dt)
            K = rng.standard_normal((40, width)).astype(dt)
            Z = np.ones((rows, width), dt)
            matmul(A, K, Z, rows, True)
            err = float(np.abs(Z - 1.0 - A.astype(np.float64) @ K).max())
            worst = max(worst, err / (tol * 40))
            b = rng.standard_normal(width).astype(dt)
            matmul_bias(A, K, b, Z, rows)
            err = float(np.abs(Z - b - A.astype(np.float64) @ K).max())
            worst = max(worst, err / (tol * 40))
print(tile_shape(features, 4, 32), row_shape(features, 8, 64), worst)
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="an x86 target only")
def test_tiles_and_rows_are_right_for_an_avx2_target_too(tmp_path) -> None:
    """The register budget differs on AVX2 (4 × 16 float32 tiles, rows in chunks): numba compiles
    for that target in a fresh process (its target is fixed once it compiles) and products match."""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": _AVX2, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split(")")[0] == "(4, 16" and "(4, 8)" in done.stdout, done.stdout
    assert float(done.stdout.split()[-1]) <= 1.0, done.stdout
