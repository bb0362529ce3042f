"""Observability: Prometheus metrics (`GET /metrics`), request ids and structured JSON logs.

- Every app has its own `CollectorRegistry`, so several apps in one process (tests) never collide.
- HTTP: ``hinn_http_requests_total{method,route,status}`` and a latency histogram by method and
  route *template* (``/jobs/{job_id}``: bounded label values; unmatched paths are ``<unmatched>``).
- Jobs: ``hinn_jobs{status}``, ``hinn_queue_depth`` (claimable jobs) and the epochs/s of each running
  job (its progress record: epoch / seconds), read from the database at scrape time with two indexed
  counts and one small select; a database that does not answer gives ``hinn_database_up 0``.
- Predict: `observe_predict` (called by the predict route) feeds counters of state-steps and seconds
  — ``rate()`` of the two is the throughput — and a histogram of per-request state-steps/s.
- Logs: `configure_logging` (``hinn serve``, ``hinn worker``) writes one JSON object per line; the
  request id comes from ``X-Request-ID`` (or is generated), is echoed in the response and is on
  every record logged while the request runs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, or_, select
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import READ_AUTH
from app.db.base import db_now
from app.db.models import Job, JobStatus
from app.db.session import Database

log = logging.getLogger("hinn.metrics")
access_log = logging.getLogger("hinn.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")  # anything else is replaced (log injection)
UNMATCHED = "<unmatched>"

request_id_var: ContextVar[str | None] = ContextVar("hinn_request_id", default=None)
_current_metrics: ContextVar[Metrics | None] = ContextVar("hinn_metrics", default=None)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
THROUGHPUT_BUCKETS = (1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7)


class _JobsCollector(Collector):
    """Job gauges computed from the database at scrape time (nothing cached, nothing to go stale)."""

    def __init__(self, get_db: Callable[[], Database | None]) -> None:
        self.get_db = get_db

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration: the database may not exist yet

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hinn_database_up", "1 when the scrape-time job queries succeeded")
        db = self.get_db()
        try:
            if db is None:
                raise RuntimeError("the app has not started")
            with db.session() as s:
                counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
                claimable = s.scalar(select(func.count()).select_from(Job).where(or_(
                    Job.status == JobStatus.queued.value,
                    and_(Job.status == JobStatus.running.value, Job.lease_expires_at < db_now()))))
                running = s.execute(select(Job.id, Job.name, Job.progress)
                                    .where(Job.status == JobStatus.running.value)).all()
        except Exception as exc:  # an outage must not break the scrape: the HTTP metrics still matter
            log.warning("metrics: job gauges unavailable (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:200])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("hinn_jobs", "jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily("hinn_queue_depth", "jobs waiting for a worker (queued, or running on an "
                                "expired lease)", value=claimable or 0)
        rate = GaugeMetricFamily("hinn_training_epochs_per_second", "epochs/s of each running job so far "
                                 "(its latest progress record: epoch / seconds)", labels=["job_id", "name"])
        for job_id, name, progress in running:
            eps = epochs_per_second(progress)
            if eps is not None:
                rate.add_metric([job_id, name], eps)
        yield rate


def epochs_per_second(progress: dict[str, Any] | None) -> float | None:
    """Epochs per second from a progress record (``epoch``, ``seconds`` since training started)."""
    if not isinstance(progress, dict):
        return None
    epoch, seconds = progress.get("epoch"), progress.get("seconds")
    if not isinstance(epoch, (int, float)) or not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    return float(epoch) / float(seconds)


class Metrics:
    """The metrics of one app, in its own registry."""

    def __init__(self, get_db: Callable[[], Database | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hinn_http_requests", "HTTP requests by method, route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("hinn_http_request_duration_seconds", "HTTP request latency (until the "
                                 "response is sent)", ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("hinn_http_requests_in_flight", "HTTP requests being served", registry=r)
        self.predict_state_steps = Counter("hinn_predict_state_steps", "initial conditions × steps rolled "
                                           "out by /predict", registry=r)
        self.predict_seconds = Counter("hinn_predict_seconds", "seconds spent in /predict rollouts", registry=r)
        self.predict_throughput = Histogram("hinn_predict_state_steps_per_second", "state-steps/s of each "
                                            "/predict rollout", buckets=THROUGHPUT_BUCKETS, registry=r)
        r.register(_JobsCollector(get_db))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_predict(self, state_steps: int, seconds: float) -> None:
        self.predict_state_steps.inc(state_steps)
        self.predict_seconds.inc(max(seconds, 0.0))
        if seconds > 0:
            self.predict_throughput.observe(state_steps / seconds)


def observe_predict(state_steps: int, seconds: float) -> None:
    """Record one /predict rollout (``state_steps`` = initial conditions × steps) on the current app.

    Called from inside a request (the app's middleware makes its metrics current, also in the
    threadpool that runs sync routes); outside a request there is no app to count for: a no-op.
    """
    metrics = _current_metrics.get()
    if metrics is not None:
        metrics.observe_predict(state_steps, seconds)


def _route_template(scope: Scope) -> str:
    """The matched route's path template. FastAPI's own routes put themselves in the scope; plain
    Starlette routes (``/docs``, ``/openapi.json``) leave only their endpoint, found in the app's routes."""
    path = getattr(scope.get("route"), "path", None)
    endpoint = scope.get("endpoint")
    if path is None and endpoint is not None:
        routes = getattr(scope.get("app"), "routes", ())
        path = next((getattr(r, "path", None) for r in routes if getattr(r, "endpoint", None) is endpoint), None)
    return path if isinstance(path, str) else UNMATCHED


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers") or []:
        if key == b"x-request-id":
            given = value.decode("latin-1").strip()
            if _REQUEST_ID_OK.match(given):
                return given
            break
    return uuid.uuid4().hex


class ObservabilityMiddleware:
    """Pure ASGI, outermost: request id in and out, latency and status metrics, one access-log record."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        id_token = request_id_var.set(request_id)
        metrics_token = _current_metrics.set(self.metrics)
        status = 500  # unless a response starts: an exception escaping here becomes a 500 outside us
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_flight.dec()
            method = scope.get("method", "")
            self.metrics.observe_request(method, _route_template(scope), status, seconds)
            access_log.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s %d", method, scope.get("path"),
                           status, extra={"method": method, "path": scope.get("path"), "status": status,
                                          "duration_ms": round(seconds * 1000, 3)})
            _current_metrics.reset(metrics_token)
            request_id_var.reset(id_token)


router = APIRouter(tags=["health"])


@router.get("/metrics", name="metrics", dependencies=READ_AUTH, response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}},
            summary="Prometheus metrics: HTTP traffic, jobs by status, queue depth, training and predict throughput")
def metrics_endpoint(request: Request) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(request.app.state.metrics.registry), media_type=content_type)


# -- structured logs -------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and the access fields."""

    EXTRA = ("method", "path", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        for name in self.EXTRA:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: Any = None) -> logging.Handler:
    """JSON lines on stderr (or ``stream``) for the root logger; uvicorn's loggers go through it.

    uvicorn's own access log is silenced: the middleware's ``hinn.access`` record carries the same
    facts plus the request id and the duration.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return handler
