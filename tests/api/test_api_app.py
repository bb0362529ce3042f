"""Application wiring: lifespan, probes, problems for framework errors, CORS, OpenAPI, route names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from api_helpers import TestClient, assert_problem, make_settings, url

from app.db import migrate
from app.db.models import Model
from app.main import SchemaNotAtHead, create_app
from app.problems import field_from_loc

ROUTE_NAMES = {
    "health": {}, "ready": {}, "list_systems": {}, "create_dataset": {}, "upload_dataset": {},
    "list_datasets": {}, "get_dataset": {"dataset_id": "d"}, "get_dataset_trajectories": {"dataset_id": "d"},
    "train": {}, "list_jobs": {}, "get_job": {"job_id": "j"}, "job_events": {"job_id": "j"},
    "cancel_job": {"job_id": "j"}, "job_plot": {"job_id": "j"}, "list_models": {}, "get_model": {"ref": "m"},
    "get_model_artifact": {"ref": "m"}, "delete_model": {"ref": "m"}, "predict": {}, "predict_plot": {},
}


def test_probes(client: TestClient) -> None:
    assert client.get(url(client, "health")).json() == {"status": "ok"}
    ready = client.get(url(client, "ready")).json()
    assert ready["status"] == "ready" and ready["database"] == "ok" and ready["revision"] == migrate.head_revision()


def test_ready_reports_the_fast_path(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from hinn_core import fastpath

    monkeypatch.setattr(fastpath, "is_warm", lambda: False)
    monkeypatch.setattr(fastpath, "is_warming", lambda: True)
    assert client.get(url(client, "ready")).json()["fast_path"] == "warming"
    monkeypatch.setattr(fastpath, "is_warm", lambda: True)
    assert client.get(url(client, "ready")).json()["fast_path"] == "ready"
    monkeypatch.setattr(fastpath, "available", lambda: False)
    assert client.get(url(client, "ready")).json()["fast_path"] == "unavailable"


def test_ready_is_503_when_the_schema_is_behind(client: TestClient) -> None:
    migrate.downgrade(client.app.state.db.engine, "base")  # type: ignore[attr-defined]
    body = assert_problem(client.get(url(client, "ready")), 503, "revision")
    assert migrate.head_revision() in body["detail"]


def test_refuses_to_start_on_an_old_schema_without_auto_migrate(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, auto_migrate=False))
    with pytest.raises(SchemaNotAtHead, match="hinn db upgrade"), TestClient(app):
        pass
    with TestClient(create_app(make_settings(tmp_path))):  # migrates
        pass
    with TestClient(create_app(make_settings(tmp_path, auto_migrate=False))) as c:  # at head now: starts
        assert c.get(url(c, "ready")).status_code == 200


def test_nothing_is_built_before_startup(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    assert not hasattr(app.state, "db") and not (tmp_path / "t.db").exists()


def test_systems(client: TestClient) -> None:
    systems = {s["name"]: s for s in client.get(url(client, "list_systems")).json()}
    assert {"spring", "pendulum", "two-body", "three-body", "henon-heiles", "nonseparable"} <= set(systems)
    assert systems["spring"]["dof"] == 1 and systems["spring"]["parameters"]["k"] == 1.0
    assert "H" in systems["spring"]["hamiltonian"]


def test_framework_errors_are_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/no/such/route"), 404)
    assert body["type"] == "about:blank" and "/no/such/route" in body["detail"]
    r = client.delete(url(client, "health"))
    assert_problem(r, 405)
    assert "GET" in r.headers["allow"]


def test_unexpected_errors_are_500_without_internals(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/boom"), 500)
        assert "secret" not in client.get("/boom").text and body["type"].endswith("/internal-error")


def test_every_problem_type_has_one_title() -> None:
    """Each status's type and each special type has its fixed title (assert_problem checks every
    problem the API tests meet against the same table)."""
    from app.problems import SLUGS, TITLES

    assert set(SLUGS.values()) <= set(TITLES) and len(set(TITLES.values())) == len(TITLES)


def test_corrupt_artifact_is_a_500_integrity_problem(client: TestClient) -> None:
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session(write=True) as s:
        s.add(Model(id="f" * 32, name="broken", version=1, status="ready", artifact=b"garbage", sha256="0" * 64,
                    size_bytes=7, config={}, metrics={}))
    body = {"model": "broken", "initial_conditions": [{"q": [1.0], "p": [0.0]}], "t_end": 1.0, "dt": 0.1}
    problem = assert_problem(client.post(url(client, "predict"), json=body), 500)
    assert problem["type"].endswith("/artifact-integrity") and "checksum" in problem["detail"]


def test_cors_only_when_configured(build: Callable[..., TestClient]) -> None:
    preflight = {"Origin": "https://lab.example", "Access-Control-Request-Method": "POST"}
    plain = build()
    assert "access-control-allow-origin" not in plain.options("/datasets", headers=preflight).headers
    cors = build(cors_origins=["https://lab.example"])
    r = cors.options("/datasets", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://lab.example"


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "hinn" and schema["info"]["version"]
    examples = schema["paths"]["/datasets"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"generate", "upload"} <= set(examples)
    assert "examples" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    for ops in schema["paths"].values():
        for op in ops.values():
            for code, response in op["responses"].items():
                if code[0] in "45":
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["paths"]["/predict"]["post"]["operationId"] == "predict"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_route_has_a_name(client: TestClient) -> None:
    for name, params in ROUTE_NAMES.items():
        assert url(client, name, **params).startswith("/")


@pytest.mark.parametrize(("loc", "field"), [
    (("body", "training", "epochs"), "training.epochs"),
    (("body", "initial_conditions", 2, "q", 0), "initial_conditions[2].q[0]"),
    (("body", "DatasetGenerate", "system"), "system"),
    (("query", "limit"), "limit"),
    (("header", "idempotency-key"), "Idempotency-Key"),
    (("body",), "body"),
])
def test_field_names_from_validation_locations(loc: tuple[object, ...], field: str) -> None:
    assert field_from_loc(loc) == field


def test_times_have_one_fixed_width_format() -> None:
    from datetime import datetime, timedelta, timezone

    from app.schemas import DatasetPublic

    whole = datetime(2026, 11, 28, 1, 15, 5, tzinfo=timezone.utc)  # a zero fraction must not be dropped
    fields = dict.fromkeys(DatasetPublic.model_fields)
    stamps = []
    for t in (whole, whole + timedelta(milliseconds=300), whole.replace(tzinfo=None)):
        ds = DatasetPublic.model_construct(**{**fields, "created_at": t})
        stamps.append(DatasetPublic.__pydantic_serializer__.to_python(ds, mode="json")["created_at"])
    assert stamps == ["2026-11-28T01:15:05.000000Z", "2026-11-28T01:15:05.300000Z", "2026-11-28T01:15:05.000000Z"]
    assert stamps[0] < stamps[1]
