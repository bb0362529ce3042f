"""Dockerfile and docker-compose.yml, checked by reading them (no Docker engine here).

Every command they run must parse with the project's own CLI, every file they copy must exist,
and the shape the service relies on must hold: non-root, CPU torch by default with a CUDA build
argument, PostgreSQL with a volume and health check, a one-shot migration before api and worker,
workers scalable (no fixed name or host port).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _cli_accepts(argv: list[str]) -> None:
    assert argv[0] == "hinn", argv
    build_parser().parse_args(argv[1:])  # SystemExit on an unknown command or option


def test_dockerfile_is_slim_non_root_and_cpu_by_default() -> None:
    instr = _dockerfile()
    froms = [rest for word, rest in instr if word == "FROM"]
    assert len(froms) == 1 and "slim" in froms[0]
    args = dict(rest.split("=", 1) for word, rest in instr if word == "ARG" and "=" in rest)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    users = [rest for word, rest in instr if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(rest for word, rest in instr if word == "RUN")
    assert "${TORCH_INDEX_URL}" in runs and "pip install ." in runs
    # torch is installed before the project, so the project's torch>=2.2 never pulls another build
    assert runs.index("torch==") < runs.index("pip install .")
    # the prediction kernels are compiled at build time into a cache the runtime user can write
    assert runs.index("pip install .") < runs.index("python -m hinn_core.fastpath")
    envs = " ".join(rest for word, rest in instr if word == "ENV")
    cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", envs)
    assert cache and f"chown -R hinn:hinn {cache.group(1)}" in runs


def test_dockerfile_copies_existing_paths_and_runs_a_real_command() -> None:
    instr = _dockerfile()
    for word, rest in instr:
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} missing"
    (cmd,) = [rest for word, rest in instr if word == "CMD"]
    argv = yaml.safe_load(cmd)  # JSON exec form
    _cli_accepts(argv)
    assert argv[:2] == ["hinn", "serve"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_postgres_with_volume_and_healthcheck(compose) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_compose_migrates_once_before_api_and_workers(compose) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["hinn", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["HINN_AUTO_MIGRATE"] == "false"
        assert services[name]["environment"]["HINN_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_commands_exist_in_the_cli(compose) -> None:
    for svc in compose["services"].values():
        if "command" in svc:
            _cli_accepts(svc["command"])
    assert compose["services"]["api"]["command"][:2] == ["hinn", "serve"]
    assert compose["services"]["worker"]["command"][:2] == ["hinn", "worker"]


def test_workers_can_be_scaled(compose) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_gpu_override_reserves_nvidia_devices_for_workers() -> None:
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    devices = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert set(gpu["services"]) == {"worker"}


def _merged(base: dict, override: dict) -> dict:
    """What `docker compose -f base -f override` does to mappings: merged key by key (enough here)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_the_image_healthcheck_probes_http_only_where_http_is_served(compose) -> None:
    """The Dockerfile's HEALTHCHECK GETs /health on the API port: it holds for `api` (the image's own
    `hinn serve` on that port); migrate and worker serve no HTTP, so they disable it (else "unhealthy")."""
    (check,) = [rest for word, rest in _dockerfile() if word == "HEALTHCHECK"]
    port = re.search(r"127\.0\.0\.1:(\d+)/health", check)
    assert port, check
    services = compose["services"]
    api = services["api"]
    assert "healthcheck" not in api or not api["healthcheck"].get("disable"), "the api keeps the image's check"
    assert api["command"][api["command"].index("--port") + 1] == port.group(1)
    for name in ("migrate", "worker"):
        assert services[name]["command"][:2] != ["hinn", "serve"]
        assert services[name].get("healthcheck") == {"disable": True}, f"{name} inherits the HTTP health check"
    # every service built from the image either serves the probed port or has the check disabled
    for name, svc in services.items():
        if svc.get("image") == services["api"]["image"] and name != "api":
            assert svc.get("healthcheck", {}).get("disable") is True, name
    # the GPU override merges over the base file: its worker must not bring the check back
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    for name, override in gpu["services"].items():
        merged = _merged(services[name], override)
        assert merged.get("healthcheck") == {"disable": True}, f"{name} with the GPU override"


def test_the_package_ships_its_migrations() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["app"]
    shipped = {p for pat in patterns for p in (ROOT / "app").glob(pat)}
    migrations = ROOT / "app" / "migrations"
    wanted = set(migrations.glob("*.py")) | set((migrations / "versions").glob("*.py"))
    assert wanted and wanted <= shipped
