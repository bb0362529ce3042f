"""`hinn serve` SIGKILLed mid-job (SQLite and PostgreSQL): after a restart the job is finished, once.

The API process runs the job in its in-process worker; killing it kills the worker too (its
training child exits when orphaned). The restarted API's worker reclaims the job when the 2 s
lease expires. The client sees the same job through the restart (an `Idempotency-Key` replay
returns it) and `wait` rides out the outage.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from fault_helpers import Proc, Serve, assert_nothing_lost, progress_epoch

from hinn_client import Client
from tests.service_helpers import make_db, wait_for

EPOCHS = 1000  # ~4 s on the compiled engine: the kill lands mid-training


def test_an_api_killed_mid_job_finishes_it_after_a_restart(database_url: str, tmp_path: Path,
                                                            procs: list[Proc]) -> None:
    db = make_db(database_url)
    env = {"HINN_LEASE_SECONDS": "2"}
    first = Serve(database_url, tmp_path / "serve-1.log", **env)
    procs.append(first)
    request = {"name": "survivor", "model": {"architecture": "hinn-separable", "width": 8},
               "training": {"epochs": EPOCHS, "lbfgs_iterations": 0, "patience": 0},
               "idempotency_key": "restart-test"}
    with Client(first.url, timeout=30) as hinn:
        data = hinn.create_dataset("restart-data", system="spring", n_trajectories=6, t_end=1.0, dt=0.1)
        job = hinn.train(dataset_id=data["id"], **request)
    wait_for(lambda: progress_epoch(db, job["id"]) >= 1, timeout=120, what="training to start")
    first.kill()
    assert progress_epoch(db, job["id"]) < EPOCHS, "training finished before the kill; raise EPOCHS"

    second = Serve(database_url, tmp_path / "serve-2.log", **env)
    procs.append(second)
    with Client(second.url, timeout=30) as hinn:
        assert hinn.train(dataset_id=data["id"], **request)["id"] == job["id"]  # replayed, not queued again
        done = hinn.wait(job, progress=False, timeout=180, poll=0.3)
        assert done["status"] == "succeeded" and done["attempts"] == 2 and done["progress"]["epoch"] == EPOCHS
        (model,) = hinn.models(name="survivor")
        assert model["id"] == done["model_id"] and model["version"] == 1
        metrics = httpx.get(second.url + "/metrics", timeout=10).text
        assert 'hinn_jobs{status="succeeded"} 1.0' in metrics and "hinn_queue_depth 0.0" in metrics
    second.stop()
    assert_nothing_lost(db, [job["id"]])
    db.dispose()

