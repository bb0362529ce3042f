"""H_θ and the baseline vector field, built from hessQuik layers.

Architecture (the "HINN" network): ``singleLayer(d→w, σ) → resnetNN(w, depth, h, σ) →
singleLayer(w→m, identity)``, each layer with its **own** activation object — hessQuik
activations keep per-call state in backward mode, and layers sharing one object give wrong
backward-mode gradients.

hessQuik defines the architecture and is the reference for input derivatives. The gradient
used in training and prediction is a hand-written backward pass over the same weights
(`ScalarTrunk.value_and_grad`), and the Hessian for implicit integrators' Newton steps a
hand-written forward-Jacobian sweep (`ScalarTrunk.hessian`): plain torch ops, so autograd
differentiates them with respect to the weights, and far cheaper than hessQuik's generic
layer-local tensors (measured: 256×(2→32→32→32→1) Hessian, hessQuik ~230 ms forward mode,
this path well under 1 ms). Tests check both against hessQuik and autograd.

In training, the gradient's own derivative with respect to the weights (what double-backprop
computes) comes from `_ValueAndGrad`, a hand-written adjoint of the backward sweep: a few large
matmuls per layer instead of autograd replaying a dozen small recorded ops, which is what makes
a training step cheaper than double-backprop; `ScalarTrunk.value_and_grad_ops` keeps the plain-op
version as the reference it is tested against.

Inputs are normalised, ``x̂ = (x − shift) / scale``, and the output is scaled by
``energy_scale`` so that training is insensitive to the units of the data.
Shapes follow hessQuik: ``x: (N, d)``, ``dH: (N, d)``, ``d2H: (N, d, d)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hessQuik.activations as hq_act
import hessQuik.layers as hq_lay
import hessQuik.networks as hq_net
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from hinn_core.errors import ConfigError


@dataclass(frozen=True)
class Activation:
    """A hessQuik activation class with σ(z) and σ'(z) in torch for the fast gradient path."""

    hessquik: Callable[[], hq_act.hessQuikActivationFunction]
    sigma: Callable[[Tensor], Tensor]
    # σ'(z) and σ''(z) from (z, σ(z)): tanh and sigmoid are cheaper from σ(z)
    dsigma: Callable[[Tensor, Tensor], Tensor]
    d2sigma: Callable[[Tensor, Tensor], Tensor]


def _antitanh(z: Tensor) -> Tensor:
    a = z.abs()
    return a + torch.log1p(torch.exp(-2.0 * a))


def _antitanh_d2(z: Tensor, s: Tensor) -> Tensor:
    t = torch.tanh(z)
    return 1.0 - t * t


def _softplus_d2(z: Tensor, s: Tensor) -> Tensor:
    g = torch.sigmoid(z)
    return g * (1.0 - g)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(hq_act.tanhActivation, torch.tanh, lambda z, s: 1.0 - s * s,
                       lambda z, s: -2.0 * s * (1.0 - s * s)),
    "softplus": Activation(hq_act.softplusActivation, torch.nn.functional.softplus,
                           lambda z, s: torch.sigmoid(z), _softplus_d2),
    "sigmoid": Activation(hq_act.sigmoidActivation, torch.sigmoid, lambda z, s: s * (1.0 - s),
                          lambda z, s: s * (1.0 - s) * (1.0 - 2.0 * s)),
    # log cosh z (+ ln 2, as hessQuik computes it): even, grows like |z|, σ' = tanh — a potential
    # that keeps its slope outside the training states instead of flattening like tanh
    "antitanh": Activation(hq_act.antiTanhActivation, _antitanh, lambda z, s: torch.tanh(z), _antitanh_d2),
}


def _activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}", field="model.activation"
        ) from None


