"""The vector field (dq/dt, dp/dt) of a packed model on a block of states ``X: (S, 2n)``, compiled.

Mirrors `hinn_core.networks` and `hinn_core.dynamics`: x̂ = (x − shift)/scale; for H nets
(dq/dt, dp/dt) = (∂H/∂p, −∂H/∂q) with ∇H = ∇trunk · out_scale/scale; for the separable net
V_φ(q̂) is trunk 0 and T_θ(p̂) trunk 1; the vector field is out_scale ⊙ trunk(x̂). Jacobians are
∂(dq/dt, dp/dt)/∂(q, p), rows = rate components, as `Dynamics.jacobian`.

``nrm = (shift, scale, osc, gsc)``: ``osc`` the output scale per component (H nets: repeated),
``gsc = out_scale/scale``. Field workspace ``fw = (U, gu, val, val2, hess, F, jac)``.
"""

from __future__ import annotations

from numba import njit

from hinn_core.fastpath import _trunk as tk
from hinn_core.fastpath._math import KERNEL, cst

GENERAL, SEPARABLE, VECTOR = 0, 1, 2


@njit(inline="always", **KERNEL)
def normalise(X, S, off, cnt, nrm, U):
    """``U[s, c] = (X[s, off+c] − shift[off+c]) / scale[off+c]`` for ``c < cnt``."""
    shift, scale = nrm[0], nrm[1]
    for s in range(S):
        for c in range(cnt):
            U[s, c] = (X[s, off + c] - shift[off + c]) / scale[off + c]


@njit(**KERNEL)
def half_grad(net, nrm, t, act, rh, n, X, S, ws, fw, R):
    """Separable net, trunk ``t``: 0 → −V'(q) into ``R[:, n:]``, V's output into ``fw[2]``;
    1 → T'(p) into ``R[:, :n]``, T's output into ``fw[3]``."""
    U, gu = fw[0], fw[1]
    val = fw[2] if t == 0 else fw[3]
    off = t * n
    normalise(X, S, off, n, nrm, U)
    tk.grad(net, t, act, rh, U, S, ws, val, gu)
    gsc = nrm[3]
    if t == 0:
        for s in range(S):
            for c in range(n):
                R[s, n + c] = -(gu[s, c] * gsc[c])
    else:
        for s in range(S):
            for c in range(n):
                R[s, c] = gu[s, c] * gsc[n + c]


@njit(**KERNEL)
def rates(net, nrm, arch, act, rh, n, X, S, ws, fw, R):
    """``R[s] = (dq/dt, dp/dt)`` at ``X[s]``, ``(S, 2n)``; the trunk outputs stay in ``fw[2]``
    (and T's in ``fw[3]``), so `energy_from_outputs` gives H at ``X`` for free."""
    U, gu, val, F = fw[0], fw[1], fw[2], fw[5]
    if arch == SEPARABLE:
        half_grad(net, nrm, 0, act, rh, n, X, S, ws, fw, R)
        half_grad(net, nrm, 1, act, rh, n, X, S, ws, fw, R)
        return
    normalise(X, S, 0, 2 * n, nrm, U)
    if arch == GENERAL:
        tk.grad(net, 0, act, rh, U, S, ws, val, gu)
        gsc = nrm[3]
        for s in range(S):
            for c in range(n):
                R[s, c] = gu[s, n + c] * gsc[n + c]
                R[s, n + c] = -(gu[s, c] * gsc[c])
    else:
        tk.vector(net, 0, act, rh, U, S, ws, F)
        osc = nrm[2]
        for s in range(S):
            for c in range(2 * n):
                R[s, c] = F[s, c] * osc[c]


@njit(inline="always", **KERNEL)
def _scaled_hessian(hess, s, lo, cnt, nrm, out):
    """``out[i, j] = hess[s, i, j]·out_scale / (scale[lo+i]·scale[lo+j])`` (as `HamiltonianNet.hessian`)."""
    scale, osc = nrm[1], nrm[2][0]
    for i in range(cnt):
        for j in range(cnt):
            out[i, j] = hess[s, i, j] * osc / (scale[lo + i] * scale[lo + j])


