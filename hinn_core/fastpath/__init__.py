"""Compiled whole-rollout prediction (numba): the fast path behind `hinn_core.rollout.predict`.

The torch path (`DynamicsModel.rollout`) is the reference; this one computes the same rollout —
every architecture, activation and integrator, implicit stages by Newton — in one compiled call
with no Python, torch, hessQuik or autograd inside the loop: ~1 µs per network sweep instead of
~100 µs of per-step framework overhead. Weights are packed once into contiguous numpy arrays and
cached on the model, keyed by the tensors' storage and version counters, so an optimiser step or
`load_state_dict` repacks them. Agreement with the torch path is tested to round-off.

`supports(model, integrator)` says whether a rollout can run here (CPU model, numba importable,
a built-in integrator); `rollout` raises the same `IntegrationError` messages as the torch path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hinn_core import adaptive
from hinn_core.errors import ConfigError, IntegrationError
from hinn_core.fastpath.cachelock import LOCK_NAME, serialise_cache_saves
from hinn_core.fastpath.vectorwidth import prefer_wide_vectors
from hinn_core.integrators import INTEGRATORS, NEWTON_MAX_ITER, Integrator, _newton_tol
from hinn_core.networks import HamiltonianNet, SeparableHamiltonianNet, VectorFieldNet

#: the CPU features numba compiles for when this module widened its vectors (`vectorwidth`), else
#: None; set before any kernel module is imported, since that fixes numba's target
WIDE_VECTORS = prefer_wide_vectors()

try:  # numba is optional: without it `supports` is False and predict uses torch
    from hinn_core.fastpath import _adaptive as _d
    from hinn_core.fastpath import _adjoint as _a
    from hinn_core.fastpath import _derivatives as _h
    from hinn_core.fastpath import _rollout as _k
    from hinn_core.fastpath._math import ACT_CODES
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _k = None
    _a = None
    _d = None
    _h = None
    ACT_CODES = {}

__all__ = ["KERNELS", "Packed", "available", "compile_kernels", "grad_and_hessian", "is_warm", "is_warming", "pack",
           "parameters", "rollout", "rollout_rk45", "rollout_sse", "rollout_vjp", "supports", "supports_adaptive",
           "supports_training", "warm", "warm_in_background"]


def _drop_stale_cache() -> None:
    """numba checks a cached kernel against its own source file only, but the kernels link
    functions from the sibling files: when any kernel source changed, drop this package's cached
    kernels (they are recompiled on first use). Best effort: an unusual cache location keeps
    numba's own per-file check."""
    try:
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("_[!_]*.py"))))
        cache = Path(_k.rollout._cache._cache_path)
        marker = cache / "hinn-kernels.stamp"
        if marker.is_file() and marker.read_text() == digest.hexdigest():
            return
        for stale in cache.glob("_*.nb[ci]"):
            stale.unlink(missing_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest.hexdigest())
    except Exception:  # noqa: BLE001 - never let cache housekeeping break predictions
        pass


def _lock_cache_saves() -> None:
    """Serialise numba's cache saves across processes (`cachelock`), the lock beside the kernels."""
    try:
        serialise_cache_saves(str(Path(_k.rollout._cache._cache_path) / LOCK_NAME))
    except Exception:  # noqa: BLE001 - an unusual cache location keeps numba's unlocked saves
        pass


if _k is not None:
    _drop_stale_cache()
    _lock_cache_saves()

_INTEGRATOR_CODES = {"euler": 0, "symplectic_euler": 1, "leapfrog": 2, "implicit_midpoint": 3, "rk4": 4}
_ARCH_CODES = {HamiltonianNet: 0, SeparableHamiltonianNet: 1, VectorFieldNet: 2}
_ARCH_NAMES = ("hinn", "hinn-separable", "mlp")  # one architecture per field class above


