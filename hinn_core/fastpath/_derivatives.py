"""∇H and ∇²H of a packed H net at given states, compiled: the sweep implicit midpoint's Newton
steps take inside the rollout kernels (`_trunk.grad_hessian`: forward, tangents ∂z_l/∂u, one
backward sweep accumulating Σ_l J_lᵀ diag(μ_l ⊙ σ''(z_l)) J_l), exposed in the physical units
of the torch nets' ``grad_and_hessian`` so that callers and benchmarks can use it directly.
"""

from __future__ import annotations

from numba import njit

from hinn_core.fastpath import _field as fd
from hinn_core.fastpath import _trunk as tk
from hinn_core.fastpath._math import JIT, KERNEL, cst
from hinn_core.fastpath._rollout import _sweep_workspaces


@njit(**KERNEL)
def _block(net, nrm, arch, act, rh, n, X, S, ws, fw, G, Hn):
    """``G (S, 2n) = ∇H`` and ``Hn (S, 2n, 2n) = ∇²H`` at ``X (S, 2n)``; for the separable net
    ∇²H = diag(V'', T''), trunk 0 on q and trunk 1 on p."""
    U, gu, val, hess = fw[0], fw[1], fw[2], fw[4]
    gsc = nrm[3]
    m = 2 * n
    if arch == fd.GENERAL:
        fd.normalise(X, S, 0, m, nrm, U)
        tk.grad_hessian(net, 0, act, rh, U, S, ws, val, gu, hess)
        for s in range(S):
            for c in range(m):
                G[s, c] = gu[s, c] * gsc[c]
            fd._scaled_hessian(hess, s, 0, m, nrm, Hn[s])
        return
    for s in range(S):
        for i in range(m):
            for j in range(m):
                Hn[s, i, j] = cst(X, 0.0)
    for t in range(2):
        off = t * n
        fd.normalise(X, S, off, n, nrm, U)
        tk.grad_hessian(net, t, act, rh, U, S, ws, val, gu, hess)
        for s in range(S):
            for i in range(n):
                G[s, off + i] = gu[s, i] * gsc[off + i]
            fd._scaled_hessian(hess, s, off, n, nrm, Hn[s, off:off + n, off:off + n])


@njit(nogil=True, **JIT)
def grad_hessian(net, nrm, arch, act, rh, n, X, G, Hn, block, blk0, blk1):
    """`_block` over blocks ``blk0 ≤ b < blk1`` of ``block`` rows of ``X (B, 2n)``; one workspace
    per call (per thread: the GIL is released, as in the rollout kernels)."""
    B = X.shape[0]
    ws, fw = _sweep_workspaces(net, n, block, X)
    for b in range(blk0, blk1):
        r0 = b * block
        S = min(block, B - r0)
        _block(net, nrm, arch, act, rh, n, X[r0:r0 + S], S, ws, fw, G[r0:r0 + S], Hn[r0:r0 + S])
