"""API keys: POST/DELETE need ``Authorization: Bearer <key>`` when HINN_API_KEYS is set; GETs are open
unless HINN_AUTH_READS. The OpenAPI enumeration makes sure a new mutating route cannot slip through."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from api_helpers import TestClient, assert_problem, spring_spec, url

KEYS = ["key-one", "key-two"]
OPEN_PATHS = {"/health", "/ready"}


@pytest.fixture
def secured(build: Callable[..., TestClient]) -> TestClient:
    return build(api_keys=KEYS)


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_post_needs_a_valid_key(secured: TestClient) -> None:
    create = url(secured, "create_dataset")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic a2V5LW9uZQ=="},
                    {"Authorization": "Bearer key-one-and-more"}):
        r = secured.post(create, json=spring_spec(), headers=headers)
        assert_problem(r, 401, "Authorization")
        assert r.headers["www-authenticate"] == "Bearer"
    r = secured.post(create, json=spring_spec(), headers={"Authorization": "Bearer key-two"})
    assert r.status_code == 201, r.text
    assert secured.get(url(secured, "list_datasets")).status_code == 200  # reads stay open
    assert secured.get(url(secured, "get_dataset", dataset_id=r.json()["id"])).status_code == 200


def test_every_mutating_operation_requires_the_key(secured: TestClient) -> None:
    schema = secured.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    mutating = [(method, path) for path, ops in schema["paths"].items() for method in ops
                if method in ("post", "put", "patch", "delete")]
    assert len(mutating) >= 6
    for method, path in mutating:
        r = secured.request(method.upper(), _fill(path))
        assert_problem(r, 401, "Authorization")
        assert schema["paths"][path][method].get("security"), f"{method} {path} shows no security scheme"


def test_reads_need_the_key_with_auth_reads(build: Callable[..., TestClient]) -> None:
    client = build(api_keys=KEYS, auth_reads=True)
    schema = client.get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        if "get" in ops and path not in OPEN_PATHS:
            assert_problem(client.get(_fill(path)), 401, "Authorization")
    assert client.get(url(client, "list_systems"), headers={"Authorization": "Bearer key-one"}).status_code == 200
    assert client.get(url(client, "health")).status_code == 200


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.post(url(client, "create_dataset"), json=spring_spec()).status_code == 201
