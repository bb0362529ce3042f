"""Hostile input and stored-data tampering (SQLite and PostgreSQL), beyond the auth enumeration of
tests/api/test_api_auth.py: planted pickles never execute, tampered artifacts refuse to load, SQL
injection and NUL characters through every string input (enumerated from the OpenAPI schema) are
inert, CORS is off unless configured and then strict.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import func, select, update

from app.db.models import Dataset, Job, Model
from app.main import create_app
from hinn_client import Client, HinnError
from hinn_core import ModelSpec, TrainConfig, build_metadata, generate_dataset, model_to_bytes, train
from tests.api.api_helpers import TestClient, assert_problem, make_settings

INJECTIONS = [
    "x' OR '1'='1",
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "1; DELETE FROM models",
    "spring') UNION SELECT id, artifact FROM models --",
    "%' --",
    "\\'; TRUNCATE datasets CASCADE; --",
]


class _Payload:
    """Unpickling this creates ``marker`` — proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def artifact() -> bytes:
    """A genuine (tiny) model file of a spring model, lineage included so H_true is served."""
    data = generate_dataset("spring", 4, 1.0, 0.1, seed=0)
    result = train(data, ModelSpec(architecture="hinn-separable", dof=1, width=4, depth=1, integrator="leapfrog"),
                   TrainConfig(epochs=2, lbfgs_iterations=0, seed=0))
    return model_to_bytes(result.model, build_metadata(result.model, name="genuine",
                                                       lineage={"dataset": data.source}))


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(database_url))) as c:
        yield c


def _add_model(client: TestClient, name: str, blob: bytes, sha256: str | None = None) -> str:
    import hashlib

    model_id = uuid.uuid4().hex
    with client.app.state.db.session(write=True) as s:  # type: ignore[attr-defined]
        s.add(Model(id=model_id, name=name, version=1, status="ready", artifact=blob,
                    sha256=sha256 or hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), config={}, metrics={}))
    return model_id


def _predict(client: TestClient, model: str) -> httpx.Response:
    return client.post("/predict", json={"model": model, "initial_conditions": [{"q": [1.0], "p": [0.0]}],
                                         "t_end": 1.0, "dt": 0.1})


def _counts(client: TestClient) -> dict[str, int]:
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0 for t in (Dataset, Job, Model)}


