"""A NUL character (U+0000) in any text input is a 422 problem naming where it is, on SQLite and PostgreSQL
alike (PostgreSQL text cannot hold NUL: without the check these were 500s there), and nothing is stored.
A database that still refuses a value answers 422 too (the safety net), never 500.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_helpers import TestClient, assert_problem, make_settings
from sqlalchemy import func, select

from app import nul_check
from app.db.models import Dataset, Job, Model
from app.main import create_app
from hinn_core import generate_dataset
from hinn_core.dataio import dataset_to_npz_bytes

CSV = "trajectory,t,q0,p0\na,0.0,1.0,0.0\na,0.1,0.99,-0.1\n"
SPEC = {"system": "spring", "n_trajectories": 2, "t_end": 0.3, "dt": 0.1}
PREDICT = {"initial_conditions": [{"q": [1.0], "p": [0.0]}], "t_end": 1.0, "dt": 0.1}


def _multipart(filename: str, name: str | None = None) -> dict[str, Any]:
    """Request arguments for a form sent as given (httpx would percent-escape a NUL in a file name)."""
    parts = [f'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'] if name is not None else []
    parts.append(f'--B\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: text/csv\r\n\r\n{CSV}\r\n--B--\r\n")
    return {"content": "".join(parts).encode(), "headers": {"content-type": "multipart/form-data; boundary=B"}}


def _raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


#: (what, request, field the problem must name)
CASES: list[tuple[str, Callable[[TestClient], httpx.Response], str]] = [
    ("dataset name", lambda c: c.post("/datasets", json={"name": "a\x00b", **SPEC}), "name"),
    ("dataset name, raw escape", lambda c: c.post("/datasets", **_raw_json('{"name": "\\u0000", "system": "spring"}')),
     "name"),
    ("?name= datasets", lambda c: c.get("/datasets", params={"name": "a\x00b"}), "name"),
    ("?name= models", lambda c: c.get("/models", params={"name": "a\x00b"}), "name"),
    ("?cursor=", lambda c: c.get("/jobs", params={"cursor": "\x00"}), "cursor"),
    ("?status=", lambda c: c.get("/jobs", params={"status": "queued\x00"}), "status"),
    ("job id", lambda c: c.get("/jobs/a%00b"), "job_id"),
    ("job id events", lambda c: c.get("/jobs/a%00b/events"), "job_id"),
    ("job id cancel", lambda c: c.post("/jobs/a%00b/cancel"), "job_id"),
    ("dataset id", lambda c: c.get("/datasets/a%00b"), "dataset_id"),
    ("model ref", lambda c: c.get("/models/a%00b"), "ref"),
    ("model ref delete", lambda c: c.delete("/models/genuine%00"), "ref"),
    ("predict model", lambda c: c.post("/predict", json={"model": "a\x00b", **PREDICT}), "model"),
    ("predict, deep in a list", lambda c: c.post("/predict", json={
        "model": "genuine", "initial_conditions": [{"q": [1.0], "p": [0.0]}, {"q": ["\x00"], "p": [0.0]}]}),
     "initial_conditions[1].q[0]"),
    ("train name", lambda c: c.post("/train", json={"name": "a\x00b", "dataset": SPEC}), "name"),
    ("train inline dataset name", lambda c: c.post("/train", json={
        "name": "ok", "dataset": {"name": "a\x00b", **SPEC}}), "dataset.name"),
    ("JSON member name", lambda c: c.post("/datasets", json={"name": "ok", "x\x00": 1, **SPEC}), "x\\u0000"),
    ("Idempotency-Key", lambda c: c.post("/train", headers={"Idempotency-Key": "a\x00b"},
                                         json={"name": "ok", "dataset": SPEC}), "Idempotency-Key"),
    ("If-None-Match", lambda c: c.get("/models/genuine/artifact", headers={"If-None-Match": '"x\x00"'}),
     "If-None-Match"),
    ("upload form name", lambda c: c.post("/datasets/upload", data={"name": "a\x00b"},
                                          files={"file": ("lab.csv", CSV)}), "name"),
    ("upload file name", lambda c: c.post("/datasets/upload", **_multipart("l\x00ab.csv")), "file"),
]


def _counts(client: TestClient) -> dict[str, int]:
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0 for t in (Dataset, Job, Model)}


def _add_model(client: TestClient, name: str = "genuine") -> None:
    blob = b"not a real model: only served as bytes"
    with client.app.state.db.session(write=True) as s:  # type: ignore[attr-defined]
        s.add(Model(id=uuid.uuid4().hex, name=name, version=1, status="ready", artifact=blob,
                    sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob), config={}, metrics={}))


@pytest.mark.parametrize("what, send, field", CASES, ids=[case[0] for case in CASES])
def test_a_nul_character_is_a_422_naming_its_location(client: TestClient, what: str,
                                                     send: Callable[[TestClient], httpx.Response], field: str) -> None:
    _add_model(client)
    before = _counts(client)
    body = assert_problem(send(client), 422, field)
    assert "NUL character" in body["detail"], body
    assert _counts(client) == before  # nothing stored (and nothing deleted)


def test_what_only_looks_like_a_nul_in_text_is_accepted(client: TestClient) -> None:
    escaped = client.post("/datasets", **_raw_json('{"name": "a\\\\u0000b", "system": "spring"}'))
    assert escaped.status_code == 201 and escaped.json()["name"] == "a\\u0000b"  # a backslash, then u0000
    npz = dataset_to_npz_bytes(generate_dataset("spring", 2, 0.3, 0.1, seed=0))
    assert b"\x00" in npz
    uploaded = client.post("/datasets/upload", data={"name": "binary"}, files={"file": ("d.npz", npz)})
    assert uploaded.status_code == 201, uploaded.text
    assert client.post("/datasets/upload", **_multipart("lab.csv", name="plain")).status_code == 201
    # query parameters and headers that no route reads are never looked at (nor stored)
    assert client.get("/datasets", params={"unused": "\x00"}, headers={"X-Unused": "\x00"}).status_code == 200


def test_a_big_body_without_nul_is_never_walked(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[Any] = []
    real = nul_check.json_nul_loc
    monkeypatch.setattr(nul_check, "json_nul_loc", lambda value, loc=(): walked.append(loc) or real(value, loc))
    many = [{"q": [float(i)], "p": [0.0]} for i in range(5000)]
    r = client.post("/predict", json={"model": "nowhere", "initial_conditions": many, "t_end": 1.0, "dt": 0.1})
    assert r.status_code in (404, 413, 422) and walked == []
    client.post("/predict", json={"model": "a\x00", "initial_conditions": many[:1], "t_end": 1.0, "dt": 0.1})
    assert walked and walked[0] == ()


def test_a_value_the_database_refuses_is_a_422_not_a_500(database_url: str, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The safety net, with the NUL check switched off: PostgreSQL's DataError is a 422 problem."""

    async def no_check() -> None:
        return None

    monkeypatch.setattr(nul_check, "reject_nul", no_check)
    app = create_app(make_settings(database_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        before = _counts(client)
        r = client.post("/datasets", json={"name": "a\x00b", **SPEC})
        if database_url.startswith("sqlite"):
            assert r.status_code == 201  # SQLite stores NUL; only PostgreSQL refuses it
            return
        body = assert_problem(r, 422)
        assert "DataError" in body["detail"] and "nothing was stored" in body["detail"], body
        assert_problem(client.get("/jobs/a%00b"), 422)
        assert _counts(client) == before
