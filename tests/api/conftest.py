"""API test fixtures: an app on a fresh database per test (SQLite and PostgreSQL), run through its lifespan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_helpers import TestClient, make_settings

from app.main import create_app


@pytest.fixture
def build(database_url: str) -> Iterator[Callable[..., TestClient]]:
    """``build(**settings)`` → an entered TestClient on this test's database (all closed afterwards)."""
    clients: list[TestClient] = []

    def _build(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(database_url, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield _build
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(build: Callable[..., TestClient]) -> TestClient:
    return build()
