"""bench.perf.roofline: the multiply-adds it charges a rollout are the ones torch counts in the
same sweeps, its activation timer runs the kernels' own pass, and its table says which targets lie
above the ceiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.perf.roofline import (
    _activate_loop,
    activation_ns,
    ceiling_mss,
    render_rows,
    sweep_activations,
    sweep_madds,
    trunk_madds,
    trunk_units,
)
from bench.perf.run import render
from hinn_core.fastpath import _math
from hinn_core.integrators import get_integrator
from hinn_core.models import DynamicsModel, ModelSpec


def _flops(fn, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("arch", ["hinn-separable", "hinn"])
@pytest.mark.parametrize(("dof", "width", "depth"), [(1, 32, 2), (4, 64, 2), (3, 16, 4)])
def test_sweep_counts_equal_torchs_flop_counter_on_the_same_trunk(arch: str, dof: int, width: int, depth: int) -> None:
    model = DynamicsModel(ModelSpec(architecture=arch, dof=dof, width=width, depth=depth)).double()
    trunks = [model.field.potential, model.field.kinetic] if model.field.separable else [model.field.trunk]
    batch = 5
    for trunk in trunks:
        u = torch.randn(batch, trunk._weights()[0].K.shape[0], dtype=torch.float64)
        grad, value = trunk_madds(trunk)
        assert _flops(trunk.value_and_grad, u) == 2 * batch * grad
        assert _flops(trunk, u) == 2 * batch * value
        assert trunk_units(trunk) == width * (depth + 1)


def test_rk4_charges_four_gradient_sweeps_per_step_as_the_torch_path_makes() -> None:
    model = DynamicsModel(ModelSpec(architecture="hinn", dof=2, width=16, depth=2)).double()
    model.integrator = get_integrator("rk4")
    batch, steps = 6, 4
    q, p = torch.randn(batch, 2, dtype=torch.float64), torch.randn(batch, 2, dtype=torch.float64)
    flops = _flops(model.rollout, q, p, torch.full((steps,), 0.1, dtype=torch.float64))
    assert flops == 2 * batch * steps * sweep_madds(model.field, "rk4")
    assert sweep_activations(model.field, "rk4") == (4 * 16 * 3, 0)


def test_leapfrog_charges_one_sweep_per_trunk_and_t_s_value_for_h() -> None:
    """The compiled kick–drift–kick shares each step's last V gradient with the next step's first;
    the torch path recomputes it, so it makes one V gradient sweep per step more than charged."""
    model = DynamicsModel(ModelSpec(architecture="hinn-separable", dof=1, width=32, depth=2)).double()
    model.integrator = get_integrator("leapfrog")
    (gv, _), (gt, vt) = trunk_madds(model.field.potential), trunk_madds(model.field.kinetic)
    assert sweep_madds(model.field, "leapfrog", energy=False) == gv + gt
    assert sweep_madds(model.field, "leapfrog") == gv + gt + vt
    assert sweep_activations(model.field, "leapfrog") == (2 * 96, 96)
    assert sweep_activations(model.field, "leapfrog", energy=False) == (2 * 96, 0)
    batch, steps = 4, 3
    q, p = torch.randn(batch, 1, dtype=torch.float64), torch.randn(batch, 1, dtype=torch.float64)
    flops = _flops(model.rollout, q, p, torch.full((steps,), 0.1, dtype=torch.float64))
    assert flops == 2 * batch * steps * (sweep_madds(model.field, "leapfrog", energy=False) + gv)
    with pytest.raises(ValueError, match="implicit_midpoint"):
        sweep_madds(model.field, "implicit_midpoint")


def test_activation_timer_runs_the_kernels_pass() -> None:
    """The timed loop computes what `_math.activate_first` (a gradient sweep's layers) and
    `activate_value` compute in the rollouts."""
    z = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    rh = np.float32(0.5)
    for derivatives in (True, False):
        outs = [[np.ones_like(z) for _ in range(2)] for _ in range(2)]
        _activate_loop(z, *outs[0], _math.ANTITANH, rh, 1, derivatives)
        if derivatives:
            _math.activate_first(z, *outs[1], 8, _math.ANTITANH, rh, True)
        else:
            _math.activate_value(z, outs[1][0], 8, _math.ANTITANH, rh, True)
        for a, b in zip(*outs, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(outs[0][0], np.ones_like(z))
        if derivatives:  # σ′ of log cosh is tanh
            np.testing.assert_allclose(outs[0][1], np.tanh(z), rtol=2e-6, atol=2e-7)
        else:
            assert (outs[0][1] == 1).all()
    with_derivatives, value_only = activation_ns("antitanh", "float32", 32, rows=8, reps=20)
    assert 0 < value_only and 0 < with_derivatives < 1e4


def _row(**kw) -> dict:
    row = {"size": "d2w32", "dtype": "float32", "architecture": "hinn-separable", "integrator": "leapfrog",
           "batch": 4096, "madds": 10496, "madds_states": 8416, "Mss": 2.0, "Mss_states": 2.5,
           "gflops": 42.0, "gflops_states": 42.1, "gemm_shape": {"numpy": 100.0, "torch": 80.0},
           "gemm_big": {"numpy": 190.0, "torch": 160.0}, "gemm_best": 190.0, "activation": "antitanh",
           "activation_ns": [0.9, 0.7], "cpus": 2, "ceiling_Mss": 4.4, "ceiling_Mss_states": 5.8, "target_Mss": 6.0}
    return {**row, **kw}


def test_table_says_whether_a_target_lies_above_the_ceiling(empty_report: dict) -> None:
    above, below, none = render_rows([_row(), _row(target_Mss=4.0), _row(target_Mss=None, architecture="hinn")])[2:]
    assert above.endswith("| 45% / 43% | 6 M: **above** the ceiling |")
    assert ("| 42 (22%) / 42 (22%) | 100 / 80 | 190 / 160 | 0.90 / 0.70 (antitanh; σ, σ′, σ″ / σ) "
            "| 4.40 / 5.80 |") in above  # rows from before the first-order pass (no activation_pass)
    new = render_rows([_row(activation_pass="σ, σ′")])[2]  # rows since the first-order pass say so
    assert "| 0.90 / 0.70 (antitanh; σ, σ′ / σ) |" in new
    assert below.endswith("| 4 M: below the ceiling |")
    assert none.endswith("| — |")
    base = empty_report
    assert "Against this machine's GEMMs" not in render(base)  # runs from before the section still render
    assert above in render({**base, "roofline": [_row(), _row(target_Mss=4.0)]}).splitlines()


def test_ceiling_adds_products_at_the_gemm_rate_and_activations_spread_over_the_cpus() -> None:
    # 2·10496 flops at 190 GFLOP/s: 110.5 ns; (192·0.9 + 96·0.7) ns over 2 CPUs: 120 ns
    assert ceiling_mss(10496, 190.0, (192, 96), (0.9, 0.7), 2) == pytest.approx(1e3 / (20992 / 190 + 120))
    assert ceiling_mss(10496, 190.0, (192, 0), (0.9, 0.7), 1) == pytest.approx(1e3 / (20992 / 190 + 172.8))
