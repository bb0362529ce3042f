"""Elementwise math for the compiled kernels: dtype-generic constants and vectorisable activations.

libm's ``tanh``/``exp``/``log1p`` are opaque calls (~20 ns each) that stop LLVM from vectorising a loop, and
tanh alone would be most of a rollout's time. `exp_neg`, `log1p_unit` and the activations below are plain
arithmetic (Cephes' range reduction and Padé/polynomial, the power of two built from its bits),
accurate to a few ulp like torch's own vectorised versions (measured: float64 tanh 4.4 ulp near
|x| = 0.125, every other function and dtype ≤ 2.5; tested), so loops over a layer vectorise.
``cst(x, v)`` casts a constant to the float type of ``x``: a bare ``0.5`` would promote float32
arithmetic to float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

#: compile options shared by every kernel: no Python-style division checks (they block
#: vectorisation); fastmath stays off except FMA contraction (one rounding instead of two, as in
#: the BLAS calls torch makes) — NaN/inf semantics are untouched, so blow-ups are still detected.
#: ``_nrt`` is explicit: a callee would otherwise inherit its caller's setting.
JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}, "_nrt": True}
#: the same without numba's reference counting, for every kernel that allocates nothing: views of
#: weights and workspaces never outlive their arrays, and each incref/decref is an atomic call
#: (~40% of a batch-1 network sweep).
KERNEL = {**JIT, "_nrt": False}

TANH, SOFTPLUS, SIGMOID, ANTITANH = 0, 1, 2, 3
ACT_CODES = {"tanh": TANH, "softplus": SOFTPLUS, "sigmoid": SIGMOID, "antitanh": ANTITANH}


def cst(x, v):  # pragma: no cover - replaced by the overload inside compiled code
    """``v`` as the float type of ``x`` (a float scalar or array)."""
    return v


@overload(cst, inline="always")
def _cst(x, v):
    dt = x.dtype if isinstance(x, types.Array) else x

    def impl(x, v):
        return dt(v)

    return impl


#: 1.5·2^52 and 1.5·2^23: adding one to a float whose magnitude is below 2^51 (2^22) rounds it to
#: an integer k (to nearest) and leaves k in the low bits of the sum's pattern
_ROUNDER = {64: 6755399441055744.0, 32: 12582912.0}


def round_magic(y):  # pragma: no cover - replaced by the overload
    """``y + 1.5·2^p`` (p = 52, or 23 in float32): ``t − 1.5·2^p`` is ``y`` rounded to an integer,
    and `pow2_of_rounded` reads 2^k from ``t``'s bits. No conversion to an integer type: NaN stays a
    NaN, where LLVM makes a NaN's conversion poison (hence the check it needed), and float64's
    conversion has no vector instruction below AVX-512."""
    return y


@overload(round_magic)
def _round_magic_impl(y):
    magic = _ROUNDER[y.bitwidth]
    if y == types.float64:
        return lambda y: y + magic
    c = np.float32(magic)
    return lambda y: y + c


@intrinsic
def pow2_of_rounded(typingctx, t):
    """``2^k`` for ``t = round_magic(k)``, an integer ``k`` with a normal ``2^k``: the bias added to
    ``t``'s low bits, shifted into the exponent field (the magic's own bits shift out)."""
    if not isinstance(t, types.Float):
        return None
    bits = t.bitwidth
    mant = 52 if bits == 64 else 23
    bias = (1 << (bits - mant - 2)) - 1  # 1023, 127
    magic_bits = int(np.array(_ROUNDER[bits], dtype=f"f{bits // 8}").view(f"u{bits // 8}"))
    add = (bias - magic_bits) % (1 << bits)

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        it = ir.IntType(bits)
        i = builder.add(builder.bitcast(args[0], it), ir.Constant(it, add))
        return builder.bitcast(builder.shl(i, ir.Constant(it, mant)), context.get_value_type(t))

    return t(t), codegen


def _exp_parts(y):  # pragma: no cover - replaced by the overload
    """For ``y ≤ 0``: ``(s, num, den)`` with ``exp(y) = s·(1 + num/den)``, ``s`` a power of two.

    Returned as a fraction so that callers divide once (the division is the costly vector op)."""
    return y, y, y


@overload(_exp_parts)
def _exp_parts_impl(y):
    if y == types.float64:
        def impl64(y):
            yc = -700.0 if y < -700.0 else y  # NaN passes through the comparison
            t = round_magic(yc * 1.4426950408889634)
            kf = t - 6755399441055744.0
            r = yc - kf * 6.93145751953125e-1 - kf * 1.42860682030941723212e-6
            rr = r * r
            px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1)
            qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                  + 2.27265548208155028766e-1) * rr + 2.0
            return pow2_of_rounded(t), 2.0 * px, qx - px

        return impl64

    def impl32(y):
        yc = np.float32(-87.0) if y < np.float32(-87.0) else y
        t = round_magic(yc * np.float32(1.44269504088896341))
        kf = t - np.float32(12582912.0)
        r = yc - kf * np.float32(0.693359375) - kf * np.float32(-2.12194440e-4)
        m = ((((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r + np.float32(8.3334519073e-3)) * r
                + np.float32(4.1665795894e-2)) * r + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1))
             * (r * r) + r)
        return pow2_of_rounded(t), m, np.float32(1.0)

    return impl32


def log1p_unit(y):  # pragma: no cover - replaced by the overload
    """``log(1 + y)`` for ``0 ≤ y ≤ 1`` (≤ 2 ulp): Cephes' rational ``log`` on ``[√½, √2)``,
    with ``1 + y ≥ √2`` folded to ``2·(1 + (y − 1)/2)`` by a select, not a branch."""
    return y


@overload(log1p_unit)
def _log1p_unit_impl(y):
    if y == types.float64:
        def impl64(y):
            big = y > 0.41421356237309504880
            x = (y - 1.0) * 0.5 if big else y
            e = 1.0 if big else 0.0
            z = x * x
            p = ((((1.01875663804580931796e-4 * x + 4.97494994976747001425e-1) * x + 4.70579119878881725854e0) * x
                  + 1.44989225341610930846e1) * x + 1.79368678507819816313e1) * x + 7.70838733755885391666e0
            q = ((((x + 1.12873587189167450590e1) * x + 4.52279145837532221105e1) * x + 8.29875266912776603211e1) * x
                 + 7.11544750618563894466e1) * x + 2.31251620126765340583e1
            t = x * (z * p / q) - e * 2.121944400546905827679e-4 - 0.5 * z
            return (x + t) + e * 0.693359375

        return impl64

    def impl32(y):
        big = y > np.float32(0.41421356)
        x = (y - np.float32(1.0)) * np.float32(0.5) if big else y
        e = np.float32(1.0) if big else np.float32(0.0)
        z = x * x
        r = np.float32(7.0376836292e-2) * x - np.float32(1.1514610310e-1)
        r = (r * x + np.float32(1.1676998740e-1)) * x - np.float32(1.2420140846e-1)
        r = (r * x + np.float32(1.4249322787e-1)) * x - np.float32(1.6668057665e-1)
        r = (r * x + np.float32(2.0000714765e-1)) * x - np.float32(2.4999993993e-1)
        r = r * x + np.float32(3.3333331174e-1)
        t = r * x * z + np.float32(-2.12194440e-4) * e + np.float32(-0.5) * z
        return (x + t) + np.float32(0.693359375) * e

    return impl32


def log1p_summand(y):  # pragma: no cover - replaced by the overload
    """``log(1 + y)`` for ``0 ≤ y ≤ 1`` where it is added to ``|x|`` for log cosh, a result ≥ log 2:
    there an *absolute* error of an ulp or two of log 2 is as good as `log1p_unit`'s relative one.
    Float32: ``y + y²·R(y)``, ``R`` of degree 7 fitted to the least maximum absolute error on [0, 1]
    (7e-9, the rest is the float32 evaluation's rounding: ≤ 9.2e-8 measured, 1.5 ulp of log 2), with
    neither `log1p_unit`'s fold nor its selects. Float64: `log1p_unit` (a polynomial to 1e-17 would
    need degree ~22)."""
    return y


@overload(log1p_summand)
def _log1p_summand_impl(y):
    if y == types.float64:
        return lambda y: log1p_unit(y)

    def impl32(y):
        r = (np.float32(4.340056e-3) * y - np.float32(2.574425e-2)) * y + np.float32(7.172815e-2)
        r = (r * y - np.float32(1.3071744e-1)) * y + np.float32(1.8803246e-1)
        r = (r * y - np.float32(2.4757336e-1)) * y + np.float32(3.330704e-1)
        r = r * y - np.float32(4.9998882e-1)
        return (y * y) * r + y

    return impl32


@njit(**KERNEL)
def exp_neg(y):
    """``exp(y)`` for ``y ≤ 0`` (flushed to a tiny normal number below −700, −87 in float32)."""
    s, num, den = _exp_parts(y)
    return s * (den + num) / den


@njit(inline="always", **KERNEL)
def _exp_minus_2abs(x):
    """``(|x|, s, num, den)`` with ``e^{−2|x|} = s·(1 + num/den)``, |x| clamped at 20 (tanh is 1 to
    round-off there, and log cosh's log term below half an ulp of |x|; no subnormal numbers)."""
    ax = abs(x)
    s, num, den = _exp_parts(cst(x, -2.0) * (cst(x, 20.0) if ax > cst(x, 20.0) else ax))
    return ax, s, num, den


@njit(**KERNEL)
def tanh(x):
    """tanh(|x|) = −expm1(−2|x|) / (2 + expm1(−2|x|)): no cancellation near 0, one division."""
    ax, s, num, den = _exp_minus_2abs(x)
    e = s * (den + num)
    t = (-num if s == cst(x, 1.0) else den - e) / (den + e)
    return t if x >= cst(x, 0.0) else -t


@njit(**KERNEL)
def sigmoid(x):
    s, num, den = _exp_parts(-abs(x))
    e = s * (den + num)
    return (den if x >= cst(x, 0.0) else e) / (den + e)


@njit(**KERNEL)
def tanh_logcosh(x):
    """``(tanh x, antitanh x)`` from one exponential: log cosh's value and derivative share
    e^{−2|x|}; bitwise the results of `tanh` and `antitanh`."""
    ax, s, num, den = _exp_minus_2abs(x)
    e = s * (den + num)
    t = (-num if s == cst(x, 1.0) else den - e) / (den + e)
    return (t if x >= cst(x, 0.0) else -t), ax + log1p_summand(e / den)


@njit(**KERNEL)
def antitanh(x):
    """``log cosh x + log 2 = |x| + log(1 + e^{−2|x|})``, as hessQuik's antiTanhActivation computes it."""
    ax, s, num, den = _exp_minus_2abs(x)
    return ax + log1p_summand(s * (den + num) / den)


@njit(**KERNEL)
def softplus(x):
    """``log(1 + e^x)``; above 20 it is ``x`` (torch's threshold), chosen by a select so the loop vectorises."""
    t = (x if x > cst(x, 0.0) else cst(x, 0.0)) + log1p_unit(exp_neg(-abs(x)))
    return x if x > cst(x, 20.0) else t


@njit(inline="always", **KERNEL)
def flat(X, S):
    """The first ``S`` rows of a C-contiguous ``X`` as one 1-d run (rows are contiguous, so a loop
    over ``S·w`` elements vectorises whatever the width ``w``). One row is taken as a row view: a
    reshape's checks cost ~10 % of a batch-1 rollout."""
    return X[0] if S == 1 else X.reshape(-1)


@njit(inline="always", **KERNEL)
def _activate_run(z, a, d1, d2, n, act, keep, step, zero_first):
    """`activate` on ``n`` contiguous elements of 1-d views."""
    one = cst(z, 1.0)
    two = cst(z, 2.0)
    if zero_first:
        for k in range(n):
            a[k] = cst(z, 0.0)
    if act == TANH:
        for k in range(n):
            t = tanh(z[k])
            d = one - t * t
            d1[k] = d
            d2[k] = -two * t * d
            a[k] = keep * a[k] + step * t
    elif act == SIGMOID:
        for k in range(n):
            t = sigmoid(z[k])
            d = t * (one - t)
            d1[k] = d
            d2[k] = d * (one - two * t)
            a[k] = keep * a[k] + step * t
    elif act == ANTITANH:
        for k in range(n):
            t, lc = tanh_logcosh(z[k])  # (log cosh)' = tanh
            d1[k] = t
            d2[k] = one - t * t
            a[k] = keep * a[k] + step * lc
    else:
        for k in range(n):
            x = z[k]
            g = sigmoid(x)  # softplus' = sigmoid
            d1[k] = g
            d2[k] = g * (one - g)
            a[k] = keep * a[k] + step * softplus(x)


@njit(**KERNEL)
def activate(Z, A, D1, D2, S, act, rh, accumulate):
    """Rows ``s < S`` of a layer: ``t = σ(Z)``; ``A = t``, or ``A += rh·t`` for a resnet step;
    ``D1 = σ'(Z)``, ``D2 = σ''(Z)``. One branch-free pass over the ``S·w`` elements as one flat
    run (the rows are contiguous), so the loop vectorises whatever the width (the derivatives cost
    two stores when unused; ``A = 0·A + 1·t`` after zeroing is exactly ``t``)."""
    keep = cst(Z, 1.0) if accumulate else cst(Z, 0.0)
    step = rh if accumulate else cst(Z, 1.0)
    _activate_run(flat(Z, S), flat(A, S), flat(D1, S), flat(D2, S), S * Z.shape[1], act, keep, step, not accumulate)


@njit(inline="always", **KERNEL)
def _activate_first_run(z, a, d1, n, act, keep, step, zero_first):
    """`_activate_run` without σ'': for sweeps that need the first derivative only (gradients)."""
    one = cst(z, 1.0)
    if zero_first:
        for k in range(n):
            a[k] = cst(z, 0.0)
    if act == TANH:
        for k in range(n):
            t = tanh(z[k])
            d1[k] = one - t * t
            a[k] = keep * a[k] + step * t
    elif act == SIGMOID:
        for k in range(n):
            t = sigmoid(z[k])
            d1[k] = t * (one - t)
            a[k] = keep * a[k] + step * t
    elif act == ANTITANH:
        for k in range(n):
            t, lc = tanh_logcosh(z[k])
            d1[k] = t
            a[k] = keep * a[k] + step * lc
    else:
        for k in range(n):
            x = z[k]
            d1[k] = sigmoid(x)
            a[k] = keep * a[k] + step * softplus(x)


@njit(**KERNEL)
def activate_first(Z, A, D1, S, act, rh, accumulate):
    """`activate` without σ'' (gradient sweeps: σ'' would be computed and stored for nothing)."""
    keep = cst(Z, 1.0) if accumulate else cst(Z, 0.0)
    step = rh if accumulate else cst(Z, 1.0)
    _activate_first_run(flat(Z, S), flat(A, S), flat(D1, S), S * Z.shape[1], act, keep, step, not accumulate)


@njit(inline="always", **KERNEL)
def _activate_value_run(z, a, n, act, keep, step, zero_first):
    """`activate_value` on ``n`` contiguous elements of 1-d views."""
    if zero_first:
        for k in range(n):
            a[k] = cst(z, 0.0)
    if act == TANH:
        for k in range(n):
            a[k] = keep * a[k] + step * tanh(z[k])
    elif act == SIGMOID:
        for k in range(n):
            a[k] = keep * a[k] + step * sigmoid(z[k])
    elif act == ANTITANH:
        for k in range(n):
            a[k] = keep * a[k] + step * antitanh(z[k])
    else:
        for k in range(n):
            a[k] = keep * a[k] + step * softplus(z[k])


@njit(**KERNEL)
def activate_value(Z, A, S, act, rh, accumulate):
    """`activate` without σ' and σ'': for passes that need the network's value only (H along a
    trajectory), where the derivatives would be a third of the layer's cost."""
    keep = cst(Z, 1.0) if accumulate else cst(Z, 0.0)
    step = rh if accumulate else cst(Z, 1.0)
    _activate_value_run(flat(Z, S), flat(A, S), S * Z.shape[1], act, keep, step, not accumulate)
