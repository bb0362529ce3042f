"""What a worker runs in its spawned child process: training jobs, start to artifact.

The child never touches the database: the parent sends a job (dataset and request), the child
sends back progress records and finally the artifact (or an error), then waits for the next job
— one child serves many jobs, so torch is imported once per worker, not once per job. A crash
or a kill of the child is a lost attempt, never a half-written row; the parent starts a fresh
child for the next job. If the parent dies, the child exits (its pipe breaks, and a watchdog
notices the re-parenting).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from typing import Any

PARENT_POLL_SECONDS = 1.0


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(3)  # orphaned: the worker died; a lease-holder elsewhere will redo the job


def serve(conn: Any, parent_pid: int) -> None:
    """Entry point of the child (``multiprocessing`` spawn target): run jobs until the pipe closes."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    # Ctrl-C reaches the whole process group: let the worker decide (it re-queues and kills us cleanly)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import hinn_core  # noqa: F401  - import torch & co. now, while the worker waits for a job

    conn.send(("ready", os.getpid()))
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        if kind != "job":
            return
        try:
            result = train_job(payload, lambda rec: conn.send(("progress", rec)))
            conn.send(("result", result))
        except (BrokenPipeError, OSError):
            os._exit(3)
        except Exception as exc:  # reported to the parent, which records it on the job
            report = {"message": f"{type(exc).__name__}: {exc}", "retry": transient(exc),
                      "traceback": "".join(traceback.format_exception(exc))}
            try:
                conn.send(("error", report))
            except (BrokenPipeError, OSError):
                os._exit(3)


def transient(exc: BaseException) -> bool:
    """Whether another attempt could succeed: running out of (GPU) memory may pass when the machine
    is less busy; anything else a training run raises is deterministic for the same request and
    seed, so retrying it would only fail again (a crash of the process is retried by the parent)."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def train_job(payload: dict[str, Any], progress: Any) -> dict[str, Any]:
    """Train, evaluate and serialise as the request says (also usable in-process, e.g. in tests)."""
    import hashlib

    import torch

    from hinn_core import ModelSpec, TrainConfig, build_metadata, evaluate, model_to_bytes, train
    from hinn_core.dataio import dataset_from_npz_bytes

    if payload.get("threads"):
        torch.set_num_threads(int(payload["threads"]))
    request = payload["request"]
    data = dataset_from_npz_bytes(payload["dataset_npz"], max_bytes=None)  # the stored blob, bounded at upload
    data.source = dict(payload.get("dataset_source") or data.source)
    # too few trajectories (or test_fraction 0) to hold any out: the metrics say so (held_out)
    train_set, test_set, held_out = data.holdout(float(request.get("test_fraction", 0.2)),
                                                 seed=request["training"]["seed"])
    spec = ModelSpec(dof=data.dof, integrator=request.get("integrator"), **request["model"])
    training = dict(request["training"])
    if training.get("device", "auto") == "auto":
        training["device"] = payload.get("device", "auto")
    config = TrainConfig.from_dict(training)
    result = train(train_set, spec, config, progress=progress)
    metrics = evaluate(result.model, test_set)
    metrics["held_out"] = held_out
    meta = build_metadata(result.model, name=payload["name"],
                          training={"config": config.to_dict(), **result.summary()},
                          metrics=metrics, lineage={"dataset": data.source, "dataset_id": payload["dataset_id"],
                                                    "job_id": payload["job_id"]})
    blob = model_to_bytes(result.model, meta)
    return {
        "artifact": blob,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "config": {"model": spec.to_dict(), "training": config.to_dict()},
        "metrics": metrics,
        "summary": result.summary(),
        "history": result.history,
    }
