"""Learned dynamics: a field (H_θ or an unconstrained vector field) plus an integrator.

Architectures (`ARCHITECTURES`):

- ``hinn`` — general H_θ(q, p), trained through the integrator on rolled-out states;
- ``hinn-separable`` — H = T_θ(p) + V_φ(q), so leapfrog and symplectic Euler are explicit;
- ``hnn`` — the baseline of Greydanus et al. (2019): the same H_θ, trained to match
  finite-difference time derivatives (no integrator in training);
- ``mlp`` — an unconstrained vector field, trained like ``hinn`` through the same integrator.

Energy constant: H_θ is identifiable only up to an additive constant. After training it is
fixed by `calibrate_energy`: when the data come from a known system, the constant that best fits
the true energy over the training states (least squares: mean of H_true − H_θ); otherwise the
constant that gives H_θ zero mean over the training states. The value is stored as
``energy_offset``. H is always reported with the physical sign (dq/dt = +∂H/∂p).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hinn_core.data import check_real
from hinn_core.dynamics import Dynamics, HamiltonianDynamics, VectorFieldDynamics
from hinn_core.errors import ConfigError
from hinn_core.integrators import INTEGRATORS, Integrator, get_integrator, integrate
from hinn_core.networks import ACTIVATIONS, HamiltonianNet, SeparableHamiltonianNet, VectorFieldNet

ARCHITECTURES: dict[str, str] = {
    "hinn": "general H_θ(q, p) on hessQuik layers, trained through the integrator",
    "hinn-separable": "H = T_θ(p) + V_φ(q), trained through the integrator",
    "hnn": "baseline (Greydanus et al. 2019): same H_θ, finite-difference derivative-matching loss",
    "mlp": "baseline: unconstrained neural vector field, trained through the integrator",
}

#: Integrator used when a spec leaves it open: symplectic and explicit where H is separable,
#: symplectic for any H (implicit midpoint) for the general H_θ, RK4 for the two baselines.
DEFAULT_INTEGRATOR: dict[str, str] = {
    "hinn": "implicit_midpoint",
    "hinn-separable": "leapfrog",
    "hnn": "rk4",
    "mlp": "rk4",
}

#: Activation used when a spec leaves it open, as the science benchmark measured when the defaults
#: were chosen (`bench.science.run --hinn-spec` with each activation; that run's figures): log cosh
#: (``antitanh``) keeps its slope outside the training states, where tanh flattens a separable H
#: (spring σ = 0.1 state MSE 7.7e-3 vs 0.16, pendulum 9.4e-4 vs 8.6e-2); the general H keeps tanh
#: (non-separable H: state MSE 2.9e-5 vs 7.1e-2 with log cosh); HNN is the published tanh network;
#: the unconstrained field uses hinn-separable's.
DEFAULT_ACTIVATION: dict[str, str] = {
    "hinn": "tanh",
    "hinn-separable": "antitanh",
    "hnn": "tanh",
    "mlp": "antitanh",
}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's module before loading its weights."""

    #: the defaults are the science benchmark's best recipe (docs/benchmarks.md), also the CLI's and
    #: the API's: a separable H through leapfrog. H that couples q and p needs ``architecture="hinn"``.
    architecture: str = "hinn-separable"
    dof: int = 1
    width: int = 32
    depth: int = 2
    #: None: the architecture's own (`DEFAULT_ACTIVATION`)
    activation: str | None = None
    resnet_step: float = 0.5
    integrator: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"unknown architecture '{self.architecture}'; choose one of {sorted(ARCHITECTURES)}",
                field="model.architecture",
            )
        if self.integrator is None:
            self.integrator = DEFAULT_INTEGRATOR[self.architecture]
        if self.integrator not in INTEGRATORS:
            raise ConfigError(
                f"unknown integrator '{self.integrator}'; choose one of {sorted(INTEGRATORS)}",
                field="integrator",
            )
        if self.activation is None:
            self.activation = DEFAULT_ACTIVATION[self.architecture]
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation '{self.activation}'; choose one of {sorted(ACTIVATIONS)}",
                field="model.activation",
            )
        for name, lo, hi in (("dof", 1, 64), ("width", 1, 4096), ("depth", 1, 64)):
            value = getattr(self, name)
            if isinstance(value, np.integer):  # numpy's integers are integers (generate_dataset takes them)
                value = int(value)
                object.__setattr__(self, name, value)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"must be an integer in [{lo}, {hi}], got {value!r}", field=f"model.{name}")
        step = check_real(self.resnet_step, "model.resnet_step", ConfigError)
        if not 0 < step <= 10:
            raise ConfigError(f"must be in (0, 10], got {self.resnet_step!r}", field="model.resnet_step")
        object.__setattr__(self, "resnet_step", step)  # a plain float: the spec is stored as JSON

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def is_hamiltonian(self) -> bool:
        return self.architecture != "mlp"


