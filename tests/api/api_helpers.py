"""Helpers shared by the API tests (importable as ``api_helpers``: pytest puts this folder on sys.path)."""

from __future__ import annotations

import warnings
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

from app.problems import PROBLEM_BASE, TITLES
from app.settings import Settings

with warnings.catch_warnings():  # newer Starlette warns when its TestClient runs on httpx instead of httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["TestClient", "assert_problem", "make_settings", "newest_first", "spring_spec", "tiny_training", "url"]

PROBLEM_JSON = "application/problem+json"


def make_settings(database: Path | str, **overrides: Any) -> Settings:
    """Settings for a test, no in-process workers: a SQLite file in a folder, or a database URL."""
    url = f"sqlite:///{database}/t.db" if isinstance(database, Path) else database
    return Settings(**{"database_url": url, "workers": 0, **overrides})


def url(client: TestClient, name: str, **params: Any) -> str:
    return client.app.url_path_for(name, **params)  # type: ignore[attr-defined]


def assert_problem(response: Any, status: int, field: str | None = None, *, prefix: bool = False) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; its first error (and detail) name ``field``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance", "errors"} <= set(body)
    assert body["instance"] == response.request.url.path
    # one title per type (RFC 9457 §3.1.3): ours from the table, about:blank's the status phrase
    slug = body["type"].removeprefix(PROBLEM_BASE)
    assert body["title"] == (TITLES[slug] if body["type"].startswith(PROBLEM_BASE) else HTTPStatus(status).phrase), body
    if field is not None:
        got = body["errors"][0]["field"]
        assert got.startswith(field) if prefix else got == field, body
        assert field in body["detail"], body
    return body


def spring_spec(**overrides: Any) -> dict[str, Any]:
    return {"name": "spring-small", "system": "spring", "n_trajectories": 5, "t_end": 1.0, "dt": 0.1,
            **overrides}


def tiny_training(**overrides: Any) -> dict[str, Any]:
    return {"epochs": 3, "lbfgs_iterations": 0, "batch_size": 64, **overrides}


def newest_first(items: list[dict[str, Any]]) -> bool:
    """Listed in the API's order: (created_at, id) descending (ids break ties within a clock tick)."""
    keys = [(datetime.fromisoformat(item["created_at"]), item["id"]) for item in items]
    return keys == sorted(keys, reverse=True)
