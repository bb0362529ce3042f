"""A full SQLite file: writes answer a clear 507 problem naming the database, and nothing is half-written.

"Full" is `PRAGMA max_page_count` on every connection of the app's engine: SQLite then fails the
write exactly as on a full disk (SQLITE_FULL, "database or disk is full").
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, func, select

from app.db.models import Dataset, Job
from app.main import create_app
from tests.api.api_helpers import TestClient, assert_problem, make_settings

BIG = {"name": "too-big", "system": "spring", "n_trajectories": 200, "t_end": 10.0, "dt": 0.01, "noise_std": 0.1}


def _counts(db) -> tuple[int, int]:
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(Dataset)) or 0,
                s.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_full_database_is_a_507_and_nothing_is_half_written(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    with TestClient(app) as client:
        small = client.post("/datasets", json={**BIG, "name": "small", "n_trajectories": 2, "t_end": 1.0})
        assert small.status_code == 201, small.text
        engine = app.state.db.engine
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

        def cap(dbapi_conn, _record) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count={pages + 2}")

        event.listen(engine, "connect", cap)
        engine.dispose()  # every connection from now on is capped
        before = _counts(app.state.db)

        body = assert_problem(client.post("/datasets", json=BIG), 507, "database")
        assert "database or disk is full" in body["detail"] and "nothing was stored" in body["detail"]
        assert body["type"].endswith("/storage-full")
        train = {"name": "full", "dataset": BIG, "training": {"epochs": 1}}
        assert_problem(client.post("/train", json=train), 507, "database")  # dataset + job: one transaction
        assert _counts(app.state.db) == before
        assert client.get("/ready").status_code == 200  # reads still work
        assert [d["name"] for d in client.get("/datasets").json()["items"]] == ["small"]

        event.remove(engine, "connect", cap)
        engine.dispose()
        assert client.post("/datasets", json=BIG).status_code == 201  # space again: the same request succeeds
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
