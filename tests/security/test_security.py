"""Hostile input and stored-data tampering (SQLite and PostgreSQL), beyond the auth enumeration of
tests/api/test_api_auth.py: planted pickles never execute, tampered artifacts refuse to load, SQL
injection through every string input is inert, CORS is off unless configured and then strict.
"""

from __future__ import annotations

import io
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- SQL injection -------------------------------------------------------------------------------------
def test_sql_injection_through_every_string_input_is_inert(client: TestClient, artifact: bytes) -> None:
    _add_model(client, "genuine", artifact)
    dataset = client.post("/datasets", json={"name": "base", "system": "spring", "n_trajectories": 3, "t_end": 0.5,
                                             "dt": 0.1})
    assert dataset.status_code == 201
    dataset_id = dataset.json()["id"]
    statuses: list[tuple[str, int]] = []

    def send(label: str, r: httpx.Response) -> httpx.Response:
        statuses.append((label, r.status_code))
        assert r.status_code < 500, f"{label}: {r.status_code} {r.text}"
        if r.status_code >= 400:
            assert r.headers["content-type"].startswith("application/problem+json"), label
        return r

    for i, evil in enumerate(INJECTIONS):
        created = send("dataset name", client.post("/datasets", json={"name": evil, "system": "spring",
                                                                      "n_trajectories": 2, "t_end": 0.3, "dt": 0.1}))
        assert created.status_code == 201 and created.json()["name"] == evil  # stored verbatim: bound, not spliced
        listed = send("?name=", client.get("/datasets", params={"name": evil})).json()["items"]
        assert [d["id"] for d in listed] == [created.json()["id"]]
        send("upload name", client.post("/datasets/upload", data={"name": evil}, files={
            "file": ("lab.csv", "trajectory,t,q0,p0\na,0.0,1.0,0.0\na,0.1,0.99,-0.1\n")}))
        send("dataset id", client.get(f"/datasets/{evil}"))
        send("dataset id trajectories", client.get(f"/datasets/{evil}/trajectories"))
        send("job id", client.get(f"/jobs/{evil}"))
        send("job id cancel", client.post(f"/jobs/{evil}/cancel"))
        send("job id plot", client.get(f"/jobs/{evil}/plot"))
        send("status filter", client.get("/jobs", params={"status": evil}))
        send("cursor", client.get("/jobs", params={"cursor": evil}))
        send("crafted cursor", client.get("/models", params={"cursor": _cursor(evil)}))
        send("?name= models", client.get("/models", params={"name": evil}))
        for ref in (evil, f"{evil}@1", f"genuine@1 {evil}"):
            send("model ref", client.get(f"/models/{ref}"))
            send("model ref artifact", client.get(f"/models/{ref}/artifact"))
            send("predict model", _predict(client, ref))
        send("delete model ref", client.delete(f"/models/{evil}"))
        send("train name", client.post("/train", json={"name": evil, "dataset_id": dataset_id}))
        send("train dataset_id", client.post("/train", json={"name": "ok", "dataset_id": evil[:32]}))
        key = f"{evil}-{i}"
        job = send("idempotency key", client.post("/train", headers={"Idempotency-Key": key}, json={
            "name": "inj", "dataset_id": dataset_id, "training": {"epochs": 1}}))
        replay = send("idempotency replay", client.post("/train", headers={"Idempotency-Key": key}, json={
            "name": "inj", "dataset_id": dataset_id, "training": {"epochs": 1}}))
        assert job.status_code == 202 and replay.json()["id"] == job.json()["id"]

    counts = _counts(client)
    assert counts["models"] == 1 and counts["jobs"] == len(INJECTIONS)  # nothing dropped, deleted or duplicated
    assert counts["datasets"] == 1 + 2 * len(INJECTIONS)
    assert _predict(client, "genuine").status_code == 200
    assert {code for _, code in statuses} <= {200, 201, 202, 404, 409, 422}, sorted(set(statuses))


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
