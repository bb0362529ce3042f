"""Request and response bodies of the REST API (pydantic v2). Field names are the public contract.

Request models forbid unknown keys (a typo such as ``"epoch"`` is a 422 naming it) and reject
NaN/Infinity (``allow_inf_nan=False``: Python's JSON parser accepts those literals). Defaults of
the training options are read from hinn_core's `TrainConfig()`, so the two cannot drift apart.
Checks that depend on the server's settings (limits) or on other rows (dataset ids, model dof)
live in the routes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, Tag

from hinn_core import ARCHITECTURES, INTEGRATORS, SYSTEMS, ModelSpec, TrainConfig
from hinn_core.data import MIN_TRAJECTORIES_TO_HOLD_OUT
from hinn_core.networks import ACTIVATIONS
from hinn_core.rollout import PREDICT_INTEGRATORS
from hinn_core.training import LR_SCHEDULES, MAX_SEED

SystemName = Literal[tuple(SYSTEMS)]  # type: ignore[valid-type]
Architecture = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]
IntegratorName = Literal[tuple(INTEGRATORS)]  # type: ignore[valid-type]
PredictIntegratorName = Literal[PREDICT_INTEGRATORS]  # type: ignore[valid-type]
ActivationName = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]
LRSchedule = Literal[tuple(LR_SCHEDULES)]  # type: ignore[valid-type]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_TC = TrainConfig()
_MS = ModelSpec()


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC (the database clock)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def iso_utc(value: datetime) -> str:
    """One fixed width, ``2026-11-28T01:15:05.300000Z``: pydantic's default drops a zero fraction,
    and such strings would not sort like the times they name."""
    return _utc(value).astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


UTCDateTime = Annotated[datetime, AfterValidator(_utc), PlainSerializer(iso_utc, return_type=str, when_used="json")]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# -- datasets ----------------------------------------------------------------------------------------
class DatasetGenerate(RequestModel):
    """Simulate trajectories of a built-in system (`GET /systems` lists them)."""

    name: str = Field("spring-demo", min_length=1, max_length=200, examples=["spring-demo"])
    system: SystemName = Field(..., description="a built-in system", examples=["spring"])
    parameters: dict[str, Any] | None = Field(
        None, description="system parameters (defaults for those left out; see GET /systems)",
        examples=[{"m": 1.0, "k": 1.0}])
    n_trajectories: int = Field(50, ge=1, description="bounded by HINN_MAX_TRAJECTORIES", examples=[50])
    t_end: float = Field(3.0, gt=0, description="horizon of each trajectory", examples=[3.0])
    dt: float = Field(0.1, gt=0, description="(mean) observation step", examples=[0.1])
    dt_jitter: float = Field(0.0, ge=0, lt=1, description="> 0 gives variable steps dt·(1 ± jitter)",
                             examples=[0.0])
    noise_std: float = Field(0.0, ge=0, description="Gaussian observation noise on q and p", examples=[0.0])
    seed: int = Field(0, ge=0, le=MAX_SEED, examples=[0])


class TrajectoryIn(RequestModel):
    t: list[float] = Field(..., description="strictly increasing times, T+1 points", examples=[[0.0, 0.1, 0.2]])
    q: list[list[float]] = Field(..., description="[T+1][dof]", examples=[[[1.0], [0.995], [0.980]]])
    p: list[list[float]] = Field(..., description="[T+1][dof]", examples=[[[0.0], [-0.0998], [-0.199]]])


class DatasetUpload(RequestModel):
    """Observed trajectories sent inline as JSON (files: `POST /datasets/upload`)."""

    name: str = Field(..., min_length=1, max_length=200, examples=["lab-run-7"])
    trajectories: list[TrajectoryIn] = Field(..., min_length=1)


def _dataset_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "DatasetUpload" if "trajectories" in value else "DatasetGenerate"
    return "DatasetUpload" if isinstance(value, DatasetUpload) else "DatasetGenerate"


#: pydantic puts these tags into validation error locations; the problem layer removes them
UNION_TAGS = frozenset({"DatasetUpload", "DatasetGenerate"})

DatasetCreate = Annotated[
    Annotated[DatasetUpload, Tag("DatasetUpload")] | Annotated[DatasetGenerate, Tag("DatasetGenerate")],
    Discriminator(_dataset_kind),
]


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    n_trajectories: int
    dof: int
    n_points: int = Field(..., description="time points over all trajectories")
    system: str | None = Field(None, description="the generating built-in system, if any")
    source: dict[str, Any]
    time_stats: dict[str, Any]
    size_bytes: int = Field(..., description="stored (compressed) size")
    data_sha256: str
    created_at: UTCDateTime


class TrajectoriesPublic(BaseModel):
    dataset_id: str
    trajectories: list[dict[str, list[Any]]]


# -- training ----------------------------------------------------------------------------------------
class ModelOptions(RequestModel):
    """Network settings; every default is hinn_core's `ModelSpec()` default (the benchmark's best recipe)."""

    architecture: Architecture = Field(
        _MS.architecture, examples=["hinn-separable"],
        description="hinn-separable (H = T(p) + V(q), leapfrog) | hinn (any H(q, p), implicit midpoint: "
        "use it when H couples q and p) | hnn | mlp")
    width: int = Field(_MS.width, ge=1, le=4096, examples=[32])
    depth: int = Field(_MS.depth, ge=1, le=64, examples=[2])
    activation: ActivationName | None = Field(
        None, examples=["antitanh"], description="default: the architecture's own (hinn-separable and mlp: "
        "antitanh = log cosh; hinn and hnn: tanh)")
    resnet_step: float = Field(_MS.resnet_step, gt=0, le=10)


class TrainingOptions(RequestModel):
    """Optimisation settings; every default is hinn_core's `TrainConfig()` default."""

    epochs: int = Field(_TC.epochs, ge=1, description="Adam epochs (bounded by HINN_MAX_EPOCHS)", examples=[100])
    learning_rate: float = Field(_TC.learning_rate, gt=0, examples=[0.01])
    batch_size: int = Field(_TC.batch_size, ge=1, examples=[256])
    rollout_steps: int = Field(_TC.rollout_steps, ge=1, description="k steps per loss window",
                               examples=[_TC.rollout_steps])
    lbfgs_iterations: int = Field(_TC.lbfgs_iterations, ge=0, description="L-BFGS polish after Adam (0: none)",
                                  examples=[_TC.lbfgs_iterations])
    lbfgs_rollout_steps: int | None = Field(_TC.lbfgs_rollout_steps, ge=1)
    lbfgs_max_windows: int = Field(_TC.lbfgs_max_windows, ge=1)
    lr_schedule: LRSchedule = _TC.lr_schedule
    min_lr_factor: float = Field(_TC.min_lr_factor, gt=0)
    weight_decay: float = Field(_TC.weight_decay, ge=0, lt=1)
    grad_clip: float = Field(_TC.grad_clip, gt=0)
    val_fraction: float = Field(_TC.val_fraction, ge=0, lt=1)
    patience: int = Field(_TC.patience, ge=0)
    seed: int = Field(_TC.seed, ge=0, le=MAX_SEED, examples=[0])
    device: Literal["auto", "cpu", "cuda"] = _TC.device
    dtype: Literal["auto", "float64", "float32"] = Field(
        _TC.dtype, description="'auto': float32 on CUDA, float64 on CPU")
    initial_state: Literal["observed", "learned"] = Field(
        _TC.initial_state, description="'learned': fit each trajectory's start state with the weights "
        "(errors-in-variables; for noisy data)")
    engine: Literal["auto", "numba", "torch"] = Field(
        _TC.engine, description="how the rollout loss is differentiated: 'numba' the compiled adjoint (CPU), "
        "'torch' autograd (any device); 'auto' numba where it covers the model. Same gradients to round-off")


