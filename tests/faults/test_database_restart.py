"""PostgreSQL crashes and comes back while the API and a worker run a job: the worker survives and
finishes it on its first attempt; while the database is down, /ready is 503 and requests get a
503 problem naming the database (nothing half-written), /metrics still answers.

The cluster is a throwaway one (``initdb`` into a temp dir, its own port), stopped with
``pg_ctl stop -m immediate`` (no checkpoint, as in a crash) and started again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from fault_helpers import Proc, Serve, ThrowawayPostgres, assert_nothing_lost, progress_epoch

from hinn_client import Client
from tests.service_helpers import make_db, wait_for

EPOCHS = 3000  # with patience 0: still training through the outage and a heartbeat (~4 ms an epoch)
OUTAGE_SECONDS = 4.0


def _problem(r: httpx.Response, status: int, field: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["errors"][0]["field"] == field and field in body["detail"]
    return body


def test_the_worker_survives_a_database_restart_and_finishes_the_job(throwaway_postgres: ThrowawayPostgres,
                                                                     tmp_path: Path, procs: list[Proc]) -> None:
    pg = throwaway_postgres
    db = make_db(pg.url)
    serve = Serve(pg.url, tmp_path / "serve.log", HINN_LEASE_SECONDS="10")
    procs.append(serve)
    with Client(serve.url, timeout=30) as hinn:
        data = hinn.create_dataset("pg-restart", system="spring", n_trajectories=6, t_end=1.0, dt=0.1)
        job = hinn.train("pg-survivor", dataset_id=data["id"], model={"architecture": "hinn-separable", "width": 8},
                         training={"epochs": EPOCHS, "lbfgs_iterations": 0, "patience": 0})
        wait_for(lambda: progress_epoch(db, job["id"]) >= 1, timeout=120, what="training to start")
        db.dispose()  # our own pooled connections would only be dead ones

        pg.stop("immediate")
        down_since = time.monotonic()
        _problem(httpx.get(serve.url + "/ready", timeout=10), 503, "database")
        body = _problem(httpx.get(f"{serve.url}/jobs/{job['id']}", timeout=10), 503, "database")
        assert "unavailable" in body["detail"]
        _problem(httpx.post(serve.url + "/datasets", json={"name": "lost?", "system": "spring"}, timeout=10), 503,
                 "database")
        scrape = httpx.get(serve.url + "/metrics", timeout=10)
        assert scrape.status_code == 200 and "hinn_database_up 0.0" in scrape.text
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
        pg.start()

        wait_for(lambda: httpx.get(serve.url + "/ready", timeout=10).status_code == 200, timeout=60,
                 what="/ready to recover")
        done = hinn.wait(job, progress=False, timeout=240, poll=0.3)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done  # survived: not re-run
        assert [d["name"] for d in hinn.datasets()] == ["pg-restart"]  # the refused write left nothing
        assert serve.alive()
    serve.stop()
    assert_nothing_lost(db, [job["id"]])
    db.dispose()
    # hinn serve logs JSON lines; the outage's 503s are there with their request ids
    records = [json.loads(line) for line in serve.log.read_text().splitlines() if line.startswith("{")]
    refused = [r for r in records if r["logger"] == "hinn.access" and r["status"] == 503]
    assert refused and all(len(r["request_id"]) == 32 and r["duration_ms"] >= 0 for r in refused)
    assert any(r["logger"] == "hinn.worker" and "heartbeat failed" in r["message"] for r in records)