class DynamicsModel(nn.Module):
    """A trained (or trainable) model: ``field`` gives the vector field, ``integrator`` rolls it out."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        net_cls = {
            "hinn": HamiltonianNet,
            "hnn": HamiltonianNet,
            "hinn-separable": SeparableHamiltonianNet,
            "mlp": VectorFieldNet,
        }[spec.architecture]
        self.field = net_cls(spec.dof, spec.width, spec.depth, spec.activation, spec.resnet_step)
        self.integrator: Integrator = get_integrator(spec.integrator or "")

    @property
    def dof(self) -> int:
        return self.spec.dof

    @property
    def dtype(self) -> torch.dtype:
        return self.field.shift.dtype

    @property
    def device(self) -> torch.device:
        return self.field.shift.device

    def dynamics(self) -> Dynamics:
        if self.spec.is_hamiltonian:
            return HamiltonianDynamics(self.field)
        return VectorFieldDynamics(self.field)

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(dq/dt, dp/dt) of the learned field."""
        return self.dynamics().rates(q, p)

    def hamiltonian(self, q: Tensor, p: Tensor) -> Tensor | None:
        """Learned H ``(N,)`` with the physical sign, or None for the ``mlp`` baseline."""
        if not self.spec.is_hamiltonian:
            return None
        return self.field.hamiltonian(q, p)

    def rollout(self, q0: Tensor, p0: Tensor, h: Tensor, integrator: str | Integrator | None = None
                ) -> tuple[Tensor, Tensor]:
        """Integrate from ``(B, dof)`` over steps ``h: (T,)`` or ``(B, T)`` → ``(B, T+1, dof)``."""
        return integrate(integrator or self.integrator, self.dynamics(), q0, p0, h)

    # -- data-dependent set-up ------------------------------------------------------------------
    def fit_normalisation(self, states: np.ndarray, rates: np.ndarray) -> None:
        """Shift/scale inputs to zero mean, unit spread; scale outputs to the data's typical rates.

        ``states, rates: (N, 2·dof)``. For H nets the output scale is chosen so that the trunk's
        input gradient is O(1): ∂H/∂q̂_i = scale(q_i)·∂H/∂q_i ≈ scale(q_i)·std(ṗ_i), likewise for p.
        """
        n = self.dof
        shift = states.mean(axis=0)
        spread = states.std(axis=0)
        scale = np.maximum(spread, 1e-3 * max(float(spread.max()), 1e-12))
        scale = np.where(scale > 0, scale, 1.0)
        rate_std = np.maximum(rates.std(axis=0), 1e-12)
        if self.spec.is_hamiltonian:
            # ∂H/∂q_i = −ṗ_i and ∂H/∂p_i = q̇_i
            typical = np.concatenate([scale[:n] * rate_std[n:], scale[n:] * rate_std[:n]])
            out_scale: Any = float(typical.mean())
        else:
            out_scale = torch.as_tensor(rate_std, dtype=self.dtype)
        self.field.set_normalisation(
            torch.as_tensor(shift, dtype=self.dtype), torch.as_tensor(scale, dtype=self.dtype),
            out_scale if isinstance(out_scale, Tensor) else torch.tensor(out_scale, dtype=self.dtype),
        )

    @torch.no_grad()
    def calibrate_energy(self, states: np.ndarray, true_energy: np.ndarray | None = None) -> float:
        """Fix H_θ's additive constant (rule in the module docstring); returns ``energy_offset``."""
        if not self.spec.is_hamiltonian:
            return 0.0
        self.field.energy_offset.zero_()
        x = torch.as_tensor(states, dtype=self.dtype, device=self.device)
        h = self.field.hamiltonian(x[:, : self.dof], x[:, self.dof :]).double().cpu().numpy()
        offset = float(np.mean(true_energy - h)) if true_energy is not None else -float(np.mean(h))
        self.field.energy_offset.fill_(offset)
        return offset