class TrainRequest(RequestModel):
    """Train a model on a stored dataset (``dataset_id``) or on one generated now (``dataset``)."""

    name: str = Field(..., pattern=MODEL_NAME_PATTERN, description="model name; each job adds a version",
                      examples=["spring-hinn"])
    dataset_id: str | None = Field(None, max_length=32, description="a stored dataset (exclusive with `dataset`)")
    dataset: DatasetGenerate | None = Field(None, description="generate and store a dataset for this job")
    model: ModelOptions = Field(default_factory=ModelOptions)
    integrator: IntegratorName | None = Field(None, description="default: the architecture's default integrator",
                                              examples=["leapfrog"])
    training: TrainingOptions = Field(default_factory=TrainingOptions)
    test_fraction: float = Field(
        0.2, ge=0, lt=1,
        description=f"share of the trajectories held out for the metrics; with 0, or with fewer than "
                    f"{MIN_TRAJECTORIES_TO_HOLD_OUT} trajectories, none is and the metrics are on the training "
                    "data (`metrics.held_out` false)")


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    epoch: int | None = None
    epochs: int | None = None
    phase: str | None = None
    train_loss: float | None = None
    val_loss: float | None = None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str = "train"
    name: str = Field(..., description="the model name this job registers")
    status: JobStatusName
    progress: JobProgress | None = None
    model_id: str | None = None
    model_deleted_at: UTCDateTime | None = Field(
        None, description="when the model this job registered was deleted (`model_id` then answers 410 Gone)")
    error: str | None = None
    attempts: int
    max_attempts: int
    dataset_id: str
    request: dict[str, Any] = Field(..., description="the fully resolved request (all defaults filled in)")
    cancel_requested: bool
    created_at: UTCDateTime
    started_at: UTCDateTime | None = None
    finished_at: UTCDateTime | None = None


