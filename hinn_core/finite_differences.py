"""Second-order finite-difference time derivatives on uniform or variable grids.

Used for the HNN baseline's targets (it matches dx/dt instead of states) and to set the
output scale of networks from the data's typical rates.
"""

from __future__ import annotations

import numpy as np


def finite_difference_rates(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dx/dt at every sample of ``x: (T+1, d)`` on times ``t: (T+1,)``.

    Interior points: the three-point formula for non-uniform steps (exact for quadratics);
    end points: the one-sided three-point formula. Two samples: the difference quotient.
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = len(t)
    if n == 2:
        slope = (x[1] - x[0]) / (t[1] - t[0])
        return np.stack([slope, slope])
    out = np.empty_like(x)
    h1 = (t[1:-1] - t[:-2])[:, None]
    h2 = (t[2:] - t[1:-1])[:, None]
    out[1:-1] = (-h2 / (h1 * (h1 + h2)) * x[:-2] + (h2 - h1) / (h1 * h2) * x[1:-1]
                 + h1 / (h2 * (h1 + h2)) * x[2:])
    out[0] = _one_sided(t[0], t[1], t[2], x[0], x[1], x[2])
    out[-1] = _one_sided(t[-1], t[-2], t[-3], x[-1], x[-2], x[-3])
    return out


def _one_sided(t0: float, t1: float, t2: float, x0: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Derivative at t0 of the quadratic through (t0, x0), (t1, x1), (t2, x2)."""
    a, b = t1 - t0, t2 - t0
    return (-(a + b) / (a * b)) * x0 + (b / (a * (b - a))) * x1 + (-a / (b * (b - a))) * x2
