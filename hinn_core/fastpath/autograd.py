"""The compiled rollout as one differentiable torch op: the fast training path.

`rollout(model, q0, p0, h)` returns the same states as `DynamicsModel.rollout` (computed by the
prediction kernel) and, on ``backward``, the gradients of the start states and of every weight
from one compiled reverse sweep (`hinn_core.fastpath.rollout_vjp`) instead of autograd replaying
a few thousand recorded ops. The torch path stays the reference: tests check the two to round-off.
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