# -- models ------------------------------------------------------------------------------------------
class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    name: str
    version: int
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    dataset_id: str | None = None
    job_id: str | None = None
    sha256: str
    size_bytes: int
    created_at: UTCDateTime


# -- prediction --------------------------------------------------------------------------------------
class InitialCondition(RequestModel):
    q: list[float] = Field(..., min_length=1, examples=[[1.0]])
    p: list[float] = Field(..., min_length=1, examples=[[0.0]])


class PredictRequest(RequestModel):
    """Roll a model out from initial conditions on ``t_end``/``dt`` or on explicit ``times``."""

    model: str = Field(..., min_length=1, max_length=220, description="id, name (latest ready) or name@version",
                       examples=["spring-hinn"])
    initial_conditions: list[InitialCondition] = Field(
        ..., min_length=1, description="bounded by HINN_MAX_INITIAL_CONDITIONS")
    t_end: float | None = Field(None, gt=0, examples=[10.0])
    dt: float | None = Field(None, gt=0, examples=[0.1])
    times: list[float] | None = Field(None, description="strictly increasing output times (instead of t_end/dt)")
    integrator: PredictIntegratorName | None = Field(
        None, description="override the model's integrator: a fixed-step scheme (one step per output "
        "interval), or 'rk45', adaptive Dormand–Prince with error control (rtol/atol; steps as the "
        "tolerances need, outputs from its dense output; the HNN reference's solver)")
    rtol: float | None = Field(None, gt=0, lt=1,
                               description="rk45 only: relative tolerance (default 1e-9; 1e-4 for float32 models)")
    atol: float | None = Field(None, gt=0,
                               description="rk45 only: absolute tolerance (default 1e-9; 1e-6 for float32 models)")


class ModelRef(BaseModel):
    id: str
    name: str
    version: int


class PredictedTrajectory(BaseModel):
    q: list[list[float]]
    p: list[list[float]]
    H: list[float] | None = Field(None, description="learned H (null for the mlp baseline)")
    H_true: list[float] | None = Field(None, description="true H; only for models of built-in systems")
    evaluations: int | None = Field(None, description="rk45 only: the field evaluations this trajectory took")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    integrator: str
    times: list[float]
    trajectories: list[PredictedTrajectory]


# -- misc --------------------------------------------------------------------------------------------
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")


class SystemPublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    dof: int
    parameters: dict[str, Any]
    hamiltonian: str


