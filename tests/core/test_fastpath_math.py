"""The kernels' own elementwise math (`hinn_core.fastpath._math`) against numpy/torch, in ulps.

They replace libm calls that block vectorisation, so their accuracy is checked directly, over the
ranges the activations feed them, in float64 and float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from hinn_core.fastpath import _math as fm


def _elementwise(fn):
    """A compiled loop ``out[i] = fn(x[i])`` over a 1-d array (the kernels' math runs compiled only)."""

    @njit(cache=False)
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    return run


_log1p = _elementwise(fm.log1p_unit)
_antitanh = _elementwise(fm.antitanh)
_softplus = _elementwise(fm.softplus)
_log1p_summand = _elementwise(fm.log1p_summand)
_exp_neg = _elementwise(fm.exp_neg)
_sigmoid = _elementwise(fm.sigmoid)
_tanh = _elementwise(fm.tanh)


def _run(fn, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    fn(x, out)
    return out


def _ulps(got: np.ndarray, ref64: np.ndarray, dtype) -> float:
    """Error in units of the last place of the result's dtype."""
    ref = ref64.astype(dtype)
    return float(np.max(np.abs(got.astype(np.float64) - ref64) / np.spacing(np.abs(ref)).astype(np.float64)))


@pytest.mark.parametrize(("dtype", "bound"), [(np.float64, 2.0), (np.float32, 2.0)])
def test_log1p_unit_is_accurate_on_the_unit_interval(dtype, bound) -> None:
    x = np.concatenate([np.linspace(0.0, 1.0, 100_001), np.logspace(-300 if dtype == np.float64 else -37, 0, 4001),
                        [0.41421356237309503, 0.41421357]]).astype(dtype)
    got = _run(_log1p, x)
    assert got.dtype == dtype
    assert got[0] == 0.0
    assert _ulps(got[1:], np.log1p(x[1:].astype(np.float64)), dtype) <= bound


@pytest.mark.parametrize(("dtype", "bound"), [(np.float64, 1.0), (np.float32, 1.6)])
def test_log1p_summand_is_accurate_to_an_ulp_or_two_of_log2(dtype, bound) -> None:
    """Log cosh's log term: absolute error in ulps of log 2, the least value of the sum it joins."""
    x = np.concatenate([np.linspace(0.0, 1.0, 200_001), np.logspace(-37, 0, 4001)]).astype(dtype)
    got = _run(_log1p_summand, x)
    assert got.dtype == dtype
    assert got[0] == 0.0
    err = np.abs(got.astype(np.float64) - np.log1p(x.astype(np.float64)))
    assert float(np.max(err / np.spacing(dtype(np.log(2))))) <= bound


@njit(cache=False)
def _pow2(x, out):
    for i in range(x.shape[0]):
        out[i] = fm.pow2_of_rounded(fm.round_magic(x[i]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_exponentials_power_of_two_comes_from_the_rounded_sums_bits(dtype) -> None:
    """`round_magic` rounds to the nearest integer k (ties to even), `pow2_of_rounded` gives 2^k
    exactly, over every normal power of two; NaN stays NaN through the exponential."""
    lo, hi = (-1022, 1023) if dtype == np.float64 else (-126, 127)
    k = np.arange(lo, hi + 1)
    np.testing.assert_array_equal(_run(_pow2, k.astype(dtype)), np.ldexp(dtype(1), k))
    y = np.array([0.4, 0.5, 0.6, 1.5, 2.5, -0.4, -0.5, -1.5, -2.6], dtype)
    np.testing.assert_array_equal(_run(_pow2, y), np.ldexp(dtype(1), np.rint(y).astype(int)))
    assert np.isnan(_run(_exp_neg, np.array([np.nan], dtype))[0])
    x = -np.linspace(0.0, 80.0, 100_001).astype(dtype)
    assert _ulps(_run(_exp_neg, x), np.exp(x.astype(np.float64)), dtype) <= 2.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_cosh_and_softplus_match_their_references(dtype) -> None:
    x = np.concatenate([np.linspace(-30.0, 30.0, 60_001), [-1e-8, 1e-8, 0.0, 19.999, 20.001]]).astype(dtype)
    x64 = x.astype(np.float64)
    assert _ulps(_run(_antitanh, x), np.logaddexp(x64, -x64), dtype) <= 4.0  # log(2 cosh x)
    soft = torch.nn.functional.softplus(torch.from_numpy(x64)).numpy()  # torch's threshold: x above 20
    assert _ulps(_run(_softplus, x), soft, dtype) <= 4.0


@pytest.mark.parametrize(("dtype", "tanh_bound"), [(np.float64, 5.0), (np.float32, 3.0)])
def test_tanh_and_sigmoid_are_within_a_few_ulp(dtype, tanh_bound) -> None:
    """The module's accuracy claim for the other two activations, against numpy's float64, whose own
    error (up to ~2 ulp for the sigmoid formula) is inside the bounds: an x86 long double reference
    puts float64 tanh at 4.4 ulp, near |x| = 0.125, and the sigmoid at <= 2.5."""
    x = np.concatenate([np.linspace(-40.0, 40.0, 400_001), np.geomspace(1e-30, 40.0, 40_001),
                        -np.geomspace(1e-30, 40.0, 40_001)]).astype(dtype)
    x64 = x.astype(np.float64)
    assert _ulps(_run(_tanh, x), np.tanh(x64), dtype) <= tanh_bound
    e = np.exp(-np.abs(x64))
    assert _ulps(_run(_sigmoid, x), np.where(x64 >= 0, 1.0, e) / (1.0 + e), dtype) <= 4.5


@njit(cache=False)
def _tanh_logcosh(x, t, lc):
    for i in range(x.shape[0]):
        t[i], lc[i] = fm.tanh_logcosh(x[i])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_tanh_logcosh_is_bitwise_tanh_and_antitanh(dtype) -> None:
    """The log-cosh layer's fused activation (one exponential for value and derivative) gives
    exactly what the separate functions give, including past the clamp at |x| = 20."""
    x = np.concatenate([np.linspace(-60.0, 60.0, 120_001), np.logspace(-300 if dtype == np.float64 else -37, 2, 5001),
                        [0.0, -0.0, 19.999, 20.0, 20.001, 700.0, -750.0, np.inf, -np.inf, np.nan]]).astype(dtype)
    x = np.concatenate([x, -x])
    t, lc = np.empty_like(x), np.empty_like(x)
    _tanh_logcosh(x, t, lc)
    np.testing.assert_array_equal(t, _run(_tanh, x))
    np.testing.assert_array_equal(lc, _run(_antitanh, x))


@njit(cache=False)
def _layer(Z, A, D1, D2, S, act, rh, accumulate, order):
    if order == 0:
        fm.activate_value(Z, A, S, act, rh, accumulate)
    elif order == 1:
        fm.activate_first(Z, A, D1, S, act, rh, accumulate)
    else:
        fm.activate(Z, A, D1, D2, S, act, rh, accumulate)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", sorted(fm.ACT_CODES))
@pytest.mark.parametrize("accumulate", [False, True])
def test_a_layers_activation_runs_over_exactly_its_rows(dtype, act, accumulate) -> None:
    """`activate`, `activate_first` and `activate_value` run over the block's first ``S`` rows as
    one flat loop: each element gets σ, σ' and σ'' of its own pre-activation (the resnet step adds
    ``rh·σ``), as far as each computes them, and the workspace rows past ``S`` are left as they were."""
    rng = np.random.default_rng(len(act))
    rows, S, w, rh = 9, 6, 13, dtype(0.25)  # odd width: no vector loop may assume whole rows
    Z = (3 * rng.standard_normal((rows, w))).astype(dtype)
    A0 = rng.standard_normal((rows, w)).astype(dtype)
    A, D1, D2 = A0.copy(), np.full((rows, w), 7, dtype), np.full((rows, w), 7, dtype)
    code = fm.ACT_CODES[act]
    _layer(Z, A, D1, D2, S, code, rh, accumulate, 2)
    x = torch.tensor(Z[:S].astype(np.float64), requires_grad=True)
    sigma = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus,
             "antitanh": lambda v: torch.logaddexp(v, -v)}[act]  # hessQuik's antiTanh: log(2 cosh)
    y = sigma(x)
    d1 = torch.autograd.grad(y.sum(), x, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), x)[0]
    tol = 1e-14 if dtype == np.float64 else 2e-6
    expected = (A0[:S] + float(rh) * y.detach().numpy()) if accumulate else y.detach().numpy()
    np.testing.assert_allclose(A[:S], expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(D1[:S], d1.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(D2[:S], d2.numpy(), rtol=tol, atol=tol)
    np.testing.assert_array_equal(A[S:], A0[S:])
    assert (D1[S:] == 7).all() and (D2[S:] == 7).all()
    Av = A0.copy()
    _layer(Z, Av, D1, D2, S, code, rh, accumulate, 0)
    np.testing.assert_array_equal(Av, A)  # the value-only pass: the same values, same rows
    A1, D1f, D2f = A0.copy(), np.full((rows, w), 7, dtype), np.full((rows, w), 7, dtype)
    _layer(Z, A1, D1f, D2f, S, code, rh, accumulate, 1)
    np.testing.assert_array_equal(A1, A)  # the first-order pass (gradient sweeps): same values and σ'
    np.testing.assert_array_equal(D1f, D1)
    assert (D2f == 7).all()  # σ'' neither computed nor stored


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 17, 32, 64])
def test_dot8_sums_every_product_once(dtype, n) -> None:
    """The eight-partial-sum dot product of the output layer and the input gradient: the vector
    part and the remainder together, against a float64 sum (float32 within its rounding)."""
    from hinn_core.fastpath._trunk import dot8

    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(2, n + 3)).astype(dtype)  # longer than n: entries past n must not count
    acc = dtype(0.75)
    got = dot8(x, y, n, acc)
    want = 0.75 + float(np.dot(x[:n].astype(np.float64), y[:n].astype(np.float64)))
    tol = 1e-13 if dtype == np.float64 else 2e-6 * (1 + np.abs(x[:n] * y[:n]).sum())
    assert abs(float(got) - want) <= tol


@njit(cache=False)
def _fill_flat(X, S, value):
    v = fm.flat(X, S)
    for k in range(S * X.shape[1]):
        v[k] = value


@pytest.mark.parametrize("S", [1, 3])
def test_flat_is_a_view_of_exactly_the_first_S_rows(S) -> None:
    X = np.arange(20.0).reshape(4, 5)
    _fill_flat(X, S, -1.0)
    assert (X[:S] == -1.0).all() and np.array_equal(X[S:], np.arange(20.0).reshape(4, 5)[S:])
