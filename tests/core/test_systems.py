"""The built-in systems: exact gradients, numpy/torch agreement, reference solvers, samplers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from hinn_core.errors import ConfigError
from hinn_core.systems import SYSTEMS, System, make_system
from hinn_core.systems.nbody import FIGURE_EIGHT_PERIOD

#: Every registered system with its defaults, plus the figure-eight family of the three-body system.
CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in SYSTEMS] + [
    ("three-body", {"orbit": "figure-eight"})
]
IDS = [name + ("-" + "-".join(map(str, params.values())) if params else "") for name, params in CASES]

#: A few periods of each system (periods: spring/pendulum ~2π, two-body ~4π r^1.5, figure-eight ~6.3).
HORIZON = {"spring": 20.0, "pendulum": 20.0, "two-body": 40.0, "three-body": 12.0, "henon-heiles": 30.0,
           "nonseparable": 20.0}


def test_registry_covers_the_six_builtin_systems() -> None:
    assert sorted(SYSTEMS) == sorted(
        ["spring", "pendulum", "two-body", "three-body", "henon-heiles", "nonseparable"]
    )
    for name, cls in SYSTEMS.items():
        assert cls.name == name
        assert issubclass(cls, System)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_exact_grad_equals_autograd(name: str, params: dict[str, Any]) -> None:
    system = make_system(name, params)
    q, p = system.sample_initial_conditions(32, np.random.default_rng(0))
    qt = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    auto_q, auto_p = torch.autograd.grad(system.hamiltonian(qt, pt).sum(), (qt, pt))
    exact_q, exact_p = system.grad(q, p)
    assert np.asarray(exact_q).shape == q.shape and np.asarray(exact_p).shape == p.shape
    assert np.abs(auto_q.numpy() - exact_q).max() < 1e-10
    assert np.abs(auto_p.numpy() - exact_p).max() < 1e-10


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_numpy_and_torch_agree_on_batched_states(name: str, params: dict[str, Any]) -> None:
    system = make_system(name, params)
    q, p = system.sample_initial_conditions(12, np.random.default_rng(1))
    q, p = q.reshape(3, 4, -1), p.reshape(3, 4, -1)  # extra batch dims: (..., dof)
    qt, pt = torch.from_numpy(q), torch.from_numpy(p)
    h_np, h_t = system.hamiltonian(q, p), system.hamiltonian(qt, pt)
    assert isinstance(h_t, torch.Tensor) and h_np.shape == (3, 4)
    assert np.abs(h_t.numpy() - h_np).max() < 1e-12
    for g_np, g_t in zip(system.grad(q, p), system.grad(qt, pt), strict=True):
        assert isinstance(g_t, torch.Tensor) and g_np.shape == q.shape
        assert np.abs(g_t.numpy() - g_np).max() < 1e-12
    for key, value in system.conserved(q, p).items():
        assert np.abs(system.conserved(qt, pt)[key].numpy() - value).max() < 1e-12, key


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_reference_solution_conserves_energy(name: str, params: dict[str, Any]) -> None:
    system = make_system(name, params)
    q0, p0 = system.sample_initial_conditions(3, np.random.default_rng(2))
    times = np.linspace(0.0, HORIZON[name], 101)
    q, p = system.solve(q0, p0, times)
    assert q.shape == (3, 101, system.dof) and p.shape == q.shape
    np.testing.assert_array_equal(q[:, 0], q0)
    energy = system.hamiltonian(q, p)
    drift = np.abs(energy - energy[:, :1]) / np.abs(energy[:, :1])
    assert drift.max() < 1e-9
    assert np.abs(q[:, -1] - q0).max() > 1e-3  # it actually moved


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_sampler_is_deterministic_with_the_right_shape(name: str, params: dict[str, Any]) -> None:
    system = make_system(name, params)
    a = system.sample_initial_conditions(7, np.random.default_rng(5))
    b = system.sample_initial_conditions(7, np.random.default_rng(5))
    c = system.sample_initial_conditions(7, np.random.default_rng(6))
    for x, y in zip(a, b, strict=True):
        assert x.shape == (7, system.dof) and x.dtype == np.float64
        assert np.isfinite(x).all()
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert len({tuple(row) for row in a[0]}) == 7  # seven different states


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_describe(name: str) -> None:
    system = make_system(name)
    info = system.describe()
    assert info["name"] == name and info["dof"] == system.dof
    assert set(info["parameters"]) == set(system.PARAMETERS)
    assert isinstance(info["hamiltonian"], str) and info["hamiltonian"].startswith("H =")
    assert info["separable"] is (name != "nonseparable")


def test_spring_analytic_solution_equals_dop853() -> None:
    system = make_system("spring", {"m": 2.0, "k": 0.7})
    q0, p0 = system.sample_initial_conditions(4, np.random.default_rng(3))
    times = np.sort(np.random.default_rng(4).uniform(0.0, 15.0, size=60))
    times[0] = 0.0
    for i in range(4):
        qa, pa = system.solve(q0[i], p0[i], times)
        qn, pn = system._solve_numerically(q0[i], p0[i], times)
        assert np.abs(qa - qn).max() < 1e-9 and np.abs(pa - pn).max() < 1e-9


NBODY = [(c, i) for c, i in zip(CASES, IDS, strict=True) if c[0] in ("two-body", "three-body")]


@pytest.mark.parametrize(("name", "params"), [c for c, _ in NBODY], ids=[i for _, i in NBODY])
def test_nbody_momenta_conserved(name: str, params: dict[str, Any]) -> None:
    system = make_system(name, {**params, **({"m1": 1.0} if params else {"m1": 1.3})})
    q0, p0 = system.sample_initial_conditions(3, np.random.default_rng(7))
    q, p = system.solve(q0, p0, np.linspace(0.0, HORIZON[name], 81))
    c = system.conserved(q, p)
    assert set(c) == {"energy", "momentum_x", "momentum_y", "angular_momentum"}
    for key in ("momentum_x", "momentum_y", "angular_momentum"):
        assert np.abs(c[key] - c[key][:, :1]).max() < 1e-9, key
    if params.get("orbit") == "figure-eight":  # the choreography has L = 0 and P = 0
        assert np.abs(c["angular_momentum"]).max() < 1e-9
    else:
        assert np.abs(c["angular_momentum"]).min() > 1e-3  # a non-trivial check: L is not zero


def test_nbody_conserved_quantities_by_hand() -> None:
    system = make_system("two-body", {"m1": 2.0, "m2": 3.0, "G": 0.5})
    q = np.array([1.0, 2.0, -1.0, 0.5])
    p = np.array([0.3, -0.4, 0.1, 0.2])
    c = system.conserved(q, p)
    r = np.hypot(2.0, 1.5)
    assert abs(c["energy"] - (0.25 / 4 + 0.05 / 6 - 0.5 * 6 / r)) < 1e-14
    assert abs(c["momentum_x"] - 0.4) < 1e-14 and abs(c["momentum_y"] + 0.2) < 1e-14
    assert abs(c["angular_momentum"] - ((1 * -0.4 - 2 * 0.3) + (-1 * 0.2 - 0.5 * 0.1))) < 1e-14


def test_two_body_sampler_follows_hnn_and_is_circular_without_noise() -> None:
    system = make_system("two-body", {"orbit_noise": 0.0})
    q, p = system.sample_initial_conditions(5, np.random.default_rng(8))
    np.testing.assert_array_equal(q[:, 2:], -q[:, :2])
    np.testing.assert_array_equal(p[:, 2:], -p[:, :2])
    assert (q[:, :2] >= 0.5).all() and (q[:, :2] <= 1.5).all()  # pos ~ U[r_min, r_max]²
    assert np.abs((q[:, :2] * p[:, :2]).sum(1)).max() < 1e-15  # velocity ⟂ position
    qs, _ = system.solve(q[0], p[0], np.linspace(0.0, 20.0, 50))
    radius = np.linalg.norm(qs[:, :2], axis=1)
    assert np.abs(radius - radius[0]).max() < 1e-8  # exactly circular orbit


def test_three_body_random_sampler_is_a_circular_triangle_without_noise() -> None:
    system = make_system("three-body", {"nu": 0.0})
    q, p = system.sample_initial_conditions(4, np.random.default_rng(9))
    radius0 = np.linalg.norm(q.reshape(4, 3, 2), axis=2)
    assert np.abs(radius0 - radius0[:, :1]).max() < 1e-12
    assert (radius0 >= 0.9).all() and (radius0 <= 1.2).all()
    qs, _ = system.solve(q[0], p[0], np.linspace(0.0, 8.0, 40))
    radius = np.linalg.norm(qs.reshape(-1, 3, 2), axis=2)
    assert np.abs(radius - radius0[0]).max() < 1e-7


def test_three_body_random_velocity_noise_has_relative_size_nu() -> None:
    a = make_system("three-body", {"nu": 0.0}).sample_initial_conditions(2000, np.random.default_rng(1))[1]
    b = make_system("three-body", {"nu": 0.2}).sample_initial_conditions(2000, np.random.default_rng(1))[1]
    ratio = b / a
    assert ratio.min() >= 0.8 - 1e-12 and ratio.max() <= 1.2 + 1e-12
    assert ratio.min() < 0.81 and ratio.max() > 1.19


def test_figure_eight_is_periodic_and_samples_lie_on_one_orbit() -> None:
    system = make_system("three-body", {"orbit": "figure-eight"})
    q0, p0 = system.figure_eight_state()
    q, p = system.solve(q0, p0, np.array([0.0, FIGURE_EIGHT_PERIOD / 2, FIGURE_EIGHT_PERIOD]))
    assert np.abs(q[-1] - q0).max() < 1e-6 and np.abs(p[-1] - p0).max() < 1e-6
    assert np.abs(q[1] - q0).max() > 0.5  # half way round it is elsewhere
    qs, ps = system.sample_initial_conditions(20, np.random.default_rng(10))
    energy = system.hamiltonian(qs, ps)
    assert np.ptp(energy) < 1e-9 and abs(energy[0] - system.hamiltonian(q0, p0)) < 1e-9
    assert np.linalg.norm(qs - q0, axis=1).min() > 0 and np.ptp(qs[:, 0]) > 0.5  # different phases
    assert np.abs(ps.reshape(20, 3, 2).sum(1)).max() < 1e-9  # zero total momentum


def test_figure_eight_scales_with_g_and_mass() -> None:
    system = make_system("three-body", {"orbit": "figure-eight", "G": 2.0, "m1": 0.5, "m2": 0.5, "m3": 0.5})
    q0, p0 = system.figure_eight_state()
    q, p = system.solve(q0, p0, np.array([0.0, system.figure_eight_period]))
    assert abs(system.figure_eight_period - FIGURE_EIGHT_PERIOD) < 1e-12  # G·m = 1
    assert np.abs(q[-1] - q0).max() < 1e-6 and np.abs(p[-1] - p0).max() < 1e-6


def test_henon_heiles_sampler_energies_and_region() -> None:
    system = make_system("henon-heiles")
    q, p = system.sample_initial_conditions(500, np.random.default_rng(11))
    energy = system.hamiltonian(q, p)
    assert energy.min() >= 0.02 - 1e-12 and energy.max() <= 1 / 12 + 1e-12
    x, y = q[:, 0], q[:, 1]
    assert ((y > -0.5) & (y < 1 - np.sqrt(3) * np.abs(x))).all()  # inside the bounded region
    angle = np.arctan2(p[:, 1], p[:, 0])
    assert np.histogram(angle, bins=4, range=(-np.pi, np.pi))[0].min() > 80  # isotropic momenta


def test_nonseparable_is_flagged_and_couples_q_and_p() -> None:
    system = make_system("nonseparable")
    assert system.separable is False
    dHdq, _ = system.grad(np.array([[0.5]]), np.array([[1.0]]))
    dHdq2, _ = system.grad(np.array([[0.5]]), np.array([[2.0]]))
    assert abs(dHdq[0, 0] - 1.0) < 1e-15 and abs(dHdq2[0, 0] - 2.5) < 1e-15  # ∂H/∂q depends on p


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("no-such-system", {}, "system"),
        ("spring", {"mass": 1.0}, "parameters.mass"),
        ("spring", {"m": -1.0}, "parameters.m"),
        ("spring", {"k": "stiff"}, "parameters.k"),
        ("pendulum", {"l": float("nan")}, "parameters.l"),
        ("two-body", {"orbit_noise": -0.1}, "parameters.orbit_noise"),
        ("three-body", {"orbit": "circle"}, "parameters.orbit"),
        ("three-body", {"orbit": "figure-eight", "m2": 2.0}, "parameters.orbit"),
        ("henon-heiles", {"e_max": 0.2}, "parameters.e_max"),
        ("henon-heiles", {"e_min": 0.05, "e_max": 0.04}, "parameters.e_min"),
    ],
)
def test_make_system_rejects_bad_names_and_parameters(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_system(name, params)
    assert info.value.field == field


def test_make_system_applies_parameters() -> None:
    system = make_system("pendulum", {"l": 2, "g": 9.81})
    assert system.params == {"m": 1.0, "l": 2.0, "g": 9.81, "r_min": 0.3, "r_max": 1.5}
    assert abs(system.hamiltonian(np.array([np.pi]), np.array([0.0])) - 2 * 9.81 * 2) < 1e-12


@pytest.mark.parametrize(("name", "params"), [
    ("two-body", {"G": 4.0, "orbit_noise": 0.0}),
    ("two-body", {"m1": 0.5, "m2": 3.0, "orbit_noise": 0.0}),
    ("three-body", {"G": 2.0, "m1": 2.0, "m3": 0.5, "nu": 0.0}),
    ("three-body", {"G": 3.0, "nu": 0.0}),
])
def test_unperturbed_samples_are_circular_orbits_for_any_G_and_masses(name: str, params: dict) -> None:
    """The samplers' circular orbits (the reference's formulas hold for G = m = 1 only): every
    separation stays constant along the exact solution, and the total momentum is zero."""
    system = make_system(name, params)
    q0, p0 = system.sample_initial_conditions(3, np.random.default_rng(1))
    q, _ = system.solve(q0, p0, np.linspace(0.0, 10.0, 101))
    n = system.n_bodies
    for i in range(n):
        for j in range(i + 1, n):
            d = np.linalg.norm(q[..., 2 * i:2 * i + 2] - q[..., 2 * j:2 * j + 2], axis=-1)
            assert (d.max(axis=1) / d.min(axis=1)).max() < 1 + 1e-8
    c = system.conserved(q0, p0)
    assert np.abs(c["momentum_x"]).max() < 1e-12 and np.abs(c["momentum_y"]).max() < 1e-12
