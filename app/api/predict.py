"""`POST /predict` (JSON or NPZ) and `POST /predict/plot` (PNG): roll a registered model out.

Bounds are checked before any work: initial conditions ≤ HINN_MAX_INITIAL_CONDITIONS, steps ≤
HINN_MAX_STEPS, their product ≤ HINN_MAX_STATE_STEPS (413 naming the bound). Endpoints are sync
``def``: the rollout runs in the threadpool, on a model from the in-memory LRU cache.

Responses are encoded straight from the numpy arrays: JSON by orjson (~10× ``json.dumps`` of
nested lists, the same numbers), or, on ``Accept: application/vnd.hinn.npz`` (alias
``application/x-npy``), a compact NPZ archive. ``Server-Timing`` reports the rollout and the
encoding time.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
import torch
from fastapi import APIRouter, Body, Header, Response

from app import metrics, registry
from app.api.deps import WRITE_AUTH, CacheDep, DbDep, SettingsDep
from app.db.session import Database
from app.errors import NotAcceptable, TooLarge, Unprocessable
from app.registry import ModelCache
from app.schemas import PREDICT_EXAMPLES, PredictRequest, PredictResponse
from app.settings import Settings
from hinn_core import ConfigError, IntegrationError, LoadedModel, Prediction, System, adaptive, make_system
from hinn_core.plotting import prediction_png
from hinn_core.rollout import check_times, make_time_grid, predict

log = logging.getLogger("hinn.api")
router = APIRouter(tags=["predict"], dependencies=WRITE_AUTH)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown model"},
    410: {"description": "the model with this id was deleted"},
    413: {"description": "too many initial conditions or steps (the problem names the bound)"},
    422: {"description": "invalid initial conditions or times (the problem names the field)"},
}


def time_grid(body: PredictRequest, settings: Settings) -> tuple[np.ndarray, str]:
    """The output times and the field they came from (``dt`` or ``times``), within HINN_MAX_STEPS."""
    uniform = body.t_end is not None or body.dt is not None
    if body.times is not None and uniform:
        raise Unprocessable("give either times or t_end and dt, not both", field="times")
    if body.times is not None:
        if len(body.times) - 1 > settings.max_steps:
            raise TooLarge(f"{len(body.times) - 1} steps exceed the limit of {settings.max_steps} per request "
                           "(HINN_MAX_STEPS)", field="times")
        return check_times(body.times), "times"
    if body.t_end is None:
        raise Unprocessable("is required with dt (or give times instead)" if body.dt is not None
                            else "give t_end and dt, or times", field="t_end")
    if body.dt is None:
        raise Unprocessable("is required with t_end (or give times instead)", field="dt")
    steps = body.t_end / body.dt
    if not math.isfinite(steps) or math.ceil(steps - 1e-9) > settings.max_steps:
        raise TooLarge(f"t_end/dt = {steps:.6g} steps exceed the limit of {settings.max_steps} per request "
                       "(HINN_MAX_STEPS); raise dt or lower t_end", field="dt")
    return make_time_grid(body.t_end, body.dt, max_steps=settings.max_steps), "dt"


def initial_conditions(body: PredictRequest, dof: int) -> tuple[np.ndarray, np.ndarray]:
    """``(B, dof)`` arrays; a wrong length names the exact entry (``initial_conditions[2].q``)."""
    for i, ic in enumerate(body.initial_conditions):
        for name in ("q", "p"):
            n = len(getattr(ic, name))
            if n != dof:
                raise Unprocessable(f"has {n} component(s) but the model has dof {dof}",
                                    field=f"initial_conditions[{i}].{name}")
    q = np.array([ic.q for ic in body.initial_conditions], dtype=np.float64)
    p = np.array([ic.p for ic in body.initial_conditions], dtype=np.float64)
    return q, p


def unusable_start(model: Any, q0: np.ndarray, p0: np.ndarray, pred: Prediction | None = None
                   ) -> Unprocessable | None:
    """When a rollout failed: the error naming the first initial condition at which the learned field,
    its H or the true H is not even finite — the start, not the step size, is at fault there."""
    with torch.no_grad():
        q = torch.as_tensor(q0, dtype=model.dtype, device=model.device)
        p = torch.as_tensor(p0, dtype=model.dtype, device=model.device)
        dq, dp = model.rates(q, p)
        ok = (torch.isfinite(dq).all(dim=1) & torch.isfinite(dp).all(dim=1)).cpu().numpy()
        energy = model.hamiltonian(q, p)
    if energy is not None:
        ok &= np.isfinite(energy.double().cpu().numpy())
    if pred is not None and pred.H_true is not None:
        ok &= np.isfinite(pred.H_true[:, 0])
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return None
    return Unprocessable("the model's vector field or H (or the system's true H) is not finite at this initial "
                         "condition: is it far outside the range the model was trained on?",
                         field=f"initial_conditions[{int(bad[0])}]")


def true_system(loaded: LoadedModel) -> System | None:
    """The generating system recorded in the model's lineage (H_true), if it was a built-in one."""
    source = (loaded.metadata.get("lineage") or {}).get("dataset") or {}
    name = source.get("system") if isinstance(source, dict) else None
    if not name:
        return None
    try:
        return make_system(name, source.get("parameters"))
    except ConfigError:
        log.warning("model %s: lineage names system %r that cannot be rebuilt; no H_true", loaded.sha256[:12], name)
        return None


