"""The compiled rollout as differentiable torch ops: the fast training path.

`rollout(model, q0, p0, h)` returns the same states as `DynamicsModel.rollout` (computed by the
prediction kernel) and, on ``backward``, the gradients of the start states and of every weight
from one compiled reverse sweep (`hinn_core.fastpath.rollout_vjp`) instead of autograd replaying
a few thousand recorded ops. `rollout_sse` is the training loss's sum of squares with the loss
fused into that sweep: its forward computes value and gradients in one pass (the rollout is run
once, not twice), its backward only scales them. The torch path stays the reference: tests check
them to round-off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from hinn_core import fastpath
from hinn_core.integrators import Integrator


class _CompiledRollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, model: Any, integrator: Any, q0: Tensor, p0: Tensor, h: Tensor, *weights: Tensor
                ) -> tuple[Tensor, Tensor]:
        q0n, p0n, hn = (t.detach().numpy() for t in (q0, p0, h))
        q, p, _ = fastpath.rollout(model, q0n, p0n, hn, integrator, parallel=None, energy=False)
        ctx.model, ctx.integrator, ctx.args = model, integrator, (q0n, p0n, hn)
        return torch.from_numpy(q), torch.from_numpy(p)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gq: Tensor | None, gp: Tensor | None) -> tuple[Tensor | None, ...]:
        q0n, p0n, hn = ctx.args
        shape = (q0n.shape[0], hn.shape[-1] + 1, q0n.shape[1])
        gqn = np.zeros(shape, q0n.dtype) if gq is None else gq.numpy()
        gpn = np.zeros(shape, q0n.dtype) if gp is None else gp.numpy()
        dq0, dp0, grads = fastpath.rollout_vjp(ctx.model, q0n, p0n, hn, gqn, gpn, ctx.integrator)
        need = ctx.needs_input_grad
        return (None, None, torch.from_numpy(dq0) if need[2] else None,
                torch.from_numpy(dp0) if need[3] else None, None, *(torch.from_numpy(g) for g in grads))


class _CompiledSSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, model: Any, integrator: Any, q0: Tensor, p0: Tensor, h: Tensor, target: Tensor,
                *weights: Tensor) -> Tensor:
        q0n, p0n, hn, tn = (t.detach().numpy() for t in (q0, p0, h, target))
        sse, dq0, dp0, grads = fastpath.rollout_sse(model, q0n, p0n, hn, tn, integrator)
        ctx.grads = (torch.from_numpy(dq0), torch.from_numpy(dp0), *(torch.from_numpy(g) for g in grads))
        return torch.tensor(sse, dtype=q0.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        need = ctx.needs_input_grad
        dq0, dp0, *grads = ctx.grads
        return (None, None, dq0 * g if need[2] else None, dp0 * g if need[3] else None, None, None,
                *(w * g for w in grads))


def supports(model: Any, integrator: str | Integrator | None = None) -> bool:
    """The compiled adjoint covers this model and integrator (see `fastpath.supports_training`)."""
    return fastpath.supports_training(model, integrator)


def rollout(model: Any, q0: Tensor, p0: Tensor, h: Tensor, integrator: str | Integrator | None = None
            ) -> tuple[Tensor, Tensor]:
    """`DynamicsModel.rollout` with a compiled backward: ``q, p (B, T+1, dof)``, differentiable in
    ``q0, p0`` and the weights (not in ``h``). Raises `IntegrationError` as the torch path does."""
    integrator = integrator if integrator is not None else model.integrator
    return _CompiledRollout.apply(model, integrator, q0, p0, torch.as_tensor(h, dtype=q0.dtype),
                                  *fastpath.parameters(model))


def rollout_sse(model: Any, q0: Tensor, p0: Tensor, h: Tensor, target: Tensor,
                integrator: str | Integrator | None = None) -> Tensor:
    """``Σ_{b, k≥1} |x_k − target[b, k−1]|²`` over the rollout from ``q0, p0 (B, dof)``, ``target
    (B, T, 2·dof)`` (q then p): a scalar differentiable in ``q0, p0`` and the weights, value and
    gradient from one compiled pass."""
    integrator = integrator if integrator is not None else model.integrator
    h = torch.as_tensor(h, dtype=q0.dtype)
    weights = fastpath.parameters(model)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q0, p0, *weights)):
        return _CompiledSSE.apply(model, integrator, q0, p0, h, target, *weights)
    # evaluation only: the forward kernel
    q, p, _ = fastpath.rollout(model, *(t.detach().numpy() for t in (q0, p0, h)), integrator, energy=False)
    tn, n = target.detach().numpy(), q0.shape[1]
    return torch.tensor(float(((q[:, 1:] - tn[..., :n]) ** 2).sum() + ((p[:, 1:] - tn[..., n:]) ** 2).sum()),
                        dtype=q0.dtype)
