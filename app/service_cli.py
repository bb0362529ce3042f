"""``hinn serve``, ``hinn worker`` and ``hinn db ...``: the service's entry points."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any

from app import cli_types


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from app.settings import Settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return Settings(**overrides)


def _check_device(device: str) -> None:
    """Refuse to start workers that would fail every job they claim (``cuda`` with no GPU here)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("hinn: error: device 'cuda' (HINN_DEVICE or --device) but torch sees no CUDA "
                             "device on this machine; use --device cpu or auto")


def _check_fastpath_settings() -> None:
    """A worker's training children read ``HINN_FASTPATH_*`` when they import the kernels: a bad value
    would fail every job, so a worker with one set imports them once here and refuses to start."""
    if any(os.environ.get(name) for name in ("HINN_FASTPATH_THREADS", "HINN_FASTPATH_PARALLEL_MIN")):
        from hinn_core import fastpath  # noqa: F401 - raises ConfigError naming the variable


def _check_database(settings: Any) -> None:
    """Connect once before serving: a bad URL or an unreachable database is one line here, not a
    traceback from the server's start-up (`main` prints SQLAlchemy's errors as one line)."""
    from app.db.session import Database

    db = Database(settings.database_url)
    try:
        with db.engine.connect():
            pass
    finally:
        db.dispose()


def _ensure_schema(db: Any, settings: Any) -> None:
    from app.db import migrate

    if settings.auto_migrate:
        migrate.upgrade(db.engine)
    elif not migrate.is_at_head(db.engine):
        raise SystemExit(f"database schema is at {migrate.current_revision(db.engine)}, not at "
                         f"{migrate.head_revision()}; run 'hinn db upgrade' (or set HINN_AUTO_MIGRATE=true)")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.metrics import configure_logging

    settings = _settings(args, workers=args.workers, device=args.device)
    if settings.workers:
        _check_device(settings.device)
    _check_database(settings)
    import torch

    # competing intra-op threads slow batch-1 rollouts 2.5-5x on a busy machine; the compiled
    # kernel threads large batches itself, and training runs in a separate process
    torch.set_num_threads(settings.api_torch_threads)
    from hinn_core import fastpath

    if fastpath.available():  # compile/load the prediction kernels without holding up start-up
        fastpath.warm_in_background()
    configure_logging(settings.log_level)  # JSON lines with request ids (HINN_LOG_LEVEL)
    logging.getLogger("hinn.serve").info("serving %s with %d worker(s) — Swagger UI at http://%s:%d/docs",
                                         settings.database_url, settings.workers, args.host, args.port)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower(),
                log_config=None, access_log=False)  # logging is configured above; hinn.access logs requests
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.db.session import Database
    from app.metrics import configure_logging
    from app.worker import Worker

    settings = _settings(args, device=args.device, poll_seconds=args.poll_seconds, lease_seconds=args.lease_seconds)
    _check_device(settings.device)
    _check_fastpath_settings()
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    _ensure_schema(db, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(db, settings, worker_id=args.worker_id, stop=stop, threads=args.threads)
    log = logging.getLogger("hinn.worker")
    log.info("worker %s: polling %s", worker.worker_id, settings.database_url)
    done = worker.run(max_jobs=args.max_jobs, exit_when_idle=args.exit_when_idle)
    log.info("worker %s: processed %d job(s)", worker.worker_id, done)
    db.dispose()
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from app.db import migrate
    from app.db.session import Database

    db = Database(_settings(args).database_url)
    if args.db_command == "upgrade":
        migrate.upgrade(db.engine, args.revision)
    elif args.db_command == "downgrade":
        migrate.downgrade(db.engine, args.revision)
    current = migrate.current_revision(db.engine)
    print(f"database revision: {current} (head: {migrate.head_revision()})")
    db.dispose()
    return 0


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the REST API with in-process workers",
                       description="Defaults: SQLite file ./hinn.db, one worker, http://127.0.0.1:8000/docs. "
                                   "Every HINN_* environment variable applies (see README).")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=cli_types.port, default=8000)
    s.add_argument("--database-url", help="default: HINN_DATABASE_URL or sqlite:///./hinn.db")
    s.add_argument("--workers", type=cli_types.non_negative_int, help="in-process workers (default: HINN_WORKERS or 1)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="run a standalone training worker (any host, shared database)")
    w.add_argument("--database-url")
    w.add_argument("--device", choices=["auto", "cpu", "cuda"])
    w.add_argument("--worker-id", help="default: host:pid:random")
    w.add_argument("--threads", type=cli_types.positive_int, help="torch threads per training process")
    w.add_argument("--poll-seconds", type=cli_types.positive_float)
    w.add_argument("--lease-seconds", type=cli_types.positive_float)
    w.add_argument("--max-jobs", type=cli_types.positive_int, help="exit after this many jobs")
    w.add_argument("--exit-when-idle", action="store_true", help="exit when the queue is empty")
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("db", help="database migrations (Alembic)")
    dsub = d.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = dsub.add_parser("upgrade", help="migrate to the newest schema (or --revision)")
    up.add_argument("--revision", default="head")
    up.add_argument("--database-url")
    down = dsub.add_parser("downgrade", help="migrate down to --revision (default: base, an empty schema)")
    down.add_argument("--revision", default="base")
    down.add_argument("--database-url")
    cur = dsub.add_parser("current", help="print the database's revision")
    cur.add_argument("--database-url")
    d.set_defaults(func=cmd_db)