def _env_int(name: str, default: int, minimum: int) -> int:
    """An integer setting from the environment; a `ConfigError` naming the variable (read at import,
    so that a typo stops `hinn` at start-up with one line, not a request with a traceback)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {raw!r}", field=name)
    return value


#: rollouts with at least this many initial conditions spread their blocks over `THREADS` threads
PARALLEL_MIN_BATCH = _env_int("HINN_FASTPATH_PARALLEL_MIN", 512, 1)
THREADS = _env_int("HINN_FASTPATH_THREADS", len(os.sched_getaffinity(0)), 1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="hinn-fastpath")
        return _POOL


def available() -> bool:
    """numba imported and the kernels are importable."""
    return _k is not None


# Compiling the kernels takes 5-10 min of one core (about a minute per kernel and dtype on a Zen 4,
# twice that on a Zen 3; `python -m hinn_core.fastpath` spreads them over processes). numba caches
# them on disk (`cache=True`: beside the sources, or under NUMBA_CACHE_DIR), after which loading
# takes under a second. `warm` does it for every architecture and dtype; `hinn serve` runs it in
# the background at start, and `predict(engine="auto")` takes the torch path rather than wait
# while that is under way.
_WARM = threading.Event()
_WARMING = threading.Event()
_WARM_LOCK = threading.Lock()
_FAILED: list[str] = []  # why a background warm-up failed: then the torch path serves everything


def is_warm() -> bool:
    """The kernels are compiled (or loaded from the disk cache) in this process."""
    return _WARM.is_set()


def is_warming() -> bool:
    """A `warm_in_background` thread is compiling the kernels right now."""
    return _WARMING.is_set() and not _WARM.is_set()


#: what `compile_kernels` compiles: the prediction kernel (with the compiled Hessian,
#: `grad_and_hessian`), the training (adjoint) kernel and the adaptive RK45 prediction kernel
KERNELS = ("rollout", "training", "adaptive")


def compile_kernels(dtype: torch.dtype, kernel: str) -> None:
    """Compile (or load from the disk cache) one of `KERNELS` in one dtype. The architecture is a
    runtime argument of the kernels, so one signature serves all three architectures; each is still
    called once per architecture (the vector field has no H, so no Hessian)."""
    from hinn_core.models import DynamicsModel, ModelSpec

    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    h = np.full(2, 0.1)
    zero = np.zeros((1, 1))
    for arch in _ARCH_NAMES:
        model = DynamicsModel(ModelSpec(architecture=arch, dof=1, width=2, depth=1)).to(dtype)
        if kernel == "rollout":
            rollout(model, zero, zero, h)
            if arch != "mlp":
                grad_and_hessian(model, zero, zero)
        elif kernel == "adaptive":
            rollout_rk45(model, zero, zero, np.array([0.0, 0.1]), adaptive.Tolerances(rtol=1e-3, atol=1e-6))
        else:
            states = np.zeros((1, 3, 1))
            rollout_vjp(model, zero, zero, h, states, states)
            rollout_sse(model, zero, zero, h, np.zeros((1, 2, 2)))


def warm() -> float:
    """Compile or load the kernels (prediction and training) for every architecture in float64 and
    float32; seconds taken."""
    import time

    started = time.perf_counter()
    with _WARM_LOCK:
        if not _WARM.is_set() and _k is not None:
            for dtype in (torch.float64, torch.float32):
                for kernel in KERNELS:
                    compile_kernels(dtype, kernel)
            _WARM.set()
    return time.perf_counter() - started


def _warm_or_give_up() -> None:
    try:
        warm()
    except Exception as exc:  # noqa: BLE001 - a broken JIT must not take predictions down with it
        _FAILED.append(f"{type(exc).__name__}: {exc}")
        logging.getLogger("hinn.fastpath").warning("compiling the prediction kernels failed (%s); "
                                                   "predictions use the torch path", _FAILED[-1])
    finally:
        _WARMING.clear()


def warm_in_background() -> threading.Thread:
    """Start `warm` in a daemon thread (a no-op thread once warm). Should it fail, the reason is
    logged and `supports` answers False from then on: predictions keep working on torch."""
    _WARMING.set()
    thread = threading.Thread(target=_warm_or_give_up, name="hinn-fastpath-warm", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class Packed:
    """A model's weights as the kernels take them (see `hinn_core.fastpath._trunk`)."""

    net: tuple[np.ndarray, ...]
    nrm: tuple[np.ndarray, ...]
    arch: int
    act: int
    dof: int
    par: np.ndarray  # (resnet step, energy offset, Newton tolerance) in the model dtype