@dataclass
class Rollout:
    ref: dict[str, Any]
    integrator: str
    prediction: Prediction
    seconds: float = 0.0  # the rollout itself (integrator, H, H_true), for Server-Timing


def run(body: PredictRequest, db: Database, cache: ModelCache, settings: Settings) -> Rollout:
    """Check the bounds, resolve and load the model, roll out; every failure names its field."""
    if len(body.initial_conditions) > settings.max_initial_conditions:
        raise TooLarge(f"{len(body.initial_conditions)} initial conditions exceed the limit of "
                       f"{settings.max_initial_conditions} per request (HINN_MAX_INITIAL_CONDITIONS)",
                       field="initial_conditions")
    times, time_field = time_grid(body, settings)
    state_steps = len(body.initial_conditions) * (len(times) - 1)
    if state_steps > settings.max_state_steps:
        raise TooLarge(f"initial conditions × steps = {state_steps} exceed the limit of {settings.max_state_steps} "
                       "per request (HINN_MAX_STATE_STEPS)", field="initial_conditions")
    with db.session() as s:
        row = registry.resolve(s, body.model, field="model")
        ref = {"id": row.id, "name": row.name, "version": row.version}
        loaded = cache.get(s, row)
    model = loaded.model
    q0, p0 = initial_conditions(body, model.dof)
    integrator = body.integrator or model.spec.integrator or ""
    tolerances = None
    if integrator == adaptive.NAME:
        # each trajectory may attempt as many steps as a fixed-step request could take: HINN_MAX_STEPS,
        # and its share of HINN_MAX_STATE_STEPS (at least one per output interval), so the work stays
        # within the fixed-step bounds (one trajectory with 2M steps took 26 s before this cap)
        share = settings.max_state_steps // len(body.initial_conditions)
        budget = max(len(times) - 1, min(settings.max_steps, share))
        tolerances = adaptive.tolerances_for(model.dtype, body.rtol, body.atol, budget)
    else:
        for name in ("rtol", "atol"):
            if getattr(body, name) is not None:
                raise Unprocessable(f"{name} applies to integrator '{adaptive.NAME}' only, not '{integrator}'",
                                    field=name)
    started = time.perf_counter()
    try:
        pred = predict(model, q0, p0, times, integrator=integrator, system=true_system(loaded),
                       tolerances=tolerances)
    except IntegrationError as exc:
        start = unusable_start(model, q0, p0)
        if start is not None:
            raise start from None
        if tolerances is not None:
            horizon = "t_end" if time_field == "dt" else time_field
            field = horizon if exc.too_many_steps else (
                f"initial_conditions[{exc.trajectory}]" if exc.trajectory is not None else "initial_conditions")
            raise Unprocessable(f"the rollout failed ({exc})", field=field) from None
        raise Unprocessable(f"the rollout failed ({exc}); use smaller steps", field=time_field) from None
    arrays = [a for a in (pred.q, pred.p, pred.H, pred.H_true) if a is not None]
    if not all(np.isfinite(a).all() for a in arrays):
        start = unusable_start(model, q0, p0, pred)
        if start is not None:
            raise start
        raise Unprocessable("the rollout became non-finite (it diverged); use smaller steps or a shorter horizon",
                            field=time_field)
    seconds = time.perf_counter() - started
    metrics.observe_predict(pred.q.shape[0] * (pred.q.shape[1] - 1), seconds)
    return Rollout(ref, integrator, pred, seconds)


NPZ = "application/vnd.hinn.npz"
NPZ_ALIASES = (NPZ, "application/x-npy")
PREDICT_DESCRIPTION = f"""Roll a model out from initial conditions; H is the learned energy (null for the mlp
baseline), H_true the generating system's (built-in systems only).

**Response formats** (content negotiation on `Accept`):

- `application/json` (default): `{{model, integrator, times, trajectories: [{{q, p, H, H_true, evaluations}}]}}`
  (`evaluations`, the field evaluations taken: rk45 only).
- `{NPZ}` (alias `application/x-npy`): a NumPy `.npz` archive — 8 bytes per number instead of
  ~20 characters, no parsing — with arrays `times (T+1,)`, `q`, `p (B, T+1, dof)`, `H (B, T+1)`
  (absent for mlp models), `H_true (B, T+1)` (built-in systems only), `evaluations (B,)` (int64, rk45
  only) and 0-d strings `model`
  (JSON of the model reference) and `integrator`. Add `;dtype=float32` to halve it. Read it with
  `numpy.load(io.BytesIO(body))`.

`Server-Timing` gives the rollout's and the encoding's milliseconds."""


