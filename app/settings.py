"""Service configuration from ``HINN_*`` environment variables (pydantic-settings).

`get_settings()` is cached; tests build `Settings(...)` directly and pass it to `create_app`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HINN_", env_file=None, extra="ignore")

    database_url: str = Field("sqlite:///./hinn.db", description="SQLAlchemy URL: SQLite file or PostgreSQL")
    auto_migrate: bool = Field(True, description="run Alembic migrations to head when serve/worker start")

    # auth
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated; when set, mutating endpoints need a Bearer key")
    auth_reads: bool = Field(False, description="also require a key for GET endpoints")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="CORS off when empty")

    # workers and jobs
    workers: int = Field(1, ge=0, le=64, description="in-process workers started by `hinn serve`")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lease_seconds: float = Field(30.0, gt=0, description="job lease; a worker silent this long loses its job")
    heartbeat_seconds: float | None = Field(None, gt=0, description="default: a third of lease_seconds")
    poll_seconds: float = Field(1.0, gt=0, description="idle worker poll interval")
    max_attempts: int = Field(3, ge=1, le=100, description="tries per job before it fails for good")
    job_timeout_seconds: float = Field(6 * 3600.0, gt=0, description="a training run longer than this is killed")

    # limits (413/422 beyond them)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_json_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description=(
        "JSON bodies and .json uploads, within max_body_bytes: parsed JSON holds ~10× its text in memory, "
        "so larger data goes as NPZ or CSV"))
    max_trajectories: int = Field(10_000, ge=1, description="trajectories per dataset")
    max_dataset_points: int = Field(2_000_000, ge=1, description="time points per dataset (all trajectories)")
    max_initial_conditions: int = Field(4096, ge=1, description="initial conditions per /predict request")
    max_steps: int = Field(100_000, ge=1, description="integration steps per /predict request")
    max_state_steps: int = Field(2_000_000, ge=1, description="initial conditions × steps per request "
                                 "(JSON encoding costs ~1-2 µs per float: keep responses to seconds)")
    max_epochs: int = Field(100_000, ge=1)
    model_cache_size: int = Field(16, ge=1, description="loaded models kept in memory for /predict")
    api_torch_threads: int = Field(1, ge=1, le=256, description="torch threads in the `hinn serve` process: "
                                   "one keeps batch-1 /predict latency steady (training runs in its own process)")

    # observability
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="level of the JSON log lines that `hinn serve` and `hinn worker` write to stderr")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or self.lease_seconds / 3.0


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