def _integrator_name(integrator: str | Integrator) -> str | None:
    if isinstance(integrator, str):
        return integrator if integrator in _INTEGRATOR_CODES else None
    name = getattr(integrator, "name", None)
    # a subclass may override `step`: only the built-in classes themselves are compiled here
    return name if name in _INTEGRATOR_CODES and type(integrator) is INTEGRATORS[name] else None


def supports_adaptive(model: Any) -> bool:
    """True when the kernels can evaluate ``model``'s field: a built-in architecture and activation,
    on the CPU, in float32 or float64 (what `rollout_rk45` needs; `supports` adds the integrator)."""
    if _k is None or _FAILED:
        return False
    field = getattr(model, "field", None)
    if type(field) not in _ARCH_CODES or model.device.type != "cpu":
        return False
    return model.dtype in (torch.float32, torch.float64) and model.spec.activation in ACT_CODES


def supports(model: Any, integrator: str | Integrator | None = None) -> bool:
    """True when `rollout` can run ``model`` with ``integrator`` (default: the model's own)."""
    if not supports_adaptive(model):
        return False
    return _integrator_name(integrator if integrator is not None else model.integrator) is not None


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def _trunk_arrays(trunk: Any) -> list[np.ndarray]:
    first, blocks, last = trunk._weights()
    K0, Wo = _np(first.K), _np(last.K)
    Wr = np.stack([_np(b.K) for b in blocks])
    return [K0, _np(first.b), np.ascontiguousarray(K0.T), Wr, np.stack([_np(b.b) for b in blocks]),
            np.ascontiguousarray(Wr.transpose(0, 2, 1)), Wo, _np(last.b)]


def _cache_key(model: Any) -> tuple[Any, ...]:
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)


