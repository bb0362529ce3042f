"""Exceptions raised by hinn_core, each naming what went wrong and what to do about it.

`field` is a dotted/indexed path (``"trajectories[3].t"``) so that callers such as the REST
layer can point at the offending input without parsing the message.
"""

from __future__ import annotations


class HinnError(Exception):
    """Base class for every error hinn_core raises on purpose."""


class DataError(HinnError, ValueError):
    """Trajectory data are malformed: non-increasing times, ragged arrays, NaN/inf, wrong dims."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.problem = message


class DataLimitError(DataError):
    """Data declare more than a caller's size limit (``bound``: ``"max_points"``, ``"max_bytes"`` or
    ``"max_trajectories"``).

    Raised before the data are allocated; ``declared`` is what the input claims, ``limit`` the bound.
    """

    def __init__(self, message: str, field: str | None = None, *, bound: str, limit: int, declared: int) -> None:
        super().__init__(message, field=field)
        self.bound = bound
        self.limit = limit
        self.declared = declared


class ConfigError(HinnError, ValueError):
    """A model, integrator or training option is unknown or out of range."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.problem = message


class TrainingDiverged(HinnError, FloatingPointError):
    """The loss or the rolled-out state became NaN/inf during training."""


class TrainingCancelled(HinnError):
    """Training stopped because the caller's cancellation check returned True."""


class ArtifactError(HinnError, ValueError):
    """A model file is not a valid hinn artifact (wrong format, missing tensors, bad metadata)."""


class IntegrationError(HinnError, FloatingPointError):
    """A rollout became non-finite or an implicit step failed to converge.

    ``trajectory``: the index of the failing initial condition, where the integrator knows it;
    ``too_many_steps``: the adaptive integrator ran out of its step budget (the horizon is too long
    for the tolerances, rather than the trajectory being at fault)."""

    def __init__(self, message: str, *, trajectory: int | None = None, too_many_steps: bool = False) -> None:
        super().__init__(message)
        self.trajectory = trajectory
        self.too_many_steps = too_many_steps
