"""Training: multi-step rollout loss through the integrator (HINN, mlp) or derivative matching (HNN).

The rollout loss is the MSE between the integrated and the observed (q, p) over windows of
``rollout_steps`` consecutive steps, started from each observed state; variable steps are
taken from the data's own time stamps. Adam with a learning-rate schedule, gradient clipping,
early stopping on a validation split (by trajectory) and restoring the best weights.
Deterministic for a given seed on a given device and thread count.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hinn_core.data import MAX_SEED, TrajectoryDataset, check_real
from hinn_core.errors import ConfigError, IntegrationError, TrainingCancelled, TrainingDiverged
from hinn_core.finite_differences import finite_difference_rates
from hinn_core.models import DynamicsModel, ModelSpec

logger = logging.getLogger(__name__)

#: learning-rate schedules of the Adam phase (the lr each epoch used is recorded in the history):
#: "cosine" — lr_e = floor + (lr − floor)·(1 + cos(π·(e − 1)/epochs))/2 for epoch e = 1..epochs, from
#: ``learning_rate`` down towards the floor ``learning_rate · min_lr_factor``; "plateau" — starts at
#: ``learning_rate`` and halves (`PLATEAU_FACTOR`) once the validation loss (the training loss without
#: a validation split) has not improved by a relative 1e-4 for more than `PLATEAU_PATIENCE` epochs,
#: never below the floor; "constant" — ``learning_rate`` throughout
LR_SCHEDULES = ("cosine", "plateau", "constant")
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 20
INITIAL_STATES = ("observed", "learned")
#: how rollout losses are differentiated: "numba" — the compiled adjoint (`hinn_core.fastpath.autograd`,
#: CPU; 2–4× faster per step, measured in docs/performance.md); "torch" — autograd through the
#: integrator's ops (any device, the reference); "auto" — numba where it covers the model, else torch
TRAIN_ENGINES = ("auto", "numba", "torch")


@dataclass
class TrainConfig:
    """Optimisation settings: the science benchmark's recipe; spring–mass to rollout MSE < 1e-5 in ~20 s on 2 cores."""

    epochs: int = 100
    learning_rate: float = 1e-2
    batch_size: int = 256
    #: steps per training window (every observed state starts one); capped by the shortest training
    #: trajectory, with a warning logged
    rollout_steps: int = 10
    #: full-batch L-BFGS iterations after Adam (0 = none): Adam finds the basin, L-BFGS polishes —
    #: in float64 it lowers the rollout error by 1–3 orders of magnitude for the same time.
    lbfgs_iterations: int = 500
    #: window length for the L-BFGS phase (None: twice ``rollout_steps``)
    lbfgs_rollout_steps: int | None = None
    #: cap on the windows the full-batch L-BFGS phase uses (a fixed random subset beyond it)
    lbfgs_max_windows: int = 1024
    #: see `LR_SCHEDULES`; the floor is ``learning_rate · min_lr_factor``
    lr_schedule: str = "cosine"
    min_lr_factor: float = 0.01
    weight_decay: float = 0.0
    #: the gradient's global 2-norm is clipped to this before every Adam step
    grad_clip: float = 1.0
    val_fraction: float = 0.2
    #: early stopping: Adam stops after this many epochs without a better validation loss (the
    #: training loss without a validation split) and the best epoch's weights are restored; 0 = off
    patience: int = 100
    seed: int = 0
    device: str = "auto"
    #: "auto": float32 on CUDA (its fast arithmetic), float64 on CPU (where it costs little and L-BFGS needs it)
    dtype: str = "auto"
    #: "observed": windows start from the observed states; "learned": the L-BFGS phase rolls every
    #: training trajectory out whole (whatever its length) from a free start state fitted with the
    #: weights, its misfit to the observed start counted as one more point (errors-in-variables: noisy
    #: starts stop biasing the dynamics). Needs lbfgs_iterations > 0; not for the hnn baseline
    initial_state: str = "observed"
    #: see `TRAIN_ENGINES`; both give the same gradients to round-off
    engine: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"must be {rule}, got {getattr(self, name)!r}", field=f"training.{name}")

        for name, lo, hi in (("epochs", 1, 1_000_000), ("batch_size", 1, 1_000_000),
                             ("rollout_steps", 1, 10_000), ("patience", 0, 1_000_000),
                             ("lbfgs_iterations", 0, 100_000), ("lbfgs_max_windows", 1, 10_000_000)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad(name, f"an integer in [{lo}, {hi}]")
        if self.lbfgs_rollout_steps is not None and (isinstance(self.lbfgs_rollout_steps, bool) or not (
                isinstance(self.lbfgs_rollout_steps, int) and 1 <= self.lbfgs_rollout_steps <= 10_000)):
            raise bad("lbfgs_rollout_steps", "null or an integer in [1, 10000]")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED):
            raise bad("seed", f"an integer in [0, {MAX_SEED}] (torch's generators take 64-bit seeds)")
        for name in ("learning_rate", "min_lr_factor", "grad_clip", "weight_decay", "val_fraction"):
            # numpy floats become plain ones (the config is stored as JSON); strings, bools and None are refused
            setattr(self, name, check_real(getattr(self, name), f"training.{name}", ConfigError))
        for name in ("learning_rate", "min_lr_factor", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, "a finite number > 0")
        if not (0 <= self.weight_decay < 1):
            raise bad("weight_decay", "in [0, 1)")
        if not (0 <= self.val_fraction < 1):
            raise bad("val_fraction", "in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"one of {list(LR_SCHEDULES)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise bad("device", "one of ['auto', 'cpu', 'cuda']")
        if self.dtype not in ("auto", "float32", "float64"):
            raise bad("dtype", "one of ['auto', 'float32', 'float64']")
        if self.initial_state not in INITIAL_STATES:
            raise bad("initial_state", f"one of {list(INITIAL_STATES)}")
        if self.initial_state == "learned" and self.lbfgs_iterations == 0:
            raise ConfigError("'learned' start states are fitted in the L-BFGS phase: set lbfgs_iterations > 0",
                              field="training.initial_state")
        if self.engine not in TRAIN_ENGINES:
            raise bad("engine", f"one of {list(TRAIN_ENGINES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → float32 on CUDA, float64 elsewhere; else the named dtype."""
    if name == "auto":
        return torch.float32 if device.type == "cuda" else torch.float64
    return torch.float64 if name == "float64" else torch.float32


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no GPU is available; use 'auto' or 'cpu'",
                          field="training.device")
    return torch.device(name)


@dataclass
class Windows:
    """Training windows: start states, the next k observed states and the k step sizes."""

    x0: Tensor  # (W, 2n)
    target: Tensor  # (W, k, 2n)
    h: Tensor  # (W, k)

    def __len__(self) -> int:
        return int(self.x0.shape[0])

    def to(self, device: torch.device, dtype: torch.dtype) -> Windows:
        return Windows(*(a.to(device=device, dtype=dtype) for a in (self.x0, self.target, self.h)))

    def batch(self, idx: Tensor) -> Windows:
        return Windows(self.x0[idx], self.target[idx], self.h[idx])


def make_windows(ds: TrajectoryDataset, k: int) -> Windows:
    """All windows of ``k`` steps (every start point); ``k`` is capped by the shortest trajectory."""
    k = min(k, min(tr.n_points - 1 for tr in ds.trajectories))
    x0, target, h = [], [], []
    for tr in ds.trajectories:
        s = tr.state
        n_win = tr.n_points - k
        idx = np.arange(n_win)[:, None] + np.arange(1, k + 1)[None, :]
        x0.append(s[:n_win])
        target.append(s[idx])
        h.append(tr.steps[np.arange(n_win)[:, None] + np.arange(k)[None, :]])
    return Windows(*(torch.from_numpy(np.concatenate(a)) for a in (x0, target, h)))


def _whole_trajectories(ds: TrajectoryDataset) -> list[tuple[Tensor, Windows]]:
    """Every trajectory as one window from its first observed state to its last, grouped by length
    (a `Windows` stacks equal lengths): ``(indices into ds, windows)`` per length."""
    by_length: dict[int, list[int]] = {}
    for i, tr in enumerate(ds.trajectories):
        by_length.setdefault(tr.n_points, []).append(i)
    groups = []
    for idx in by_length.values():
        trs = [ds.trajectories[i] for i in idx]
        groups.append((torch.tensor(idx), Windows(*(torch.from_numpy(np.stack(a)) for a in (
            [tr.state[0] for tr in trs], [tr.state[1:] for tr in trs], [tr.steps for tr in trs])))))
    return groups


def dataset_rates(ds: TrajectoryDataset) -> np.ndarray:
    """Finite-difference (dq/dt, dp/dt) at every observed state, ``(N, 2n)``."""
    return np.concatenate([finite_difference_rates(tr.t, tr.state) for tr in ds.trajectories])


@dataclass
class TrainResult:
    model: DynamicsModel
    spec: ModelSpec
    config: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None  # None: nothing held out for validation
    final_train_loss: float = math.nan
    stopped_early: bool = False
    #: why the L-BFGS phase ended ("" when it did not run): its budget, a plateau, convergence, or —
    #: with a warning logged — a non-finite loss, state or validation loss, after which the best
    #: weights from before are kept (a polish phase must not lose the Adam solution)
    lbfgs_stopped: str = ""
    seconds: float = 0.0
    energy_offset: float = 0.0
    n_train: int = 0
    n_val: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "final_train_loss": self.final_train_loss,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            "lbfgs_stopped": self.lbfgs_stopped,
            "seconds": self.seconds,
            "energy_offset": self.energy_offset,
            "n_train_trajectories": self.n_train,
            "n_val_trajectories": self.n_val,
        }


ProgressFn = Callable[[dict[str, Any]], None]
LBFGS_CHUNK = 20  # L-BFGS iterations between progress reports / cancellation checks
LBFGS_PATIENCE = 5  # chunks without a 1% better monitored loss before L-BFGS stops
LBFGS_MIN_GAIN = 0.01  # a chunk "improves" only by this fraction: creeping 1e-3 gains are a plateau


class _Tracker:
    """Loss history, the best weights so far (by validation loss, else training loss), progress."""

    def __init__(self, model: DynamicsModel, result: TrainResult, total: int, t_start: float,
                 progress: ProgressFn | None) -> None:
        self.model, self.result, self.total = model, result, total
        self.t_start, self.progress = t_start, progress
        self.best = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.start: Tensor | None = None  # learned initial states, kept in step with the best weights
        self.best_start: Tensor | None = None

    def record(self, epoch: int, phase: str, train_loss: float, val_loss: float | None, lr: float,
               accept: bool = False) -> bool:
        """Log an epoch; keep its weights if the monitored loss improved (or ``accept``)."""
        rec = {"epoch": epoch, "epochs": self.total, "phase": phase, "train_loss": train_loss,
               "val_loss": val_loss, "lr": lr, "seconds": time.perf_counter() - self.t_start}
        self.result.history.append(rec)
        if self.progress is not None:
            self.progress(dict(rec))
        monitor = train_loss if val_loss is None else val_loss
        if accept or monitor < self.best:
            self.best = monitor
            self.best_state = copy.deepcopy(self.model.state_dict())
            if self.start is not None:
                self.best_start = self.start.detach().clone()
            self.result.best_epoch = epoch
            return True
        return False

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.start is not None and self.best_start is not None:
            with torch.no_grad():
                self.start.copy_(self.best_start)


def _compiled_engine(model: DynamicsModel, engine: str) -> Any:
    """`hinn_core.fastpath.autograd` when ``engine`` asks for it and it covers the model, else None."""
    if engine == "torch":
        return None
    try:
        from hinn_core.fastpath import autograd as compiled
    except ImportError:  # pragma: no cover - numba missing
        compiled = None
    if compiled is not None and compiled.supports(model):
        return compiled
    if engine == "numba":
        raise ConfigError("the compiled training engine cannot run this model (it needs numba, a CPU model and "
                          "an explicit scheme or implicit midpoint; symplectic Euler and leapfrog only for "
                          "hinn-separable); use engine='auto' or 'torch'", field="training.engine")
    return None


def _rollout_loss(model: DynamicsModel, w: Windows, start: Tensor | None = None, engine: str = "torch") -> Tensor:
    """MSE of the k rolled-out states; with a learned ``start`` its misfit to the observed start counts too.

    ``engine`` as `TrainConfig.engine`: "torch" differentiates `DynamicsModel.rollout` by autograd;
    the compiled engine computes the sum of squares and its gradient in one fused pass."""
    n = model.dof
    x0 = w.x0 if start is None else start
    compiled = _compiled_engine(model, engine)
    if compiled is not None:
        sse = compiled.rollout_sse(model, x0[:, :n], x0[:, n:], w.h, w.target)
    else:
        q, p = model.rollout(x0[:, :n], x0[:, n:], w.h)
        sse = torch.sum((torch.cat([q[:, 1:], p[:, 1:]], dim=-1) - w.target) ** 2)
    if start is None:
        return sse / w.target.numel()
    k = w.target.shape[1]
    return (sse + torch.sum((start - w.x0) ** 2)) / (w.x0.numel() * (k + 1))


def _learned_start_loss(model: DynamicsModel, groups: list[tuple[Tensor, Windows]], start: Tensor,
                        engine: str) -> Tensor:
    """`_rollout_loss` with learned starts over trajectories of several lengths: each group rolled
    out from its rows of ``start``, the squares summed over all groups and divided by their count."""
    if len(groups) == 1:  # one length: exactly `_rollout_loss`
        idx, w = groups[0]
        return _rollout_loss(model, w, start[idx], engine)
    total: Tensor | float = 0.0
    count = 0
    for idx, w in groups:
        points = w.x0.numel() * (w.target.shape[1] + 1)
        total = total + _rollout_loss(model, w, start[idx], engine) * points
        count += points
    return total / count


def _check_train_inputs(dataset: TrajectoryDataset, spec: ModelSpec, config: TrainConfig,
                        val_dataset: TrajectoryDataset | None, derivative_targets: Any) -> None:
    """What `train`'s arguments must agree on, each a `ConfigError` naming the argument; warnings
    for what runs but is unlikely to be meant."""
    check_options(spec, config)
    if val_dataset is not None and val_dataset.dof != dataset.dof:
        raise ConfigError(f"has dof {val_dataset.dof}, the training data {dataset.dof}", field="val_dataset")
    if derivative_targets is not None and spec.architecture != "hnn":
        raise ConfigError(f"apply to the derivative-matching 'hnn' baseline only, not '{spec.architecture}'",
                          field="derivative_targets")
    if derivative_targets is not None:
        try:
            states, rates = (a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
                             for a in derivative_targets)
        except (TypeError, ValueError):
            raise ConfigError("must be a pair of arrays (states, dx/dt)", field="derivative_targets") from None
        if states.ndim != 2 or states.shape[1:] != (2 * spec.dof,) or rates.shape != states.shape or not len(states):
            raise ConfigError(f"must be two arrays of shape (N, {2 * spec.dof}) with the same N >= 1, got "
                              f"{states.shape} and {rates.shape}", field="derivative_targets")
        if not (np.isfinite(states).all() and np.isfinite(rates).all()):
            raise ConfigError("contain NaN or infinity", field="derivative_targets")
    system = dataset.system
    if system is not None and not system.separable and spec.architecture == "hinn-separable":
        logger.warning("training: the %s system's H couples q and p; hinn-separable learns T(p) + V(q) only "
                       "(architecture 'hinn' learns any H)", system.name)


def check_options(spec: ModelSpec, config: TrainConfig) -> None:
    """What a model spec and a training config must agree on (`train` checks it; a service can check
    it before queueing a job): a `ConfigError` naming the option."""
    if spec.architecture == "hnn" and config.initial_state == "learned":
        raise ConfigError("'learned' start states need a rollout loss; the hnn baseline matches derivatives",
                          field="training.initial_state")


def _derivative_loss(model: DynamicsModel, x: Tensor, dx: Tensor) -> Tensor:
    n = model.dof
    dq, dp = model.rates(x[:, :n], x[:, n:])
    return torch.mean((torch.cat([dq, dp], dim=-1) - dx) ** 2)


def train(
    dataset: TrajectoryDataset,
    spec: ModelSpec | None = None,
    config: TrainConfig | None = None,
    *,
    val_dataset: TrajectoryDataset | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    derivative_targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train a model on ``dataset`` and return it with its loss history.

    ``val_dataset`` defaults to a ``val_fraction`` split of ``dataset`` by trajectory.
    ``derivative_targets`` = (states, dx/dt), ``(N, 2n)`` each, replaces the finite differences
    of the training data for the ``hnn`` baseline (e.g. exact derivatives, as HNN's protocol uses).
    ``progress`` receives ``{"epoch", "epochs", "train_loss", "val_loss", "lr", "seconds"}``
    after every epoch (``val_loss`` None when nothing is held out for validation); ``should_stop()``
    is polled between epochs and raises `TrainingCancelled`.
    Raises `TrainingDiverged` if the loss or the rolled-out state becomes non-finite in the Adam phase.
    In the L-BFGS polish that follows, a non-finite loss, state or validation loss (or a failed implicit
    step) stops the polish instead: the best weights so far are kept, the reason is recorded in
    ``TrainResult.lbfgs_stopped`` and logged as a warning.
    """
    config = config or TrainConfig()
    spec = spec or ModelSpec(dof=dataset.dof)
    if spec.dof != dataset.dof:
        raise ConfigError(f"model dof {spec.dof} does not match the data's dof {dataset.dof}", field="model.dof")
    _check_train_inputs(dataset, spec, config, val_dataset, derivative_targets)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    t_start = time.perf_counter()

    train_ds = dataset
    if val_dataset is None and config.val_fraction > 0 and len(dataset) >= 2:
        train_ds, val_dataset = dataset.split((1 - config.val_fraction, config.val_fraction), seed=config.seed)

    shortest = min(tr.n_points for tr in train_ds.trajectories) - 1
    if spec.architecture != "hnn" and shortest < config.rollout_steps:
        logger.warning("training: the shortest training trajectory has %d step(s): every training window is %d "
                       "step(s) long, not rollout_steps = %d", shortest, shortest, config.rollout_steps)

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = DynamicsModel(spec).to(device=device, dtype=dtype)
    rates = dataset_rates(train_ds)
    model.fit_normalisation(train_ds.states(), rates)

    derivative = spec.architecture == "hnn"
    start: torch.nn.Parameter | None = None
    if derivative:
        states, targets = derivative_targets if derivative_targets is not None else (train_ds.states(), rates)
        x_train = torch.as_tensor(states, device=device, dtype=dtype)
        dx_train = torch.as_tensor(targets, device=device, dtype=dtype)
        n_samples = len(x_train)
    else:
        win = make_windows(train_ds, config.rollout_steps).to(device, dtype)
        n_samples = len(win)
    params = [*model.parameters(), *([start] if start is not None else [])]
    val_win = make_windows(val_dataset, config.rollout_steps).to(device, dtype) if val_dataset else None

    opt = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched: Any = None
    if config.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=config.epochs, eta_min=config.learning_rate * config.min_lr_factor)
    elif config.lr_schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE, min_lr=config.learning_rate * config.min_lr_factor)

    result = TrainResult(model=model, spec=spec, config=config, n_train=len(train_ds),
                         n_val=len(val_dataset) if val_dataset else 0)
    n_chunks = math.ceil(config.lbfgs_iterations / LBFGS_CHUNK)
    tracker = _Tracker(model, result, config.epochs + n_chunks, t_start, progress)

    def validate(epoch: int) -> float | None:
        if val_win is None:
            return None
        model.eval()
        try:
            with torch.no_grad():
                val = float(_rollout_loss(model, val_win, engine=config.engine))
        except IntegrationError as exc:
            raise TrainingDiverged(f"epoch {epoch} (validation): {exc}") from exc
        if not math.isfinite(val):
            raise TrainingDiverged(f"validation loss became non-finite at epoch {epoch}")
        return val

    def check_cancel(epoch: int) -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"training cancelled before epoch {epoch}")

    since_best = 0
    for epoch in range(1, config.epochs + 1):
        check_cancel(epoch)
        model.train()
        perm = torch.randperm(n_samples, generator=gen).to(device)
        total, count = 0.0, 0
        for b in range(0, n_samples, config.batch_size):
            idx = perm[b : b + config.batch_size]
            try:
                if derivative:
                    loss = _derivative_loss(model, x_train[idx], dx_train[idx])
                else:
                    loss = _rollout_loss(model, win.batch(idx), engine=config.engine)
            except IntegrationError as exc:
                raise TrainingDiverged(f"epoch {epoch}: {exc}") from exc
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became non-finite at epoch {epoch}; try a smaller learning_rate, a smaller "
                    "dt, or integrator='implicit_midpoint'")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        train_loss = total / count
        val_loss = validate(epoch)
        lr = opt.param_groups[0]["lr"]
        improved = tracker.record(epoch, "adam", train_loss, val_loss, lr)
        since_best = 0 if improved else since_best + 1
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss if val_win is not None else train_loss)
        elif sched is not None:
            sched.step()
        if config.patience and since_best >= config.patience:
            result.stopped_early = True
            break

    if n_chunks:
        tracker.restore_best()
        if derivative:
            def full_loss() -> Tensor:
                return _derivative_loss(model, x_train, dx_train)
        else:
            if config.initial_state == "learned":
                # errors-in-variables: every trajectory is rolled out whole from a free start state, fitted
                # jointly with the weights from the Adam solution (one start per trajectory: the noise can
                # only be explained by the dynamics, not by extra freedom along the way)
                fit_ds = train_ds
                if len(fit_ds) > config.lbfgs_max_windows:
                    chosen = torch.randperm(len(fit_ds), generator=gen)[: config.lbfgs_max_windows]
                    fit_ds = fit_ds.subset(sorted(chosen.tolist()))
                groups = [(idx.to(device), w.to(device, dtype)) for idx, w in _whole_trajectories(fit_ds)]
                start = torch.nn.Parameter(torch.as_tensor(np.stack([tr.state[0] for tr in fit_ds.trajectories]),
                                                           device=device, dtype=dtype))
                params.append(start)
                tracker.start = start

                def full_loss() -> Tensor:
                    return _learned_start_loss(model, groups, start, config.engine)
            else:
                lw = make_windows(train_ds, config.lbfgs_rollout_steps or 2 * config.rollout_steps).to(device, dtype)
                if len(lw) > config.lbfgs_max_windows:
                    lw = lw.batch(torch.randperm(len(lw), generator=gen)[: config.lbfgs_max_windows].to(device))

                def full_loss() -> Tensor:
                    return _rollout_loss(model, lw, None, config.engine)

        lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=LBFGS_CHUNK, max_eval=2 * LBFGS_CHUNK,
                                  history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-16)
        last: dict[str, float] = {}
        evals: dict[str, Any] = {"n": 0, "first_bad": 0, "bad_value": math.nan}

        def closure() -> Tensor:
            lbfgs.zero_grad(set_to_none=True)
            evals["n"] += 1
            loss = full_loss()
            if torch.isfinite(loss):
                loss.backward()
            elif not evals["first_bad"]:
                evals["first_bad"], evals["bad_value"] = evals["n"], float(loss.detach())
            last["loss"] = float(loss.detach())
            return loss

        def n_iter() -> int:
            return int(lbfgs.state[lbfgs._params[0]].get("n_iter", 0)) if lbfgs.state else 0

        def stop_unstable(what: str) -> None:
            result.lbfgs_stopped = (f"{what} in L-BFGS iteration {n_iter()} (epoch {epoch}); "
                                    f"kept the best weights (epoch {result.best_epoch})")
            logger.warning("training: L-BFGS polish stopped: %s", result.lbfgs_stopped)

        model.train()
        stale, plateau_ref = 0, math.inf
        for chunk in range(1, n_chunks + 1):
            epoch = config.epochs + chunk
            check_cancel(epoch)
            iters_before, evals["first_bad"] = n_iter(), 0
            try:
                lbfgs.step(closure)
            except IntegrationError as exc:
                # a line-search trial left the stable region: keep the best weights so far
                stop_unstable(f"implicit step failed ({exc})")
                break
            if not math.isfinite(last.get("loss", math.nan)):
                stop_unstable(f"non-finite loss ({evals['bad_value']}) at loss evaluation {evals['first_bad']}")
                break
            if not all(torch.isfinite(p_).all() for p_ in params):
                stop_unstable("non-finite weights or start states")
                break
            # with learned starts the joint misfit is the criterion: a validation loss from noisy observed
            # starts is biased by the very noise the learned starts remove, so it cannot veto a step
            try:
                val = validate(epoch)
            except TrainingDiverged as exc:
                stop_unstable(f"validation diverged ({exc})")
                break
            tracker.record(epoch, "lbfgs", last["loss"], val, 1.0, accept=start is not None)
            # learned starts: the full budget (on noisy data the misfit sits at the noise floor while
            # the dynamics still improve: stopping at 1 % gains cost 2× state error on spring σ = 0.1)
            monitor = last["loss"] if val is None else val
            if start is not None or monitor < plateau_ref * (1.0 - LBFGS_MIN_GAIN):
                plateau_ref, stale = monitor, 0
            else:
                stale += 1
            if stale >= LBFGS_PATIENCE:
                result.lbfgs_stopped = f"plateau: {LBFGS_PATIENCE} chunks without a {LBFGS_MIN_GAIN:.0%} gain"
                break
            if n_iter() == iters_before:
                result.lbfgs_stopped = "converged: L-BFGS made no step"
                break
        else:
            result.lbfgs_stopped = f"budget: {config.lbfgs_iterations} iterations"

    tracker.restore_best()
    model.eval()
    system = dataset.system
    states = train_ds.states()
    true_energy = None
    if system is not None and spec.is_hamiltonian:
        true_energy = np.asarray(system.hamiltonian(states[:, : spec.dof], states[:, spec.dof :]))
    result.energy_offset = model.calibrate_energy(states, true_energy)
    result.best_val_loss = tracker.best if val_win is not None else None
    result.final_train_loss = result.history[-1]["train_loss"]
    result.seconds = time.perf_counter() - t_start
    return result
