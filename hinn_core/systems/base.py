"""The `System` interface: a known Hamiltonian with its exact gradient, sampler and reference.

Every built-in system works on numpy arrays *and* torch tensors with the same code (the
formulas use only operators, ``.sum(-1)`` and the `_xp` namespace), so that data generation
(numpy/scipy) and integrator tests (torch) share one definition of H.

Shapes: ``q, p: (..., dof)`` → ``H: (...)``; ``grad`` returns ``(dH/dq, dH/dp)`` of the same
shape as ``q`` and ``p``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.integrate import solve_ivp

from hinn_core.errors import ConfigError

#: Tolerances of the reference solver (DOP853): tighter than the 1e-10 the protocols ask for.
REFERENCE_RTOL = 1e-12
REFERENCE_ATOL = 1e-12


class _Namespace:
    """Elementwise functions of numpy or torch, chosen by the argument type."""

    def __init__(self, mod: Any) -> None:
        self.cos = mod.cos
        self.sin = mod.sin
        self.sqrt = mod.sqrt
        self.exp = mod.exp
        self.mod = mod

    def stack(self, arrays: list[Any], axis: int = -1) -> Any:
        if self.mod is torch:
            return torch.stack(arrays, dim=axis)
        return np.stack(arrays, axis=axis)

    def zeros_like(self, x: Any) -> Any:
        return self.mod.zeros_like(x)


_NP = _Namespace(np)
_TORCH = _Namespace(torch)


def xp(x: Any) -> _Namespace:
    """The array namespace (numpy or torch) of ``x``."""
    return _TORCH if isinstance(x, torch.Tensor) else _NP


@dataclass(frozen=True)
class Parameter:
    """A physical parameter of a system, with its default and valid range (for validation/docs)."""

    default: float | str
    description: str
    minimum: float | None = None
    choices: tuple[str, ...] | None = None


@dataclass
class System(ABC):
    """A Hamiltonian system with known H.

    Subclasses set the class variables, declare their parameters in ``PARAMETERS`` and implement
    `hamiltonian`, `grad` and `sample_initial_conditions`; `solve` defaults to DOP853 at
    rtol = atol = 1e-12 and is overridden where an analytic solution exists.
    """

    name: ClassVar[str]
    dof: ClassVar[int]
    hamiltonian_text: ClassVar[str]
    description: ClassVar[str]
    separable: ClassVar[bool] = True
    PARAMETERS: ClassVar[dict[str, Parameter]] = {}

    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.params) - set(self.PARAMETERS))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown} for system '{self.name}'; "
                f"known: {sorted(self.PARAMETERS)}",
                field=f"parameters.{unknown[0]}",
            )
        merged: dict[str, Any] = {}
        for key, spec in self.PARAMETERS.items():
            value = self.params.get(key, spec.default)
            if spec.choices is not None:
                if value not in spec.choices:
                    raise ConfigError(
                        f"must be one of {list(spec.choices)}, got {value!r}", field=f"parameters.{key}"
                    )
            else:
                if isinstance(value, bool):
                    raise ConfigError(f"must be a number, got {value!r}", field=f"parameters.{key}")
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"must be a number, got {value!r}", field=f"parameters.{key}") from None
                if not np.isfinite(value) or (spec.minimum is not None and value < spec.minimum):
                    raise ConfigError(
                        f"must be a finite number >= {spec.minimum}, got {value!r}", field=f"parameters.{key}"
                    )
            merged[key] = value
        for lo, hi in (("r_min", "r_max"),):
            if lo in merged and hi in merged and merged[lo] > merged[hi]:
                raise ConfigError(f"must be >= {lo} ({merged[lo]}), got {merged[hi]}", field=f"parameters.{hi}")
        self.params = merged

    def __getattr__(self, key: str) -> Any:  # parameters read as attributes: self.m, self.k
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)

    # -- the physics -------------------------------------------------------------------------
    @abstractmethod
    def hamiltonian(self, q: Any, p: Any) -> Any:
        """H(q, p): ``(..., dof), (..., dof) -> (...)``."""

    @abstractmethod
    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        """Exact (∂H/∂q, ∂H/∂p), each ``(..., dof)``."""

    @abstractmethod
    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` initial states ``(q0, p0)``, each ``(n, dof)``, from this system's IC distribution."""

    def vector_field(self, q: Any, p: Any) -> tuple[Any, Any]:
        """(dq/dt, dp/dt) = (∂H/∂p, −∂H/∂q)."""
        dHdq, dHdp = self.grad(q, p)
        return dHdp, -dHdq

    def conserved(self, q: Any, p: Any) -> dict[str, Any]:
        """Conserved quantities along a trajectory: always ``energy``; n-body adds momenta."""
        return {"energy": self.hamiltonian(q, p)}

    def solve(self, q0: np.ndarray, p0: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference solution at ``times`` (``(T+1,)``, ``times[0]`` is the initial time).

        ``q0, p0``: ``(dof,)`` or ``(B, dof)``; returns ``(T+1, dof)`` or ``(B, T+1, dof)``.
        """
        q0 = np.asarray(q0, dtype=np.float64)
        p0 = np.asarray(p0, dtype=np.float64)
        times = np.asarray(times, dtype=np.float64)
        if q0.ndim == 2:
            pairs = [self.solve(q0[i], p0[i], times) for i in range(q0.shape[0])]
            return np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
        return self._solve_numerically(q0, p0, times)

    def _solve_numerically(
        self, q0: np.ndarray, p0: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.dof

        def rhs(_t: float, y: np.ndarray) -> np.ndarray:
            dq, dp = self.vector_field(y[:n], y[n:])
            return np.concatenate([dq, dp])

        if len(times) == 1:
            return q0[None].copy(), p0[None].copy()
        sol = solve_ivp(
            rhs,
            (float(times[0]), float(times[-1])),
            np.concatenate([q0, p0]),
            method="DOP853",
            t_eval=times,
            rtol=REFERENCE_RTOL,
            atol=REFERENCE_ATOL,
        )
        if not sol.success:  # pragma: no cover - only on singular ICs (collisions)
            raise RuntimeError(f"reference solver failed for {self.name}: {sol.message}")
        y = sol.y.T
        return y[:, :n], y[:, n:]

    def describe(self) -> dict[str, Any]:
        """Public description: name, dof, parameters, the formula of H."""
        return {
            "name": self.name,
            "dof": self.dof,
            "parameters": dict(self.params),
            "hamiltonian": self.hamiltonian_text,
            "separable": self.separable,
            "description": self.description,
        }


def uniform_radius_sampler(
    n: int, dof: int, rng: np.random.Generator, r_min: float, r_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """(q, p) uniformly on random directions of R^{2·dof}, radius ~ U[r_min, r_max] (HNN's sampler)."""
    y = rng.uniform(-1.0, 1.0, size=(n, 2 * dof))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    y *= rng.uniform(r_min, r_max, size=(n, 1))
    return y[:, :dof].copy(), y[:, dof:].copy()