# -- pickles -------------------------------------------------------------------------------------------
def test_a_planted_pickle_artifact_never_executes(client: TestClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    plain = pickle.dumps({"weights": _Payload(marker)})
    torch_zip = io.BytesIO()
    torch.save({"state_dict": _Payload(marker)}, torch_zip)  # torch's own pickle-in-zip format
    for name, blob in (("plain-pickle", plain), ("torch-save", torch_zip.getvalue())):
        _add_model(client, name, blob)  # a correct sha256: the integrity check alone would not stop it
        body = assert_problem(_predict(client, name), 500)
        assert body["type"].endswith("/artifact-integrity") and "model file" in body["detail"], body
        assert not marker.exists(), f"the {name} payload ran"
    assert client.get("/models/plain-pickle").json()["name"] == "plain-pickle"  # metadata still readable
    assert not marker.exists()


def test_a_pickled_npz_upload_is_refused_and_never_executes(client: TestClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    t = np.linspace(0, 1, 5)
    np.savez(buf, t=t, q=np.array([_Payload(marker)], dtype=object), p=np.zeros((1, 5, 1)))
    before = _counts(client)
    r = client.post("/datasets/upload", files={"file": ("evil.npz", buf.getvalue())})
    assert_problem(r, 422, "q")
    assert not marker.exists() and _counts(client) == before


# -- tampering -----------------------------------------------------------------------------------------
def test_a_tampered_artifact_refuses_to_load(client: TestClient, artifact: bytes, tmp_path: Path) -> None:
    import hashlib

    _add_model(client, "genuine", artifact)
    good = _predict(client, "genuine")
    assert good.status_code == 200 and good.json()["trajectories"][0]["H_true"][0] == pytest.approx(0.5)
    tampered = bytearray(artifact)
    tampered[-9] ^= 0x01  # one bit of one weight; the stored sha256 is the genuine file's
    model_id = _add_model(client, "tampered", bytes(tampered), sha256=hashlib.sha256(artifact).hexdigest())
    body = assert_problem(_predict(client, "tampered"), 500)
    assert body["type"].endswith("/artifact-integrity") and "checksum mismatch" in body["detail"]
    # the download is served as stored, and the client's sha256 check (ETag) refuses to save it
    out = tmp_path / "downloads"
    with Client("http://testserver", transport=client._transport) as hinn:  # type: ignore[attr-defined]
        with pytest.raises(HinnError, match="corrupted"):
            hinn.download(model_id, out / "tampered.model")
        hinn.download("genuine", out / "genuine.model")
    assert sorted(p.name for p in out.iterdir()) == ["genuine.model"]


# -- SQL injection (and NUL) through every string input, enumerated from the OpenAPI schema --------------
NUL_PAYLOAD = "nul\x00'; DROP TABLE jobs; --"  # PostgreSQL text cannot hold NUL: must be a named 422 there too
PAYLOADS = [*INJECTIONS, NUL_PAYLOAD]
UPLOAD_CSV = "trajectory,t,q0,p0\na,0.0,1.0,0.0\na,0.1,0.99,-0.1\n"


@dataclass(frozen=True)
class StringInput:
    """One string input of one operation: a path/query/header parameter, a JSON body location or a form field."""

    method: str
    path: str
    where: str  # path | query | header | json | form
    loc: tuple[str | int, ...]  # the parameter or form field name, or the location in the JSON body

    @property
    def field(self) -> str:
        """How a problem names this input (``errors[].field``)."""
        if self.where == "header":
            return "-".join(part.capitalize() for part in str(self.loc[0]).split("-"))
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.where} {self.field}"


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _is_text(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """A string (or an enum of strings, or one of them or null) that is not a file."""
    schema = _resolve(schema, components)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return any(_is_text(b, components) for b in branches)
    if "contentMediaType" in schema or schema.get("format") == "binary":
        return False
    return schema.get("type") == "string" or any(isinstance(v, str) for v in schema.get("enum", ()))


def _json_strings(schema: dict[str, Any], components: dict[str, Any], loc: tuple[str | int, ...] = ()
                  ) -> Iterator[tuple[str | int, ...]]:
    """Every location of a string in a body of ``schema``, through objects, arrays and unions."""
    schema = _resolve(schema, components)
    if _is_text(schema, components):
        yield loc
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        yield from _json_strings(branch, components, loc)
    for name, sub in schema.get("properties", {}).items():
        yield from _json_strings(sub, components, (*loc, name))
    if isinstance(schema.get("items"), dict) and len(loc) < 8:
        yield from _json_strings(schema["items"], components, (*loc, 0))


def string_inputs(openapi: dict[str, Any]) -> list[StringInput]:
    """Every string parameter (path, query, header) and every string in every request body of the API."""
    components = openapi.get("components", {}).get("schemas", {})
    found: dict[StringInput, None] = {}
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if _is_text(param["schema"], components):
                    found[StringInput(method.upper(), path, param["in"], (param["name"],))] = None
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                for loc in _json_strings(content["application/json"]["schema"], components):
                    found[StringInput(method.upper(), path, "json", loc)] = None
            if "multipart/form-data" in content:
                form = _resolve(content["multipart/form-data"]["schema"], components)
                for name, sub in form.get("properties", {}).items():
                    if _is_text(sub, components):
                        found[StringInput(method.upper(), path, "form", (name,))] = None
    return list(found)


def _place(body: Any, loc: tuple[str | int, ...]) -> bool:
    for part in loc[:-1]:
        if isinstance(part, int) and isinstance(body, list) and len(body) > part:
            body = body[part]
        elif isinstance(part, str) and isinstance(body, dict) and part in body:
            body = body[part]
        else:
            return False
    return isinstance(body, dict | list)


def _with(body: Any, loc: tuple[str | int, ...], value: str) -> Any:
    """A copy of ``body`` with ``value`` at ``loc`` (missing parents made up)."""
    body = copy.deepcopy(body)
    if not loc:
        return value
    node = body
    for part, after in zip(loc[:-1], loc[1:], strict=True):
        empty: Any = [] if isinstance(after, int) else {}
        if isinstance(node, list):
            while len(node) <= int(part):
                node.append(copy.deepcopy(empty))
            node = node[int(part)]
        else:
            node = node.setdefault(part, empty)
    if isinstance(node, list):
        while len(node) <= int(loc[-1]):
            node.append(None)
    node[loc[-1]] = value
    return body


def _real_ids(value: Any, ids: dict[str, str]) -> Any:
    """The schema's examples with their placeholder ids replaced by real ones."""
    if isinstance(value, dict):
        return {k: ids[k] if k in ids and isinstance(v, str) else _real_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_real_ids(v, ids) for v in value]
    return value


def inject(client: TestClient, target: StringInput, op: dict[str, Any], payload: str, ids: dict[str, str]
           ) -> httpx.Response:
    """The operation with a valid request (the schema's example, real ids), ``payload`` put in ``target``.

    ``ids`` are real values for the examples' placeholder ids and for the path parameters not targeted.
    """
    json_content = op.get("requestBody", {}).get("content", {}).get("application/json")
    examples = [_real_ids(e["value"], ids) for e in (json_content or {}).get("examples", {}).values()]
    body: Any = None
    if json_content is not None:
        body = examples[0] if examples else {}
        if target.where == "json":
            body = _with(next((e for e in examples if _place(e, target.loc)), body), target.loc, payload)
    path_values = {name: payload if (target.where, (name,)) == ("path", target.loc) else ids.get(name, "x")
                   for name in re.findall(r"\{([^}]+)\}", target.path)}
    url = target.path.format(**{k: quote(v, safe="") for k, v in path_values.items()})
    name = str(target.loc[0])
    params = {name: payload} if target.where == "query" else None
    headers = {name: payload} if target.where == "header" else None
    if "multipart/form-data" in op.get("requestBody", {}).get("content", {}):
        data = {name: payload} if target.where == "form" else None
        return client.request(target.method, url, data=data, files={"file": ("lab.csv", UPLOAD_CSV)})
    return client.request(target.method, url, params=params, headers=headers, json=body)


def test_every_string_input_of_the_schema_is_enumerated(client: TestClient) -> None:
    """The sweep below covers what the schema declares: a new string input is in it automatically."""
    fields = {str(t) for t in string_inputs(client.get("/openapi.json").json())}
    for expected in ("POST /datasets json name", "POST /datasets/upload form name", "GET /datasets query name",
                     "GET /jobs/{job_id} path job_id", "GET /jobs query status", "GET /models query cursor",
                     "POST /train header Idempotency-Key", "POST /train json dataset.name",
                     "POST /train json model.architecture", "POST /predict json model",
                     "GET /models/{ref}/artifact header If-None-Match", "DELETE /models/{ref} path ref"):
        assert expected in fields, sorted(fields)


def test_sql_injection_and_nul_through_every_string_input_are_inert(client: TestClient, artifact: bytes) -> None:
    openapi = client.get("/openapi.json").json()
    _add_model(client, "genuine", artifact)
    datasets: set[str] = set()
    jobs: set[str] = set()
    statuses: list[tuple[str, int]] = []

    def send(label: str, r: httpx.Response, nul_field: str | None = None) -> httpx.Response:
        statuses.append((label, r.status_code))
        assert r.status_code < 500, f"{label}: {r.status_code} {r.text}"
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), label
        if nul_field is not None:  # rejected before anything is stored, naming the input
            body = assert_problem(r, 422, nul_field)
            assert "NUL character" in body["detail"], (label, body)
        if r.status_code in (201, 202) and r.request.url.path.startswith(("/datasets", "/train")):
            if r.request.url.path == "/train":
                jobs.add(r.json()["id"])
            datasets.add(r.json().get("dataset_id") or r.json()["id"])
        return r

    base = send("base", client.post("/datasets", json={"name": "base", "system": "spring", "n_trajectories": 3,
                                                        "t_end": 0.5, "dt": 0.1}))
    assert base.status_code == 201
    dataset_id = base.json()["id"]
    ids = {"dataset_id": dataset_id, "model": "genuine", "ref": "genuine"}
    targets = string_inputs(openapi)
    for i, evil in enumerate(PAYLOADS):
        nul = "\x00" in evil
        for target in targets:
            op = openapi["paths"][target.path][target.method.lower()]
            send(str(target), inject(client, target, op, evil, ids), target.field if nul else None)
        # beyond the schema: crafted cursors and refs with a version, and what must hold when accepted
        send("crafted cursor", client.get("/models", params={"cursor": _cursor(evil)}))
        for ref in (f"{evil}@1", f"genuine@1 {evil}"):
            send("model ref", client.get(f"/models/{quote(ref, safe='')}"), "ref" if nul else None)
            send("predict model", _predict(client, ref), "model" if nul else None)
        if nul:
            continue
        created = send("dataset name", client.post("/datasets", json={"name": evil, "system": "spring",
                                                                      "n_trajectories": 2, "t_end": 0.3, "dt": 0.1}))
        assert created.status_code == 201 and created.json()["name"] == evil  # stored verbatim: bound, not spliced
        listed = send("?name=", client.get("/datasets", params={"name": evil})).json()["items"]
        with client.app.state.db.session() as s:  # type: ignore[attr-defined]
            named = set(s.scalars(select(Dataset.id).where(Dataset.name == evil)))
        assert created.json()["id"] in named and {d["id"] for d in listed} == named  # that name only
        key = f"{evil}-{i}"
        job = send("idempotency key", client.post("/train", headers={"Idempotency-Key": key}, json={
            "name": "inj", "dataset_id": dataset_id, "training": {"epochs": 1}}))
        replay = send("idempotency replay", client.post("/train", headers={"Idempotency-Key": key}, json={
            "name": "inj", "dataset_id": dataset_id, "training": {"epochs": 1}}))
        assert job.status_code == 202 and replay.json()["id"] == job.json()["id"]

    # nothing dropped, deleted or duplicated; every created row is there, and nothing else
    assert _counts(client) == {"datasets": len(datasets), "jobs": len(jobs), "models": 1}
    for created_id in datasets:
        assert client.get(f"/datasets/{created_id}").status_code == 200
    assert _predict(client, "genuine").status_code == 200
    assert {code for _, code in statuses} <= {200, 201, 202, 304, 404, 406, 409, 422}, sorted(set(statuses))


def _cursor(evil: str) -> str:
    import base64

    return base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{evil}".encode()).decode().rstrip("=")


def test_injected_rows_leave_the_schema_intact(client: TestClient) -> None:
    """A stored value that looks like SQL is data when it is read back and updated."""
    evil = INJECTIONS[1]
    r = client.post("/datasets", json={"name": evil, "system": "spring", "n_trajectories": 2, "t_end": 0.3,
                                       "dt": 0.1})
    with client.app.state.db.session(write=True) as s:  # type: ignore[attr-defined]
        s.execute(update(Dataset).where(Dataset.id == r.json()["id"]).values(name=evil + evil))
    assert client.get(f"/datasets/{r.json()['id']}").json()["name"] == evil + evil
    assert _counts(client) == {"datasets": 1, "jobs": 0, "models": 0}


# -- CORS ----------------------------------------------------------------------------------------------
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


def test_cors_is_off_by_default_for_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in schema["paths"]:
        concrete = path.replace("{", "").replace("}", "")
        r = client.options(concrete, headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers, path
    assert "access-control-allow-origin" not in client.get("/systems", headers={"Origin": "https://x.example"}).headers


def test_cors_when_configured_allows_only_the_listed_origins(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, cors_origins=["https://lab.example"]))) as c:
        ok = c.options("/train", headers={"Origin": "https://lab.example", **PREFLIGHT})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://lab.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers  # keys travel in a header, never cookies
        bad = c.options("/train", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        get = c.get("/systems", headers={"Origin": "https://lab.example"})
        assert get.headers["access-control-allow-origin"] == "https://lab.example"
        assert "x-request-id" in get.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-origin" not in c.get("/systems", headers={"Origin": "https://evil.example"}).headers