class ScalarTrunk(nn.Module):
    """``singleLayer → resnetNN → singleLayer`` (hessQuik), d inputs, m outputs.

    `forward`/`value_and_grad` evaluate the same network as `self.net` with plain torch ops;
    `hessquik` calls hessQuik itself (reference derivatives, Hessians).
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, activation: str,
                 resnet_step: float) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ConfigError(f"width and depth must be >= 1, got width={width}, depth={depth}",
                              field="model.width" if width < 1 else "model.depth")
        act = _activation(activation)
        self.act = act
        self.h = float(resnet_step)
        # resnetNN deep-copies its activation per layer; the outer layers get fresh objects too.
        self.net = hq_net.NN(
            hq_lay.singleLayer(in_dim, width, act=act.hessquik()),
            hq_net.resnetNN(width, depth, h=self.h, act=act.hessquik()),
            hq_lay.singleLayer(width, out_dim, act=hq_act.identityActivation()),
        )

    def _weights(self) -> tuple[hq_lay.singleLayer, list[hq_lay.singleLayer], hq_lay.singleLayer]:
        first, resnet, last = self.net[0], self.net[1], self.net[2]
        return first, [layer.layer for layer in resnet], last

    def forward(self, u: Tensor) -> Tensor:
        """Network output ``(N, m)``."""
        first, blocks, last = self._weights()
        sig = self.act.sigma
        a = sig(u @ first.K + first.b)
        for blk in blocks:
            a = a + self.h * sig(a @ blk.K + blk.b)
        return a @ last.K + last.b

    def value_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Output ``(N,)`` and its input gradient ``(N, d)`` for a scalar trunk (m = 1).

        Forward pass storing σ'(z) per layer, then the transposed chain rule, newest layer first.
        With autograd on, both outputs are differentiable in ``u`` and the weights through the
        hand-written adjoint `_ValueAndGrad` (once: no double backward through it).
        """
        first, blocks, last = self._weights()
        weights = [first.K, first.b, last.K, last.b]
        for blk in blocks:
            weights += [blk.K, blk.b]
        if torch.is_grad_enabled() and (u.requires_grad or any(w.requires_grad for w in weights)):
            return _ValueAndGrad.apply(u, self.act, self.h, len(blocks), *weights)
        with torch.no_grad():
            out, g, _ = _sweep(u, self.act, self.h, weights, save=False)
        return out, g

    def value_and_grad_ops(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """`value_and_grad` as plain torch ops (autograd records every one): the reference."""
        first, blocks, last = self._weights()
        sig, dsig = self.act.sigma, self.act.dsigma
        z = u @ first.K + first.b
        a = sig(z)
        slopes = [dsig(z, a)]
        for blk in blocks:
            z = a @ blk.K + blk.b
            s = sig(z)
            slopes.append(dsig(z, s))
            a = a + self.h * s
        out = (a @ last.K + last.b)[:, 0]
        g = last.K[:, 0].expand_as(a)
        for blk, d in zip(reversed(blocks), reversed(slopes[1:]), strict=True):
            g = g + self.h * ((g * d) @ blk.K.T)
        g = (g * slopes[0]) @ first.K.T
        return out, g

    def _forward_jacobians(self, u: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor], Tensor]:
        """Forward pass carrying ∂z_l/∂u: per layer σ'(z_l), σ''(z_l), J_l = ∂z_l/∂u ``(N, w, d)``;
        and the last hidden state's Jacobian ∂a_L/∂u."""
        first, blocks, _ = self._weights()
        sig, dsig, d2sig = self.act.sigma, self.act.dsigma, self.act.d2sigma
        z = u @ first.K + first.b
        s = sig(z)
        jz = first.K.T.expand(u.shape[0], -1, -1)
        d1, d2, jzs = [dsig(z, s)], [d2sig(z, s)], [jz]
        a, ja = s, d1[0].unsqueeze(-1) * jz
        for blk in blocks:
            z = a @ blk.K + blk.b
            s = sig(z)
            jz = blk.K.T @ ja
            d1.append(dsig(z, s))
            d2.append(d2sig(z, s))
            jzs.append(jz)
            a = a + self.h * s
            ja = ja + self.h * d1[-1].unsqueeze(-1) * jz
        return d1, d2, jzs, ja

    def hessian(self, u: Tensor) -> Tensor:
        """∇²_u of a scalar trunk, ``(N, d, d)`` (see `grad_and_hessian`)."""
        return self.grad_and_hessian(u)[1]

    def grad_and_hessian(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """∇_u ``(N, d)`` and ∇²_u ``(N, d, d)`` of a scalar trunk in one sweep.

        ∇² = Σ_l J_lᵀ diag(μ_l ⊙ σ''(z_l)) J_l.

        The linear maps carry no curvature, so the Hessian is a sum over the elementwise
        nonlinearities, with μ_l = ∂out/∂σ(z_l) from one backward sweep. O(N·L·w·d²) — hessQuik's
        layer-local Hessians are O(N·w³) per layer, far slower for small d.
        """
        first, blocks, last = self._weights()
        d1, d2, jzs, _ = self._forward_jacobians(u)
        g = last.K[:, 0].expand(u.shape[0], -1)  # ∂out/∂a_L
        hess = u.new_zeros(u.shape[0], u.shape[1], u.shape[1])
        for i in range(len(blocks), 0, -1):
            mu = self.h * g  # ∂out/∂σ(z_i)
            jz = jzs[i]
            hess = hess + jz.transpose(1, 2) @ ((mu * d2[i]).unsqueeze(-1) * jz)
            g = g + (mu * d1[i]) @ blocks[i - 1].K.T
        jz = jzs[0]
        hess = hess + jz.transpose(1, 2) @ ((g * d2[0]).unsqueeze(-1) * jz)
        return (g * d1[0]) @ first.K.T, hess

    def jacobian(self, u: Tensor) -> Tensor:
        """∂out/∂u of a vector trunk, ``(N, m, d)`` (forward-mode sweep)."""
        _, _, _, ja = self._forward_jacobians(u)
        return self.net[2].K.T @ ja

    def hessquik(self, u: Tensor, *, do_gradient: bool = True, do_Hessian: bool = False,
                 forward_mode: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """hessQuik's own call: ``f (N, m)``, ``df (N, d, m)``, ``d2f (N, d, d, m)``."""
        return self.net(u, do_gradient=do_gradient, do_Hessian=do_Hessian, forward_mode=forward_mode)


def _sweep(u: Tensor, act: Activation, h: float, weights: list[Tensor], save: bool
           ) -> tuple[Tensor, Tensor, tuple[list[Tensor], ...] | None]:
    """Output, input gradient and (``save``) what `_ValueAndGrad.backward` needs.

    ``weights = [K0, b0, Kout, bout, K1, b1, …, KL, bL]``. Per layer l: the hidden state a_l, σ'(z_l),
    σ''(z_l); from the backward sweep g_l = ∂out/∂a_l and e_l = g_l ⊙ σ'(z_l).
    """
    K0, b0, Kout, bout = weights[:4]
    Ks, bs = weights[4::2], weights[5::2]
    z = torch.addmm(b0, u, K0)
    a = act.sigma(z)
    s1 = [act.dsigma(z, a)]
    s2 = [act.d2sigma(z, a)] if save else []
    hidden = [a]
    for K, b in zip(Ks, bs, strict=True):
        z = torch.addmm(b, a, K)
        t = act.sigma(z)
        s1.append(act.dsigma(z, t))
        if save:
            s2.append(act.d2sigma(z, t))
        a = torch.add(a, t, alpha=h)
        hidden.append(a)
    out = torch.addmm(bout, a, Kout)[:, 0]
    g = Kout[:, 0].expand_as(a)
    gs, es = [g], []
    for layer in range(len(Ks), 0, -1):
        e = g * s1[layer]
        g = torch.addmm(g, e, Ks[layer - 1].T, alpha=h)
        gs.append(g)
        es.append(e)
    e0 = g * s1[0]
    gu = e0 @ K0.T
    if not save:
        return out, gu, None
    gs.reverse()  # gs[l] = g_l
    es.reverse()  # es[l - 1] = e_l
    return out, gu, (hidden, s1, s2, gs, [e0, *es])


class _ValueAndGrad(torch.autograd.Function):
    """(out, ∇_u out) of a scalar trunk with a hand-written reverse-mode derivative.

    The adjoint of the backward sweep g_{l−1} = g_l + h·(g_l ⊙ σ'(z_l)) K_lᵀ, ∇_u = (g_0 ⊙ σ'(z_0)) K_0ᵀ,
    runs first (l = 1 … L), turning the cotangent of ∇_u into cotangents of the weights, of g_L
    (= Kout) and of σ'(z_l); the adjoint of the forward pass then carries those (σ'' enters here)
    together with the output's cotangent down to u. Equal to double-backprop to round-off (tested).
    """

    @staticmethod
    def forward(ctx: Any, u: Tensor, act: Activation, h: float, n_blocks: int, *weights: Tensor
                ) -> tuple[Tensor, Tensor]:
        out, gu, saved = _sweep(u, act, h, list(weights), save=True)
        assert saved is not None
        hidden, s1, s2, gs, es = saved
        ctx.h, ctx.n_blocks = h, n_blocks
        ctx.save_for_backward(u, *weights, *hidden, *s1, *s2, *gs, *es)
        return out, gu

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor | None, d_gu: Tensor | None) -> tuple[Tensor | None, ...]:
        h, L = ctx.h, ctx.n_blocks
        saved = list(ctx.saved_tensors)
        u, weights = saved[0], saved[1 : 5 + 2 * L]
        rest = saved[5 + 2 * L :]
        hidden, s1, s2, gs, es = (rest[i * (L + 1) : (i + 1) * (L + 1)] for i in range(5))
        K0, _, Kout, _ = weights[:4]
        Ks = weights[4::2]
        N, w = hidden[0].shape
        if d_out is None:
            d_out = u.new_zeros(N)
        if d_gu is None:
            d_gu = torch.zeros_like(u)
        dK: list[Tensor] = []
        # adjoint of the backward sweep, l = 1 … L
        de0 = d_gu @ K0                      # ∂/∂e_0 of ∇_u = e_0 K0ᵀ
        dg = de0 * s1[0]                     # ∂/∂g_0
        ds1 = [de0 * gs[0]]                  # ∂/∂σ'(z_0)
        for layer in range(1, L + 1):
            de = torch.mm(dg, Ks[layer - 1]).mul_(h)
            dK.append(torch.mm(dg.T, es[layer]).mul_(h))
            dg = torch.addcmul(dg, de, s1[layer])
            ds1.append(de * gs[layer])
        dKout = torch.addmm(dg.sum(0)[:, None], hidden[L].T, d_out[:, None])  # g_L = Kout; out = a_L Kout + b
        dbout = d_out.sum(0, keepdim=True)
        # adjoint of the forward pass, l = L … 1, then the first layer
        da = torch.outer(d_out, Kout[:, 0])
        dbs: list[Tensor] = [d_out] * L
        for layer in range(L, 0, -1):
            dz = torch.addcmul(ds1[layer] * s2[layer], da, s1[layer], value=h)
            dK[layer - 1] = torch.addmm(dK[layer - 1], hidden[layer - 1].T, dz)
            dbs[layer - 1] = dz.sum(0)
            da = torch.addmm(da, dz, Ks[layer - 1].T)
        dz0 = torch.addcmul(ds1[0] * s2[0], da, s1[0])
        du = dz0 @ K0.T
        dK0 = torch.addmm(torch.mm(d_gu.T, es[0]), u.T, dz0)
        grads: list[Tensor | None] = [du, None, None, None, dK0, dz0.sum(0), dKout, dbout]
        for k in range(L):
            grads += [dK[k], dbs[k]]
        return tuple(grads)


class _Normalised(nn.Module):
    """Input shift/scale and output scale as buffers, so they travel with the weights."""

    def __init__(self, dof: int) -> None:
        super().__init__()
        self.dof = dof
        self.register_buffer("shift", torch.zeros(2 * dof))
        self.register_buffer("scale", torch.ones(2 * dof))
        self.register_buffer("out_scale", torch.ones(()))
        self.register_buffer("energy_offset", torch.zeros(()))

    def set_normalisation(self, shift: Tensor, scale: Tensor, out_scale: float | Tensor) -> None:
        with torch.no_grad():
            self.shift.copy_(shift)
            self.scale.copy_(scale)
            self.out_scale.copy_(torch.as_tensor(out_scale))

    def _hat(self, q: Tensor, p: Tensor) -> Tensor:
        return (torch.cat([q, p], dim=-1) - self.shift) / self.scale


class HamiltonianNet(_Normalised):
    """General H_θ(q, p) = out_scale · trunk(x̂) + energy_offset (energy_offset fixed after training)."""

    separable = False

    def __init__(self, dof: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                 resnet_step: float = 0.5) -> None:
        super().__init__(dof)
        self.trunk = ScalarTrunk(2 * dof, 1, width, depth, activation, resnet_step)

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        """H ``(N,)``."""
        return self.out_scale * self.trunk(self._hat(q, p))[:, 0] + self.energy_offset

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(∂H/∂q, ∂H/∂p), each ``(N, dof)``; the fast hand-written path."""
        _, g = self.trunk.value_and_grad(self._hat(q, p))
        g = g * (self.out_scale / self.scale)
        return g[:, : self.dof], g[:, self.dof :]

    def grad_hessquik(self, q: Tensor, p: Tensor, forward_mode: bool = False) -> Tensor:
        """∇H ``(N, 2·dof)`` computed by hessQuik (reference path)."""
        _, df, _ = self.trunk.hessquik(self._hat(q, p), forward_mode=forward_mode)
        return df[:, :, 0] * (self.out_scale / self.scale)

    def hessian(self, q: Tensor, p: Tensor) -> Tensor:
        """∇²H ``(N, 2·dof, 2·dof)``; the fast hand-written path."""
        s = self.scale
        return self.trunk.hessian(self._hat(q, p)) * self.out_scale / (s[:, None] * s[None, :])

    def grad_and_hessian(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(∂H/∂q, ∂H/∂p, ∇²H) from one sweep (implicit integrators' Newton steps)."""
        s = self.scale
        g, hess = self.trunk.grad_and_hessian(self._hat(q, p))
        g = g * (self.out_scale / s)
        return g[:, : self.dof], g[:, self.dof :], hess * self.out_scale / (s[:, None] * s[None, :])

    def hessian_hessquik(self, q: Tensor, p: Tensor, forward_mode: bool = True) -> Tensor:
        """∇²H ``(N, 2·dof, 2·dof)`` computed by hessQuik (reference path)."""
        _, _, d2f = self.trunk.hessquik(self._hat(q, p), do_Hessian=True, forward_mode=forward_mode)
        s = self.scale
        return d2f[..., 0] * self.out_scale / (s[:, None] * s[None, :])


class SeparableHamiltonianNet(_Normalised):
    """H_θ(q, p) = out_scale · (T_θ(p̂) + V_φ(q̂)) + energy_offset: two trunks, one per half."""

    separable = True

    def __init__(self, dof: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                 resnet_step: float = 0.5) -> None:
        super().__init__(dof)
        self.kinetic = ScalarTrunk(dof, 1, width, depth, activation, resnet_step)
        self.potential = ScalarTrunk(dof, 1, width, depth, activation, resnet_step)

    def _q_hat(self, q: Tensor) -> Tensor:
        return (q - self.shift[: self.dof]) / self.scale[: self.dof]

    def _p_hat(self, p: Tensor) -> Tensor:
        return (p - self.shift[self.dof :]) / self.scale[self.dof :]

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor:
        t = self.kinetic(self._p_hat(p))[:, 0]
        v = self.potential(self._q_hat(q))[:, 0]
        return self.out_scale * (t + v) + self.energy_offset

    def grad_q(self, q: Tensor) -> Tensor:
        """∂H/∂q = V'(q), ``(N, dof)``."""
        _, g = self.potential.value_and_grad(self._q_hat(q))
        return g * (self.out_scale / self.scale[: self.dof])

    def grad_p(self, p: Tensor) -> Tensor:
        """∂H/∂p = T'(p), ``(N, dof)``."""
        _, g = self.kinetic.value_and_grad(self._p_hat(p))
        return g * (self.out_scale / self.scale[self.dof :])

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.grad_q(q), self.grad_p(p)

    def grad_hessquik(self, q: Tensor, p: Tensor, forward_mode: bool = False) -> Tensor:
        _, dv, _ = self.potential.hessquik(self._q_hat(q), forward_mode=forward_mode)
        _, dt, _ = self.kinetic.hessquik(self._p_hat(p), forward_mode=forward_mode)
        return torch.cat([dv[:, :, 0], dt[:, :, 0]], dim=1) * (self.out_scale / self.scale)

    def _block_diag(self, hv: Tensor, ht: Tensor) -> Tensor:
        n = self.dof
        out = hv.new_zeros(hv.shape[0], 2 * n, 2 * n)
        out[:, :n, :n] = hv
        out[:, n:, n:] = ht
        s = self.scale
        return out * self.out_scale / (s[:, None] * s[None, :])

    def hessian(self, q: Tensor, p: Tensor) -> Tensor:
        """Block-diagonal ∇²H = diag(V'', T''); the fast hand-written path."""
        return self._block_diag(self.potential.hessian(self._q_hat(q)), self.kinetic.hessian(self._p_hat(p)))

    def grad_and_hessian(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        gv, hv = self.potential.grad_and_hessian(self._q_hat(q))
        gt, ht = self.kinetic.grad_and_hessian(self._p_hat(p))
        n = self.dof
        return (gv * (self.out_scale / self.scale[:n]), gt * (self.out_scale / self.scale[n:]),
                self._block_diag(hv, ht))

    def hessian_hessquik(self, q: Tensor, p: Tensor, forward_mode: bool = True) -> Tensor:
        _, _, d2v = self.potential.hessquik(self._q_hat(q), do_Hessian=True, forward_mode=forward_mode)
        _, _, d2t = self.kinetic.hessquik(self._p_hat(p), do_Hessian=True, forward_mode=forward_mode)
        return self._block_diag(d2v[..., 0], d2t[..., 0])


class VectorFieldNet(_Normalised):
    """Unconstrained baseline: (dq/dt, dp/dt) = out_scale · trunk(x̂), no Hamiltonian structure.

    ``out_scale`` is a per-component vector here (``(2·dof,)``) matched to the data's rates.
    """

    separable = False

    def __init__(self, dof: int, width: int = 64, depth: int = 2, activation: str = "tanh",
                 resnet_step: float = 0.5) -> None:
        super().__init__(dof)
        self.register_buffer("out_scale", torch.ones(2 * dof))
        self.trunk = ScalarTrunk(2 * dof, 2 * dof, width, depth, activation, resnet_step)

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        f = self.trunk(self._hat(q, p)) * self.out_scale
        return f[:, : self.dof], f[:, self.dof :]

    def jacobian(self, q: Tensor, p: Tensor) -> Tensor:
        """∂f/∂x ``(N, 2·dof, 2·dof)`` (row = output component); the fast forward-mode path."""
        return self.trunk.jacobian(self._hat(q, p)) * self.out_scale[:, None] / self.scale[None, :]

    def jacobian_hessquik(self, q: Tensor, p: Tensor) -> Tensor:
        """The same Jacobian from hessQuik's forward mode (reference path)."""
        _, df, _ = self.trunk.hessquik(self._hat(q, p), forward_mode=True)
        # hessQuik: df[n, i, j] = ∂f_j/∂x̂_i
        return df.transpose(1, 2) * self.out_scale[:, None] / self.scale[None, :]
