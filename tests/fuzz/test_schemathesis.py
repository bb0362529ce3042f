"""Schemathesis (4.x) fuzzes every operation of the live OpenAPI schema, the multipart upload included.

The app runs in-process (ASGI transport, through its lifespan) on a temp SQLite file and again on
a fresh PostgreSQL schema (the two differ: PostgreSQL refuses NUL in text), each holding a real
trained model named ``spring-hinn`` and a dataset, so the schema's examples reach the success
paths too. Work per request is bounded by low limits. Each operation is one pytest item that runs
the schema's examples, then MAX_EXAMPLES positive and MAX_EXAMPLES negative cases, derandomised
(the same cases every run; about a minute per database). Schemathesis's pytest plugin (`from_fixture`)
is not used: it breaks on pytest 9 (``Function._nodeid``); `APIOperation.as_strategy` with
Hypothesis's own ``@given`` is the stable part of its API. Checks on every response:

- no 5xx, the status code is documented, the body matches the documented schema and content type;
- every 4xx/5xx is ``application/problem+json`` with the RFC 9457 fields, ``status`` matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import datasets, jobs
from app.main import create_app
from app.settings import Settings
from app.training_task import train_job
from hinn_core import generate_dataset
from hinn_core.dataio import dataset_to_npz_bytes
from tests.service_helpers import postgres_schema_url, tiny_request

MAX_EXAMPLES = 40  # per operation and generation mode (positive, negative), plus 4 per schema example: ~1 min
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "errors"}
LIMITS = {"max_trajectories": 20, "max_dataset_points": 2_000, "max_initial_conditions": 8, "max_steps": 500,
          "max_state_steps": 2_000, "max_epochs": 10, "max_body_bytes": 256 * 1024}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _seed_model(app: Any) -> None:
    """A real registered model ``spring-hinn`` (3 epochs, trained here) and its dataset and job."""
    db, settings = app.state.db, app.state.settings
    ds = generate_dataset("spring", 6, 1.0, 0.1, seed=0)
    with db.session(write=True) as s:
        dataset_id = datasets.store(s, "spring-demo", ds, settings).id
        jobs.submit(s, name="spring-hinn", request=tiny_request(epochs=3), dataset_id=dataset_id, max_attempts=1)
    claim = jobs.claim_next(db, "fuzz-seed", 60.0)
    assert claim is not None
    result = train_job({"request": claim.request, "dataset_npz": dataset_to_npz_bytes(ds),
                        "dataset_source": ds.source, "dataset_id": dataset_id, "job_id": claim.job_id,
                        "name": claim.name, "device": "cpu", "threads": 1}, lambda record: None)
    assert jobs.complete(db, claim, artifact=result["artifact"], sha256=result["sha256"], config=result["config"],
                         metrics={}, progress=None, history=[]) is not None


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, workers=0, **LIMITS)


# the operations, read from the schema of an app that is built but not started (no database needed)
PATHS = create_app(_settings("sqlite:////nonexistent/fuzz.db")).openapi()["paths"]
OPERATIONS = sorted(f"{method.upper()} {path}" for path, ops in PATHS.items() for method in ops)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`database_url` (tests/conftest.py) for the whole module: a temp SQLite file, then a fresh PostgreSQL
    schema (a failure under CI=true, a skip elsewhere, when there is no PostgreSQL)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db"
    else:
        with postgres_schema_url() as url:
            yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_database_url: str) -> Iterator[Any]:
    app = create_app(_settings(fuzz_database_url))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    _seed_model(app)
    yield schema
    schemathesis.python.asgi.shutdown_lifespans()


def check_problem_json(response: Any, case: Any) -> None:
    """Every error is an RFC 9457 problem whose ``status`` is the response's."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", "")
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/problem+json"), \
        f"{case.method} {case.formatted_path} -> {response.status_code} with content-type {content_type!r}"
    body = response.json()
    assert PROBLEM_FIELDS <= set(body), f"problem fields missing: {PROBLEM_FIELDS - set(body)} in {body}"
    assert body["status"] == response.status_code and body["detail"], body
    for error in body["errors"]:
        assert error.get("field") and error.get("message"), body


def test_the_fuzzed_operations_are_all_of_them() -> None:
    assert len(OPERATIONS) >= 20 and "POST /datasets/upload" in OPERATIONS and "POST /predict" in OPERATIONS


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_conforms_and_errors_are_problems(api_schema: Any, operation: str) -> None:
    method, path = operation.split(" ", 1)
    op = api_schema[path][method]
    calls: list[int] = []

    def run(strategy: Any, max_examples: int) -> None:
        @given(strategy)
        @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None, print_blob=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        def one(case: Any) -> None:
            response = case.call(timeout=60)
            calls.append(response.status_code)
            case.validate_response(response, checks=CHECKS)
            check_problem_json(response, case)

        one()

    examples = api_schema.get_strategies_from_examples(op)
    if examples:  # the schema's own examples: the documented walk-through must work
        run(st.one_of(examples), 4 * len(examples))
    raw = PATHS[path][method.lower()]
    has_inputs = bool(raw.get("parameters") or raw.get("requestBody") or raw.get("security"))
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,):
        run(op.as_strategy(generation_mode=mode), MAX_EXAMPLES)
    assert len(calls) >= (MAX_EXAMPLES if has_inputs else 1), f"only {len(calls)} requests for {operation}"
