"""PNG figures of predictions and training curves (matplotlib's object API: no global state,
so it is safe to call from server threads)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hinn_core.rollout import Prediction

_MAX_LINES = 16  # trajectories drawn per panel; more would be unreadable


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def prediction_png(pred: Prediction, title: str = "") -> bytes:
    """Three panels: q and p over time, the phase portrait (q_i, p_i), and energy over time."""
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    ax_t, ax_ph, ax_e = fig.subplots(1, 3)
    n_traj, _, dof = pred.q.shape
    shown = range(min(n_traj, _MAX_LINES))
    for i in shown:
        for j in range(dof):
            label = f"q{j}" if i == 0 else None
            ax_t.plot(pred.times, pred.q[i, :, j], lw=1.2, label=label)
            ax_t.plot(pred.times, pred.p[i, :, j], lw=1.0, ls="--", label=f"p{j}" if i == 0 else None)
            ax_ph.plot(pred.q[i, :, j], pred.p[i, :, j], lw=1.0)
    ax_t.set(xlabel="t", ylabel="state", title="trajectories (solid q, dashed p)")
    if dof <= 4:
        ax_t.legend(fontsize=8, ncol=2)
    ax_ph.set(xlabel="q", ylabel="p", title="phase portrait")
    for i in shown:
        if pred.H is not None:
            ax_e.plot(pred.times, pred.H[i], lw=1.2, label="learned H" if i == 0 else None)
        if pred.H_true is not None:
            ax_e.plot(pred.times, pred.H_true[i], lw=1.0, ls=":", color="k",
                      label="true H" if i == 0 else None)
    ax_e.set(xlabel="t", ylabel="H", title="energy")
    if pred.H is not None or pred.H_true is not None:
        ax_e.legend(fontsize=8)
    else:
        ax_e.text(0.5, 0.5, "no Hamiltonian\n(mlp baseline)", ha="center", va="center",
                  transform=ax_e.transAxes)
    if title:
        fig.suptitle(title)
    return _png(fig)


def loss_curve_png(history: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """Training and validation loss per epoch (log scale); the L-BFGS phase is shaded."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    if history:
        ep = np.array([h["epoch"] for h in history], dtype=float)
        tr = np.array([h.get("train_loss", np.nan) for h in history], dtype=float)
        va = np.array([h.get("val_loss", np.nan) if h.get("val_loss") is not None else np.nan
                       for h in history], dtype=float)
        ax.semilogy(ep, tr, label="train")
        if np.isfinite(va).any():
            ax.semilogy(ep, va, label="validation")
        lb = [h["epoch"] for h in history if h.get("phase") == "lbfgs"]
        if lb:
            ax.axvspan(min(lb) - 0.5, max(lb) + 0.5, color="0.9", label="L-BFGS")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="epoch", ylabel="MSE", title=title or "training loss")
    return _png(fig)
