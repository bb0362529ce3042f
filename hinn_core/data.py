"""Trajectories and datasets: validation, generation from a known system, splits by trajectory.

A trajectory is ``t: (T+1,)`` strictly increasing (uniform *or* variable steps) with
``q, p: (T+1, dof)``. Datasets may mix trajectory lengths; splits are by trajectory, never
by time point, so no held-out trajectory leaks into training.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hinn_core.errors import DataError, HinnError
from hinn_core.systems import System, make_system

#: with fewer trajectories, `TrajectoryDataset.holdout` keeps them all for training
MIN_TRAJECTORIES_TO_HOLD_OUT = 5

#: the largest seed accepted anywhere (torch's generators take signed 64-bit seeds)
MAX_SEED = 2**63 - 1


def check_seed(seed: Any, field: str = "seed") -> None:
    """A `DataError` unless ``seed`` is an integer in [0, `MAX_SEED`] (numpy refuses negative seeds
    with a bare ValueError, torch overflows above 2^63)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise DataError(f"must be an integer in [0, {MAX_SEED}], got {seed!r}", field=field)


def check_real(value: Any, field: str, error: type[HinnError] = DataError) -> float:
    """``value`` as a float; ``error`` naming ``field`` unless it is a real number (not a string, a bool,
    None, or an int too large for a float) — range checks stay with the caller. 0-d arrays and tensors
    count as their one number."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.array(1.0), torch.tensor(1.0)
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise error(f"must be a number, got {value!r}", field=field)
    try:
        return float(value)
    except OverflowError:
        raise error(f"is too large for a float, got {value!r}", field=field) from None


def _as_float_array(value: Any, field_name: str, ndim: int) -> np.ndarray:
    try:  # a copy: freezing it must neither freeze the caller's array nor alias a view of it
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"must be a {'list of numbers' if ndim == 1 else 'rectangular list of lists of numbers'} "
            "(ragged or non-numeric entries found)",
            field=field_name,
        ) from None
    if arr.ndim != ndim:
        want = "a 1-D list of times" if ndim == 1 else "a 2-D array [time][dof]"
        raise DataError(f"must be {want}, got an array of shape {arr.shape}", field=field_name)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"contains NaN or infinity at index {list(idx)}", field=field_name)
    return arr


@dataclass(frozen=True, eq=False)
class Trajectory:
    """One observed trajectory. Validated on construction; arrays are float64 and read-only."""

    t: np.ndarray
    q: np.ndarray
    p: np.ndarray

    @classmethod
    def from_arrays(cls, t: Any, q: Any, p: Any, *, dof: int | None = None, where: str = "") -> Trajectory:
        """Validate and build; ``where`` prefixes field names in errors (``"trajectories[3]."``)."""
        t_arr = _as_float_array(t, f"{where}t", 1)
        q_arr = _as_float_array(q, f"{where}q", 2)
        p_arr = _as_float_array(p, f"{where}p", 2)
        n = len(t_arr)
        if n < 2:
            raise DataError(f"needs at least 2 time points, got {n}", field=f"{where}t")
        for name, arr in (("q", q_arr), ("p", p_arr)):
            if arr.shape[0] != n:
                raise DataError(
                    f"has {arr.shape[0]} rows but t has {n} time points; q and p need one row per time",
                    field=f"{where}{name}",
                )
        if q_arr.shape[1] != p_arr.shape[1]:
            raise DataError(
                f"has dimension {p_arr.shape[1]} but q has {q_arr.shape[1]}; q and p must have the same dof",
                field=f"{where}p",
            )
        if q_arr.shape[1] == 0:
            raise DataError("has zero columns; dof must be at least 1", field=f"{where}q")
        if dof is not None and q_arr.shape[1] != dof:
            raise DataError(
                f"has dimension {q_arr.shape[1]} but the dataset has dof {dof}", field=f"{where}q"
            )
        steps = np.diff(t_arr)
        if (steps <= 0).any():
            k = int(np.argmax(steps <= 0))
            raise DataError(
                f"times must be strictly increasing; "
                f"t[{k + 1}] = {float(t_arr[k + 1])!r} follows t[{k}] = {float(t_arr[k])!r}",
                field=f"{where}t",
            )
        for arr in (t_arr, q_arr, p_arr):
            arr.setflags(write=False)
        return cls(t_arr, q_arr, p_arr)

    @property
    def dof(self) -> int:
        return int(self.q.shape[1])

    @property
    def n_points(self) -> int:
        return int(self.t.shape[0])

    @property
    def steps(self) -> np.ndarray:
        """Step sizes h_k = t[k+1] − t[k], ``(T,)``."""
        return np.diff(self.t)

    @property
    def is_uniform(self) -> bool:
        h = self.steps
        return bool(np.allclose(h, h[0], rtol=1e-9, atol=0.0))

    @property
    def state(self) -> np.ndarray:
        """``(T+1, 2·dof)``: q then p."""
        return np.concatenate([self.q, self.p], axis=1)


@dataclass(eq=False)
class TrajectoryDataset:
    """A list of trajectories of one dof, with where they came from (``source``)."""

    trajectories: list[Trajectory]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.trajectories:
            raise DataError("a dataset needs at least one trajectory", field="trajectories")
        dof = self.trajectories[0].dof
        for i, tr in enumerate(self.trajectories):
            if tr.dof != dof:
                raise DataError(
                    f"has dof {tr.dof} but trajectories[0] has dof {dof}; all trajectories need the same dof",
                    field=f"trajectories[{i}].q",
                )

    @classmethod
    def from_lists(
        cls, items: Sequence[dict[str, Any]], source: dict[str, Any] | None = None, dof: int | None = None
    ) -> TrajectoryDataset:
        """From ``[{"t": [...], "q": [[...]], "p": [[...]]}, ...]`` (the REST/JSON layout)."""
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)) or len(items) == 0:
            raise DataError("must be a non-empty list of trajectories", field="trajectories")
        trajectories = []
        for i, item in enumerate(items):
            where = f"trajectories[{i}]."
            if not isinstance(item, dict):
                raise DataError("must be an object with keys t, q, p", field=f"trajectories[{i}]")
            missing = [k for k in ("t", "q", "p") if k not in item]
            if missing:
                raise DataError(f"is missing key(s) {missing}", field=f"trajectories[{i}]")
            tr = Trajectory.from_arrays(item["t"], item["q"], item["p"], dof=dof, where=where)
            dof = tr.dof
            trajectories.append(tr)
        return cls(trajectories, dict(source or {}))

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def dof(self) -> int:
        return self.trajectories[0].dof

    @property
    def n_points(self) -> int:
        return sum(tr.n_points for tr in self.trajectories)

    @property
    def system(self) -> System | None:
        """The generating system when the data were generated from a built-in one."""
        name = self.source.get("system")
        return make_system(name, self.source.get("parameters")) if name else None

    def time_stats(self) -> dict[str, float | bool]:
        h = np.concatenate([tr.steps for tr in self.trajectories])
        return {
            "t_min": float(min(tr.t[0] for tr in self.trajectories)),
            "t_max": float(max(tr.t[-1] for tr in self.trajectories)),
            "dt_min": float(h.min()),
            "dt_max": float(h.max()),
            "dt_mean": float(h.mean()),
            "uniform": bool(all(tr.is_uniform for tr in self.trajectories))
            and bool(np.allclose(h, h[0], rtol=1e-9, atol=0.0)),
        }

    def subset(self, indices: Sequence[int]) -> TrajectoryDataset:
        return TrajectoryDataset([self.trajectories[i] for i in indices], dict(self.source))

    def split(
        self, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0
    ) -> tuple[TrajectoryDataset, ...]:
        """Shuffle trajectories with ``seed`` and cut them into parts of the given fractions.

        Every part gets at least one trajectory; raises `DataError` if there are too few.
        """
        n = len(self)
        check_seed(seed)
        fractions = [check_real(f, "fractions") for f in fractions]
        if not fractions or any(not (np.isfinite(f) and f > 0) for f in fractions):
            raise DataError(f"split fractions must be positive numbers, got {list(fractions)}", field="fractions")
        if n < len(fractions):
            raise DataError(
                f"{n} trajectories cannot be split into {len(fractions)} parts; upload or generate more",
                field="trajectories",
            )
        order = np.random.default_rng(seed).permutation(n)
        total = float(sum(fractions))
        counts = [max(1, int(round(n * f / total))) for f in fractions]
        while sum(counts) > n:  # rounding overshoot: take from the largest part
            counts[int(np.argmax(counts))] -= 1
        counts[0] += n - sum(counts)
        parts, start = [], 0
        for c in counts:
            parts.append(self.subset(order[start : start + c].tolist()))
            start += c
        return tuple(parts)

    def holdout(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[TrajectoryDataset, TrajectoryDataset, bool]:
        """``(train, test, held_out)`` for training then evaluating: a `split` by trajectory when
        ``test_fraction`` > 0 and there are at least `MIN_TRAJECTORIES_TO_HOLD_OUT` trajectories,
        else the whole dataset as both and ``held_out`` False (the metrics then measure the fit, not
        generalisation: callers report it)."""
        test_fraction = check_real(test_fraction, "test_fraction")
        if not 0 <= test_fraction < 1:
            raise DataError(f"must be in [0, 1), got {test_fraction!r}", field="test_fraction")
        if test_fraction == 0 or len(self) < MIN_TRAJECTORIES_TO_HOLD_OUT:
            check_seed(seed)
            return self, self, False
        train, test = self.split((1 - test_fraction, test_fraction), seed=seed)
        return train, test, True

    def to_lists(self) -> list[dict[str, list]]:
        return [{"t": tr.t.tolist(), "q": tr.q.tolist(), "p": tr.p.tolist()} for tr in self.trajectories]

    def states(self) -> np.ndarray:
        """All observed states stacked, ``(N_points, 2·dof)``."""
        return np.concatenate([tr.state for tr in self.trajectories], axis=0)


def make_times(
    t_end: float, dt: float, dt_jitter: float, rng: np.random.Generator, t_start: float = 0.0
) -> np.ndarray:
    """Sample times on [t_start, t_end]: ``round((t_end−t_start)/dt)`` steps.

    ``dt_jitter`` ∈ [0, 1): each step is ``dt·(1 + dt_jitter·U[−1, 1])``, rescaled so that the last
    time is exactly ``t_end`` — variable steps with a fixed count, comparable to the uniform grid.
    """
    t_start, t_end = check_real(t_start, "t_start"), check_real(t_end, "t_end")
    dt, dt_jitter = check_real(dt, "dt"), check_real(dt_jitter, "dt_jitter")
    if not (np.isfinite(t_end) and t_end > t_start):
        raise DataError(f"must be a finite number greater than t_start={t_start}", field="t_end")
    if not (dt > 0) or dt > t_end - t_start:
        raise DataError(f"must be in (0, t_end - t_start = {t_end - t_start}], got {dt}", field="dt")
    if not (0.0 <= dt_jitter < 1.0):
        raise DataError(f"must be in [0, 1), got {dt_jitter}", field="dt_jitter")
    n_steps = max(1, int(round((t_end - t_start) / dt)))
    h = np.full(n_steps, (t_end - t_start) / n_steps)
    if dt_jitter > 0:
        h = h * (1.0 + dt_jitter * rng.uniform(-1.0, 1.0, size=n_steps))
        h *= (t_end - t_start) / h.sum()
    t = t_start + np.concatenate([[0.0], np.cumsum(h)])
    t[-1] = t_end
    return t


def generate_dataset(
    system: System | str,
    n_trajectories: int = 50,
    t_end: float = 3.0,
    dt: float = 0.1,
    *,
    dt_jitter: float = 0.0,
    noise_std: float = 0.0,
    seed: int = 0,
    parameters: dict[str, Any] | None = None,
) -> TrajectoryDataset:
    """Simulate ``n_trajectories`` from ``system``'s IC sampler with its reference solver.

    Observation noise N(0, noise_std²) is added to q and p *after* solving (the clean
    trajectories are not kept: evaluation against the truth re-solves from fresh ICs).
    Deterministic for a given ``seed``.
    """
    if isinstance(system, str):
        system = make_system(system, parameters)
    elif parameters:
        raise DataError("apply to a system given by name; a System object carries its own", field="parameters")
    if isinstance(n_trajectories, bool) or not (isinstance(n_trajectories, (int, np.integer)) and n_trajectories >= 1):
        raise DataError(f"must be a positive integer, got {n_trajectories!r}", field="n_trajectories")
    noise_std = check_real(noise_std, "noise_std")
    if not (noise_std >= 0 and np.isfinite(noise_std)):
        raise DataError(f"must be a finite number >= 0, got {noise_std!r}", field="noise_std")
    check_seed(seed)
    rng = np.random.default_rng(seed)
    q0, p0 = system.sample_initial_conditions(n_trajectories, rng)
    trajectories = []
    for i in range(n_trajectories):
        t = make_times(t_end, dt, dt_jitter, rng)
        q, p = system.solve(q0[i], p0[i], t)
        if noise_std > 0:
            with np.errstate(over="ignore"):
                q = q + rng.normal(0.0, noise_std, size=q.shape)
                p = p + rng.normal(0.0, noise_std, size=p.shape)
            if not (np.isfinite(q).all() and np.isfinite(p).all()):
                raise DataError(f"{float(noise_std):g} is so large that the noisy observations overflow",
                                field="noise_std")
        trajectories.append(Trajectory.from_arrays(t, q, p, where=f"trajectories[{i}]."))
    source = {
        "kind": "generated",
        "system": system.name,
        "parameters": dict(system.params),
        "n_trajectories": n_trajectories,
        "t_end": float(t_end),
        "dt": float(dt),
        "dt_jitter": float(dt_jitter),
        "noise_std": float(noise_std),
        "seed": int(seed),
    }
    return TrajectoryDataset(trajectories, source)