class ProblemError(BaseModel):
    field: str = Field(..., examples=["training.epochs"])
    message: str = Field(..., examples=["Input should be greater than or equal to 1"])
    type: str | None = Field(None, description="machine-readable kind (pydantic's error type)")


class Problem(BaseModel):
    """RFC 9457 problem details: every error response has this shape (``application/problem+json``)."""

    type: str = Field(..., examples=["https://hinn.dev/problems/validation-error"])
    title: str = Field(..., examples=["Validation error"])
    status: int = Field(..., examples=[422])
    detail: str = Field(..., examples=["training.epochs: Input should be greater than or equal to 1"])
    instance: str = Field(..., description="the request path", examples=["/train"])
    errors: list[ProblemError] = Field(default_factory=list, description="each offending input, by field name")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: str
    revision: str | None
    head: str | None = None
    fast_path: Literal["ready", "warming", "cold", "unavailable"] = Field(
        "cold", description="the compiled prediction kernels: 'warming' while `hinn serve` compiles or loads them "
        "(predictions meanwhile take the slower torch path), 'cold' before first use")


# -- Swagger UI examples (one walk-through: dataset → train → predict) ---------------------------------
# Swagger UI pre-fills each operation's FIRST example; README.md's walk-through quotes those bodies verbatim
# (tests/api/test_api_swagger_walkthrough.py runs them in order and checks the README against them).
DATASET_EXAMPLES: dict[str, Any] = {
    "generate": {
        "summary": "Generate from a built-in system (50 spring–mass trajectories)",
        "value": {"name": "spring-demo", "system": "spring", "n_trajectories": 50, "t_end": 3.0, "dt": 0.1,
                  "dt_jitter": 0.0, "noise_std": 0.0, "seed": 0},
    },
    "upload": {
        "summary": "Upload observed trajectories",
        "value": {"name": "lab-run-7", "trajectories": [
            {"t": [0.0, 0.1, 0.2, 0.3], "q": [[1.0], [0.995], [0.9801], [0.9553]],
             "p": [[0.0], [-0.0998], [-0.1987], [-0.2955]]}]},
    },
}

TRAIN_EXAMPLES: dict[str, Any] = {
    "stored-dataset": {
        "summary": "Train on the dataset from POST /datasets (paste its id) with the default recipe",
        "value": {"name": "spring-hinn", "dataset_id": "<id from POST /datasets>"},
    },
    "inline-dataset": {
        "summary": "Generate the data in this request and train (the same defaults, spelled out)",
        "value": {"name": "spring-hinn",
                  "dataset": dict(DATASET_EXAMPLES["generate"]["value"]),
                  "model": {"architecture": _MS.architecture, "width": _MS.width, "depth": _MS.depth},
                  "integrator": _MS.integrator,
                  "training": {"epochs": _TC.epochs, "learning_rate": _TC.learning_rate,
                               "rollout_steps": _TC.rollout_steps, "lbfgs_iterations": _TC.lbfgs_iterations,
                               "seed": _TC.seed}},
    },
}

PREDICT_EXAMPLES: dict[str, Any] = {
    "uniform": {
        "summary": "Uniform steps (t_end and dt)",
        "value": {"model": "spring-hinn", "initial_conditions": [{"q": [1.0], "p": [0.0]}],
                  "t_end": 10.0, "dt": 0.1},
    },
    "times": {
        "summary": "Explicit (variable-step) times",
        "value": {"model": "spring-hinn", "initial_conditions": [{"q": [1.0], "p": [0.0]}, {"q": [0.5], "p": [0.5]}],
                  "times": [0.0, 0.05, 0.15, 0.3, 0.5, 1.0]},
    },
    "rk45": {
        "summary": "Adaptive RK45 under error control (the HNN reference's solver)",
        "value": {"model": "spring-hinn", "initial_conditions": [{"q": [1.0], "p": [0.0]}],
                  "t_end": 20.0, "dt": 0.02, "integrator": "rk45", "rtol": 1e-9, "atol": 1e-6},
    },
}