@njit(**KERNEL)
def rates_jacobian(net, nrm, arch, act, rh, n, X, S, ws, fw, R, J, Hs):
    """Rates ``R (S, 2n)`` and their Jacobian ``J (S, 2n, 2n)`` at ``X``; ``Hs (2n, 2n)`` scratch."""
    U, gu, val, hess, F, jac = fw[0], fw[1], fw[2], fw[4], fw[5], fw[6]
    gsc, scale, osc = nrm[3], nrm[1], nrm[2]
    m = 2 * n
    zero = cst(X, 0.0)
    if arch == VECTOR:
        normalise(X, S, 0, m, nrm, U)
        tk.vector_jacobian(net, 0, act, rh, U, S, ws, F, jac)
        for s in range(S):
            for o in range(m):
                R[s, o] = F[s, o] * osc[o]
                for c in range(m):
                    J[s, o, c] = jac[s, o, c] * osc[o] / scale[c]
        return
    if arch == GENERAL:
        normalise(X, S, 0, m, nrm, U)
        tk.grad_hessian(net, 0, act, rh, U, S, ws, val, gu, hess)
        for s in range(S):
            for c in range(n):
                R[s, c] = gu[s, n + c] * gsc[n + c]
                R[s, n + c] = -(gu[s, c] * gsc[c])
            _scaled_hessian(hess, s, 0, m, nrm, Hs)
            for i in range(n):  # J·∇²H: rows (∂²H/∂p∂·, −∂²H/∂q∂·)
                for c in range(m):
                    J[s, i, c] = Hs[n + i, c]
                    J[s, n + i, c] = -Hs[i, c]
        return
    # separable: ∇²H = diag(V'', T''), so J = [[0, T''], [−V'', 0]]
    for t in range(2):
        off = t * n
        normalise(X, S, off, n, nrm, U)
        tk.grad_hessian(net, t, act, rh, U, S, ws, val, gu, hess)
        for s in range(S):
            _scaled_hessian(hess, s, off, n, nrm, Hs)
            for i in range(n):
                if t == 0:
                    R[s, n + i] = -(gu[s, i] * gsc[i])
                else:
                    R[s, i] = gu[s, i] * gsc[n + i]
                for c in range(n):
                    if t == 0:
                        J[s, n + i, c] = -Hs[i, c]
                        J[s, n + i, n + c] = zero
                    else:
                        J[s, i, n + c] = Hs[i, c]
                        J[s, i, c] = zero


@njit(inline="always", **KERNEL)
def energy_from_outputs(nrm, arch, offset, S, fw, H):
    """H from the trunk outputs a gradient sweep left in ``fw`` (as `HamiltonianNet.hamiltonian`)."""
    osc = nrm[2][0]
    val, val2 = fw[2], fw[3]
    for s in range(S):
        H[s] = osc * val[s] + offset if arch == GENERAL else osc * (val2[s] + val[s]) + offset


@njit(**KERNEL)
def energy(net, nrm, arch, act, rh, n, offset, X, S, ws, fw, H):
    """Learned H at ``X[s]`` (physical sign, calibrated constant): ``H (S,)``; H nets only."""
    U = fw[0]
    if arch == GENERAL:
        normalise(X, S, 0, 2 * n, nrm, U)
        tk.value(net, 0, act, rh, U, S, ws, fw[2])
    else:
        normalise(X, S, n, n, nrm, U)
        tk.value(net, 1, act, rh, U, S, ws, fw[3])
        normalise(X, S, 0, n, nrm, U)
        tk.value(net, 0, act, rh, U, S, ws, fw[2])
    energy_from_outputs(nrm, arch, offset, S, fw, H)
