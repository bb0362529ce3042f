"""`/metrics` (Prometheus text), request ids, JSON logs and readiness on an unreachable database."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sqlalchemy import update

from app import metrics
from app.db.base import db_now_plus
from app.db.models import Job
from app.db.session import Database
from app.main import create_app
from app.settings import Settings
from tests.api.api_helpers import TestClient, assert_problem, make_settings
from tests.service_helpers import add_dataset, submit


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path))

    @app.get("/test/predicted")
    def predicted() -> dict[str, str]:
        metrics.observe_predict(400, 0.02)  # as the predict route reports a rollout
        logging.getLogger("hinn.api").warning("inside the route")
        return {}

    with TestClient(app) as c:
        yield c


def test_http_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    for job_id in ("a", "b", "c"):
        client.get(f"/jobs/{job_id}")
    client.get("/no/such/path")
    client.post("/datasets", json={"name": "x", "system": "nope"})
    client.get("/docs")  # Starlette's plain routes (Swagger UI, the schema) have templates too
    client.get("/openapi.json")
    got = samples(client)
    for route in ("/docs", "/openapi.json"):
        assert got[("hinn_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1
    key = (("method", "GET"), ("route", "/jobs/{job_id}"), ("status", "404"))
    assert got[("hinn_http_requests_total", key)] == 3  # one series for all ids: bounded cardinality
    assert got[("hinn_http_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 1
    assert got[("hinn_http_requests_total", (("method", "POST"), ("route", "/datasets"), ("status", "422")))] == 1
    assert got[("hinn_http_request_duration_seconds_count", (("method", "GET"), ("route", "/jobs/{job_id}")))] == 3
    assert got[("hinn_database_up", ())] == 1


def test_job_gauges_come_from_the_database_at_scrape_time(client: TestClient) -> None:
    db, settings = client.app.state.db, client.app.state.settings  # type: ignore[attr-defined]
    dataset_id = add_dataset(db, settings, n=3)
    ids = [submit(db, dataset_id) for _ in range(3)]
    with db.session(write=True) as s:
        s.execute(update(Job).where(Job.id == ids[0]).values(status="running", progress={"epoch": 10, "seconds": 4.0},
                                                             lease_expires_at=db_now_plus(-10.0)))
        s.execute(update(Job).where(Job.id == ids[1]).values(status="failed", error="boom"))
    got = samples(client)
    assert got[("hinn_jobs", (("status", "queued"),))] == 1
    assert got[("hinn_jobs", (("status", "running"),))] == 1 and got[("hinn_jobs", (("status", "failed"),))] == 1
    assert got[("hinn_jobs", (("status", "succeeded"),))] == 0
    assert got[("hinn_queue_depth", ())] == 2  # the queued one, and the running one whose lease expired
    assert got[("hinn_training_epochs_per_second", (("job_id", ids[0]), ("name", "tiny")))] == 2.5


def test_predict_throughput_is_recorded_per_app(client: TestClient, tmp_path: Path) -> None:
    client.get("/test/predicted")
    client.get("/test/predicted")
    got = samples(client)
    assert got[("hinn_predict_state_steps_total", ())] == 800 and got[("hinn_predict_seconds_total", ())] == 0.04
    assert got[("hinn_predict_state_steps_per_second_count", ())] == 2
    metrics.observe_predict(1000, 1.0)  # outside a request: no app to count for
    (tmp_path / "other").mkdir()
    with TestClient(create_app(make_settings(tmp_path / "other"))) as other:  # a second app, its own registry
        assert samples(other)[("hinn_predict_state_steps_total", ())] == 0
    assert samples(client)[("hinn_predict_state_steps_total", ())] == 800


def test_request_ids_are_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "trace-42.a"}).headers["x-request-id"] == "trace-42.a"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    for hostile in ("two words", "x" * 200, "a\tb"):
        echoed = client.get("/health", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert echoed != hostile and len(echoed) == 32  # replaced, never copied into logs
    assert len(assert_problem(client.get("/jobs/nope"), 404, "job_id") and
               client.get("/jobs/nope").headers["x-request-id"]) == 32  # error responses carry it too


def test_logs_are_json_lines_with_the_request_id(client: TestClient) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        metrics.configure_logging("INFO", stream)
        client.get("/test/predicted", headers={"X-Request-ID": "req-1"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    inside = next(r for r in records if r["message"] == "inside the route")
    assert inside["request_id"] == "req-1" and inside["level"] == "WARNING" and inside["logger"] == "hinn.api"
    access = next(r for r in records if r["logger"] == "hinn.access")
    assert {k: access[k] for k in ("request_id", "method", "path", "status")} == {
        "request_id": "req-1", "method": "GET", "path": "/test/predicted", "status": 200}
    assert access["duration_ms"] > 0 and access["time"].endswith("+00:00")


def test_log_level_setting() -> None:
    assert Settings(log_level="debug").log_level == "DEBUG"
    with pytest.raises(ValidationError):
        Settings(log_level="chatty")


def test_ready_is_503_and_metrics_still_answer_when_the_database_is_unreachable(client: TestClient) -> None:
    app = client.app
    healthy = app.state.db  # type: ignore[attr-defined]
    app.state.db = Database("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")  # type: ignore[attr-defined]
    try:
        assert_problem(client.get("/ready"), 503, "database")
        assert_problem(client.get("/jobs"), 503, "database")
        got = samples(client)
        assert got[("hinn_database_up", ())] == 0 and ("hinn_jobs", (("status", "queued"),)) not in got
    finally:
        app.state.db.dispose()  # type: ignore[attr-defined]
        app.state.db = healthy  # type: ignore[attr-defined]
    assert client.get("/ready").status_code == 200