def wants_npz(accept: str | None) -> tuple[bool, Any]:
    """Content negotiation on ``Accept`` (RFC 9110 §12.5.1, q-values honoured): whether to send NPZ, and
    its array dtype (``;dtype=float32``). NPZ only when named (a wildcard means JSON); NPZ wins a tie.
    Raises `NotAcceptable` (406) when the header rules out both formats."""
    if accept is None or not accept.strip():
        return False, np.float64
    ranges = []
    for part in accept.split(","):
        media, *params = (x.strip().lower() for x in part.split(";"))
        if not media:
            continue
        q, dtype = 1.0, np.float64
        for param in params:
            key, _, value = (x.strip() for x in param.partition("="))
            if key == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0  # a malformed weight accepts nothing rather than everything
            elif key == "dtype" and value == "float32":
                dtype = np.float32
        ranges.append((media, q, dtype))
    npz = max(((q, dtype) for media, q, dtype in ranges if media in NPZ_ALIASES), default=(0.0, np.float64),
              key=lambda x: x[0])
    # the most specific range that matches JSON decides its weight
    json_q, specificity = 0.0, -1
    for media, q, _ in ranges:
        rank = {"application/json": 2, "application/*": 1, "*/*": 0}.get(media, -1)
        if rank > specificity:
            json_q, specificity = q, rank
    if npz[0] > 0 and npz[0] >= json_q:
        return True, npz[1]
    if json_q > 0:
        return False, np.float64
    raise NotAcceptable(f"none of the accepted types is offered; /predict answers application/json or {NPZ} "
                        f"(alias application/x-npy), got {accept!r}", field="Accept")


def npz_body(out: Rollout, dtype: Any) -> bytes:
    pred = out.prediction
    arrays = {"times": pred.times, "q": pred.q, "p": pred.p, "H": pred.H, "H_true": pred.H_true}
    buf = io.BytesIO()
    extra = {} if pred.evaluations is None else {"evaluations": np.asarray(pred.evaluations, dtype=np.int64)}
    np.savez(buf, **{k: np.asarray(v, dtype=dtype) for k, v in arrays.items() if v is not None}, **extra,
             model=np.array(json.dumps(out.ref)), integrator=np.array(out.integrator))
    return buf.getvalue()


def json_body(out: Rollout) -> bytes:
    """The `PredictResponse` document, encoded by orjson from the arrays (no Python float lists)."""
    pred = out.prediction
    trajectories = []
    for i in range(pred.q.shape[0]):
        item: dict[str, Any] = {"q": pred.q[i], "p": pred.p[i], "H": pred.H[i] if pred.H is not None else None}
        if pred.H_true is not None:
            item["H_true"] = pred.H_true[i]
        if pred.evaluations is not None:
            item["evaluations"] = int(pred.evaluations[i])
        trajectories.append(item)
    payload = {"model": out.ref, "integrator": out.integrator, "times": pred.times, "trajectories": trajectories}
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


@router.post("/predict", name="predict", response_model=PredictResponse,
             responses={200: {"content": {NPZ: {}}, "description": "the rollout (JSON, or NPZ on request)"},
                        406: {"description": "the Accept header rules out both JSON and NPZ"}, **ERRORS},
             summary="Roll a model out from initial conditions", description=PREDICT_DESCRIPTION)
def predict_json(body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)], db: DbDep,
                 cache: CacheDep, settings: SettingsDep, accept: Annotated[str | None, Header()] = None) -> Response:
    npz, dtype = wants_npz(accept)  # a 406 before any work
    out = run(body, db, cache, settings)
    started = time.perf_counter()
    # built here, not through the response model: validating millions of floats would cost more than the rollout;
    # run() has already rejected non-finite values, which JSON cannot carry
    content, media = (npz_body(out, dtype), NPZ) if npz else (json_body(out), "application/json")
    timing = f"rollout;dur={out.seconds * 1e3:.3f}, encode;dur={(time.perf_counter() - started) * 1e3:.3f}"
    return Response(content, media_type=media, headers={"Server-Timing": timing, "Vary": "Accept"})


@router.post("/predict/plot", name="predict_plot", response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "trajectories, phase portrait, energy"},
                        **ERRORS},
             summary="The same rollout as a PNG: trajectories, phase portrait and energy")
def predict_plot(body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)], db: DbDep,
                 cache: CacheDep, settings: SettingsDep) -> Response:
    out = run(body, db, cache, settings)
    title = f"{out.ref['name']} v{out.ref['version']} ({out.integrator})"
    return Response(prediction_png(out.prediction, title=title), media_type="image/png")