def pack(model: Any) -> Packed:
    """The packed weights of ``model``, rebuilt only when a parameter or buffer changed."""
    key = _cache_key(model)
    cached = model.__dict__.get("_fastpath_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    field = model.field
    trunks = [field.potential, field.kinetic] if isinstance(field, SeparableHamiltonianNet) else [field.trunk]
    per_trunk = [_trunk_arrays(t) for t in trunks]
    net = tuple(np.ascontiguousarray(np.stack(parts)) for parts in zip(*per_trunk, strict=True))
    with torch.no_grad():
        m = 2 * field.dof
        osc = field.out_scale.expand(m) if field.out_scale.dim() == 0 else field.out_scale
        gsc = field.out_scale / field.scale
        nrm = tuple(_np(t) for t in (field.shift, field.scale, osc, gsc))
        offset = float(field.energy_offset)
    dt = nrm[0].dtype
    tol = _newton_tol(field.shift)
    packed = Packed(net, nrm, _ARCH_CODES[type(field)], ACT_CODES[model.spec.activation], field.dof,
                    np.array([trunks[0].h, offset, tol], dtype=dt))
    model.__dict__["_fastpath_packed"] = (key, packed)
    return packed


def _raise(err: np.ndarray, errv: np.ndarray, name: str) -> None:
    bad = np.nonzero(err[:, 0])[0]
    if not len(bad):
        return
    first = bad[np.argmin(err[bad, 1])]
    code, k = int(err[first, 0]), int(err[first, 1])
    if code == _k.NONFINITE_STATE:
        raise IntegrationError(f"state became non-finite at step {k} ({name}); try a smaller dt "
                               "or integrator='implicit_midpoint'")
    reason = {
        _k.NONFINITE_NEWTON: "implicit step became non-finite; try a smaller dt",
        _k.SINGULAR: "implicit step hit a singular Newton Jacobian; try a smaller dt",
        _k.NO_CONVERGENCE: (f"implicit step did not converge in {NEWTON_MAX_ITER} Newton iterations "
                            f"(last correction {float(errv[first]):.3g}); try a smaller dt"),
    }[code]
    raise IntegrationError(f"step {k} ({name}): {reason}")


def _block_size(batch: int, packed: Packed, newton: bool = True) -> int:
    """Rows per block: enough to amortise loop and BLAS-call overheads, small enough that the
    workspace stays in a core's cache. Explicit schemes: 64 rows (measured at batch 4096: 1.2–1.6×
    the throughput of 16). Newton's tangent workspace ``(L+2)·S·d·w`` is kept within 256 KiB (two-body
    size: 16 rows, larger blocks were slower; spring size: 64)."""
    if batch <= 1:
        return 1
    if not newton:
        return min(64, batch)
    W0, Wr = packed.net[0], packed.net[3]
    per_row = (Wr.shape[1] + 2) * W0.shape[1] * W0.shape[2] * W0.itemsize
    return int(max(1, min(64, batch, (1 << 18) // max(per_row, 1))))


@dataclass(frozen=True)
class _Call:
    """A rollout's arguments as the kernels take them."""

    name: str
    packed: Packed
    q0: np.ndarray
    p0: np.ndarray
    h: np.ndarray  # (1, T) shared or (B, T)
    cfg: np.ndarray
    block: int
    n_blocks: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, T, dof)."""
        return self.q0.shape[0], self.h.shape[1], self.q0.shape[1]


def _check_states(q: np.ndarray, p: np.ndarray, dof: int) -> None:
    """The kernels index ``(B, dof)`` states without bounds checks: any other shape is refused here."""
    if q.ndim != 2 or q.shape != p.shape or q.shape[1] != dof:
        raise ValueError(f"q and p must both have shape (B, {dof}) for this model, got {q.shape} and {p.shape}")


def _call(model: Any, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, integrator: str | Integrator | None,
          energy: bool = True, block: int | None = None, fused: bool = False,
          reuse_jacobian: bool = True) -> _Call:
    integrator = integrator if integrator is not None else model.integrator
    if not supports(model, integrator):
        raise ValueError("the compiled rollout does not support this model/integrator; use the torch path")
    name = _integrator_name(integrator)
    assert name is not None
    packed = pack(model)
    dt = packed.nrm[0].dtype
    q0 = np.ascontiguousarray(q0, dtype=dt)
    p0 = np.ascontiguousarray(p0, dtype=dt)
    _check_states(q0, p0, packed.dof)
    B, n = q0.shape
    h2 = np.ascontiguousarray(np.atleast_2d(np.asarray(h, dtype=dt)))
    if h2.shape[0] not in (1, B):
        raise ValueError(f"steps must have shape (T,) or ({B}, T), got {np.shape(h)}")
    integ = _INTEGRATOR_CODES[name]
    newton = integ == 3 or (integ in (1, 2) and packed.arch != 1)
    cfg = np.array([packed.arch, packed.act, integ, n, int(newton), NEWTON_MAX_ITER, int(energy), int(fused),
                    round(1e6 * _k.CHORD_RATE) if reuse_jacobian else 0], dtype=np.int64)
    block = block or _block_size(B, packed, newton)
    return _Call(name, packed, q0, p0, h2, cfg, block, -(-B // block))


def _run_blocks(kernel: Any, args: tuple[Any, ...], n_blocks: int, parallel: bool,
                tail: Callable[[int], tuple[Any, ...]]) -> int:
    """Run ``kernel(*args, blk0, blk1, *tail(i))`` over contiguous ranges of blocks, one per thread
    (the kernels release the GIL); returns how many ranges ran."""
    threads = min(THREADS, n_blocks) if parallel else 1
    if threads <= 1:
        kernel(*args, 0, n_blocks, *tail(0))
        return 1
    cuts = np.linspace(0, n_blocks, threads + 1).round().astype(int)
    jobs = [_pool().submit(kernel, *args, int(a), int(b), *tail(i))
            for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))]
    for job in jobs:
        job.result()
    return threads


def _train_block_size(batch: int, packed: Packed) -> int:
    """Rows per block of the reverse sweep: its workspace (about 5(L+1) + 6 rows of width w per
    sample) within ~1 MiB, at most 64 — measured at batch 256: 64 rows were 1.2–1.6× faster than 16
    (BLAS calls on taller operands), 256 no better for width 32 and slower for width 64."""
    W0, Wr = packed.net[0], packed.net[3]
    per_row = (5 * (Wr.shape[1] + 1) + 6) * W0.shape[2] * W0.itemsize
    return int(max(1, min(64, batch, (1 << 20) // max(per_row, 1))))


def rollout(model: Any, q0: np.ndarray, p0: np.ndarray, h: np.ndarray,
            integrator: str | Integrator | None = None, *, parallel: bool | None = None,
            energy: bool = True, reuse_jacobian: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Integrate ``q0, p0: (B, dof)`` over steps ``h: (T,)`` or ``(B, T)`` as `DynamicsModel.rollout`.

    Returns ``q, p: (B, T+1, dof)`` and the learned ``H: (B, T+1)`` (None for the vector field, or
    with ``energy=False``), in the model's dtype. ``parallel`` (default: B ≥ `PARALLEL_MIN_BATCH`)
    spreads blocks over threads. Implicit stages solve to the torch path's tolerance by simplified
    Newton, which keeps a Jacobian across iterations and steps while it contracts well;
    ``reuse_jacobian=False`` re-evaluates it every iteration, as the torch path (same root).
    """
    c = _call(model, q0, p0, h, integrator, energy, reuse_jacobian=reuse_jacobian)
    B, T, n = c.shape
    dt = c.q0.dtype
    q = np.empty((B, T + 1, n), dt)
    p = np.empty((B, T + 1, n), dt)
    H = np.empty((B, T + 1), dt)
    err = np.zeros((c.n_blocks, 2), np.int64)
    errv = np.zeros(c.n_blocks, np.float64)
    args = (c.packed.net, c.packed.nrm, c.cfg, c.packed.par, c.q0, c.p0, c.h, q, p, H, c.block)
    _run_blocks(_k.rollout, args, c.n_blocks, B >= PARALLEL_MIN_BATCH if parallel is None else parallel,
                lambda _: (err, errv))
    _raise(err, errv, c.name)
    return q, p, (H if c.packed.arch != 2 and energy else None)


def grad_and_hessian(model: Any, q: np.ndarray, p: np.ndarray, *,
                     parallel: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(∂H/∂q, ∂H/∂p, ∇²H)`` at ``q, p: (B, dof)``, as the field's torch ``grad_and_hessian``
    (shapes ``(B, dof)``, ``(B, dof)``, ``(B, 2·dof, 2·dof)``, the model's dtype): the derivative
    sweep implicit midpoint's Newton steps run inside the rollout kernel, in blocks of rows over
    threads for large batches (``parallel`` as in `rollout`). H nets only."""
    if not supports_adaptive(model) or isinstance(model.field, VectorFieldNet):
        raise ValueError("the compiled Hessian needs an H net (hinn or hinn-separable) on the CPU in float32 or "
                         "float64 with a built-in activation; use the field's grad_and_hessian")
    packed = pack(model)
    dt = packed.nrm[0].dtype
    q = np.asarray(q, dtype=dt)
    p = np.asarray(p, dtype=dt)
    n = packed.dof
    _check_states(q, p, n)
    X = np.ascontiguousarray(np.concatenate([q, p], 1))
    B = X.shape[0]
    G = np.empty((B, 2 * n), dt)
    hess = np.empty((B, 2 * n, 2 * n), dt)
    if B:
        block = _block_size(B, packed)
        args = (packed.net, packed.nrm, packed.arch, packed.act, packed.par[0], n, X, G, hess, block)
        _run_blocks(_h.grad_hessian, args, -(-B // block), B >= PARALLEL_MIN_BATCH if parallel is None else parallel,
                    lambda _: ())
    return G[:, :n], G[:, n:], hess


def _tableau(dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """`hinn_core.adaptive`'s Dormand–Prince tableau as the kernel takes it: A (6, 6), B, E, P."""
    a = np.zeros((6, 6), dtype)
    for i, row in enumerate(adaptive.A):
        a[i, :len(row)] = row
    return a, np.array(adaptive.B, dtype), np.array(adaptive.E, dtype), np.array(adaptive.P, dtype)


def rollout_rk45(model: Any, q0: np.ndarray, p0: np.ndarray, times: np.ndarray,
                 tol: adaptive.Tolerances = adaptive.DEFAULT_TOLERANCES, *, parallel: bool | None = None,
                 energy: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """`hinn_core.adaptive.rk45` compiled: ``q, p: (B, T+1, dof)`` at ``times`` from ``q0, p0: (B, dof)``,
    the learned ``H: (B, T+1)`` (None for the vector field or with ``energy=False``) and the field
    evaluations per trajectory ``(B,)``. Each trajectory has its own step-size control, as in the
    reference; blocks of up to 64 advance in lock step, one sweep of rows per stage (rows agree with
    a trajectory computed alone to round-off); ``parallel`` (default: B ≥ `PARALLEL_MIN_BATCH`)
    spreads the blocks over threads."""
    if not supports_adaptive(model):
        raise ValueError("the compiled rollout does not support this model; use the torch path")
    packed = pack(model)
    dt = packed.nrm[0].dtype
    tol = tol.checked(model.dtype)
    _check_states(np.asarray(q0), np.asarray(p0), packed.dof)
    x0 = np.ascontiguousarray(np.concatenate([np.asarray(q0, dt), np.asarray(p0, dt)], axis=1))
    times = np.ascontiguousarray(times, dtype=dt)
    B, n = x0.shape[0], packed.dof
    T1 = times.shape[0]
    q = np.empty((B, T1, n), dt)
    p = np.empty((B, T1, n), dt)
    H = np.empty((B, T1), dt)
    err = np.zeros(B, np.int64)
    errt = np.zeros(B, dt)
    nfev = np.zeros(B, np.int64)
    block = max(1, min(64, B))  # as the explicit fixed-step kernels; a block's trajectories share each sweep
    cfg = np.array([packed.arch, packed.act, n, int(energy), tol.max_steps, block], dtype=np.int64)
    par = np.array([packed.par[0], packed.par[1], tol.rtol, tol.atol], dtype=dt)
    args = (packed.net, packed.nrm, cfg, par, _tableau(dt), x0, times, q, p, H)
    _run_blocks(_d.rk45, args, -(-B // block), B >= PARALLEL_MIN_BATCH if parallel is None else parallel,
                lambda _: (err, errt, nfev))
    bad = np.nonzero(err)[0]
    if len(bad):
        i = int(bad[0])
        raise adaptive.failure(int(err[i]), float(errt[i]), i, tol)
    return q, p, (H if packed.arch != 2 and energy else None), nfev


def supports_training(model: Any, integrator: str | Integrator | None = None) -> bool:
    """True when `rollout_vjp` can differentiate the rollout: `supports`, except symplectic Euler and
    leapfrog on a non-separable field (their Newton stages have no compiled adjoint; torch has one)."""
    if _a is None or not supports(model, integrator):
        return False
    name = _integrator_name(integrator if integrator is not None else model.integrator)
    return not (name in ("symplectic_euler", "leapfrog") and _ARCH_CODES[type(model.field)] != 1)


def parameters(model: Any) -> list[torch.nn.Parameter]:
    """The weights in the order `rollout_vjp` returns their gradients: per trunk (V then T for
    the separable net) the first layer's K, b, each resnet layer's K, b, the last layer's K, b."""
    field = model.field
    trunks = [field.potential, field.kinetic] if isinstance(field, SeparableHamiltonianNet) else [field.trunk]
    out = []
    for trunk in trunks:
        first, blocks, last = trunk._weights()
        out += [first.K, first.b]
        for blk in blocks:
            out += [blk.K, blk.b]
        out += [last.K, last.b]
    return out


def rollout_vjp(model: Any, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, gq: np.ndarray, gp: np.ndarray,
                integrator: str | Integrator | None = None, *, parallel: bool | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Reverse mode through `rollout`: given the cotangents ``gq, gp (B, T+1, dof)`` of its states,
    the start states' ``dq0, dp0 (B, dof)`` and the weights' gradients, in `parameters` order.

    Raises `IntegrationError` where the rollout itself would (it is re-run block by block).
    """
    _, dq0, dp0, grads = _reverse(model, q0, p0, h, integrator, parallel, gq=gq, gp=gp)
    return dq0, dp0, grads


def rollout_sse(model: Any, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, target: np.ndarray,
                integrator: str | Integrator | None = None, *, parallel: bool | None = None
                ) -> tuple[float, np.ndarray, np.ndarray, list[np.ndarray]]:
    """The training loss's sum of squares and its gradient in one pass (no separate forward).

    ``sse = Σ_{b, k≥1} |x_k − target[b, k−1]|²`` for ``target (B, T, 2·dof)`` (q then p), and its
    gradients with respect to the start states and the weights (as `rollout_vjp`).
    """
    return _reverse(model, q0, p0, h, integrator, parallel, target=target)


def _reverse(model: Any, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, integrator: str | Integrator | None,
             parallel: bool | None, *, gq: np.ndarray | None = None, gp: np.ndarray | None = None,
             target: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, list[np.ndarray]]:
    if not supports_training(model, integrator):
        raise ValueError("the compiled adjoint does not support this model/integrator; use the torch path")
    fused = target is not None
    c = _call(model, q0, p0, h, integrator, block=_train_block_size(np.shape(q0)[0], pack(model)), fused=fused)
    B, T, n = c.shape
    dt = c.q0.dtype
    if fused:
        target = np.ascontiguousarray(target, dtype=dt)
        if target.shape != (B, T, 2 * n):
            raise ValueError(f"target must have shape {(B, T, 2 * n)}, got {target.shape}")
        gq, gp = np.empty((B, T + 1, n), dt), np.empty((B, T + 1, n), dt)
    else:
        gq = np.ascontiguousarray(gq, dtype=dt)
        gp = np.ascontiguousarray(gp, dtype=dt)
        if gq.shape != (B, T + 1, n) or gp.shape != (B, T + 1, n):
            raise ValueError(f"state cotangents must have shape {(B, T + 1, n)}, got {gq.shape} and {gp.shape}")
        target = np.zeros((1, 1, 1), dt)
    dq0 = np.empty((B, n), dt)
    dp0 = np.empty((B, n), dt)
    err = np.zeros((c.n_blocks, 2), np.int64)
    sse = np.zeros(c.n_blocks, np.float64)
    net = c.packed.net
    per_thread: list[tuple[np.ndarray, ...]] = []

    def tail(i: int) -> tuple[Any, ...]:  # runs in this thread, before the threads start
        while len(per_thread) <= i:
            per_thread.append(tuple(np.zeros_like(net[j]) for j in (0, 1, 3, 4, 6, 7)))
        return (per_thread[i], err, target, sse)

    args = (net, c.packed.nrm, c.cfg, c.packed.par, c.q0, c.p0, c.h, gq, gp, dq0, dp0, c.block)
    ranges = _run_blocks(_a.rollout_vjp, args, c.n_blocks,
                         B >= PARALLEL_MIN_BATCH if parallel is None else parallel, tail)
    _raise(err, np.zeros(c.n_blocks), c.name)
    total = [sum(g[j] for g in per_thread[:ranges]) for j in range(6)]
    gW0, gb0, gWr, gbr, gWo, gbo = total
    out: list[np.ndarray] = []
    for t in range(gW0.shape[0]):
        out += [gW0[t], gb0[t]]
        for layer in range(gWr.shape[1]):
            out += [gWr[t, layer], gbr[t, layer]]
        out += [gWo[t], gbo[t]]
    return float(sse.sum()), dq0, dp0, out
