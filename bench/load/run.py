"""Load test: sustained `/predict` at increasing concurrency while training jobs run; writes docs/reliability.md.

    python -m bench.load.run                      # ~2.5 min: 1, 4, 16 clients × 30 s, loopback only
    python -m bench.load.run --suites-junit suites.xml   # also report the fault/fuzz/security suites' outcomes

It starts ``hinn serve`` (one in-process worker, a temp SQLite file) on a free 127.0.0.1 port,
trains the model to serve, then for each concurrency level runs that many client threads (one
httpx connection each) for a fixed time while a feeder keeps one training job queued or running,
so the worker trains throughout (the share of the level it trained is reported). It records
per-request latency and errors, samples the server's RSS (API process and its training child)
every second, and reads /metrics at the end. Every loop is bounded in count
and time; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.serve import hinn_serve
from hinn_client import Client

ROOT = Path(__file__).resolve().parents[2]
PREDICT = {"model": "load-model", "initial_conditions": [{"q": [1.0], "p": [0.0]}, {"q": [0.5], "p": [0.5]},
                                                         {"q": [-0.3], "p": [0.8]}, {"q": [0.0], "p": [-1.0]}],
           "t_end": 10.0, "dt": 0.1}  # 4 initial conditions × 100 steps = 400 state-steps per request
STATE_STEPS = 4 * 100
TRAIN = {"model": {"architecture": "hinn-separable", "width": 16}, "integrator": "leapfrog",
         "training": {"epochs": 60, "lbfgs_iterations": 0}}
MAX_REQUESTS_PER_LEVEL = 200_000  # a hard bound on top of the time bound
MAX_JOBS_PER_LEVEL = 50  # the feeder's bound
FAULTS_AND_INPUTS = Path(__file__).with_name("faults_and_inputs.md")
#: how the junit file for --suites-junit is made (PostgreSQL mandatory under CI=true)
SUITES_COMMAND = ("CI=true HINN_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test "
                  "pytest tests/faults tests/fuzz tests/security tests/api/test_api_nul.py tests/api/test_api_auth.py "
                  "--junitxml suites.xml")  # the suites' faults and inputs, by hand


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (workers spawn their training child from a thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@dataclass
class Level:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        n = len(self.latencies)
        return {"clients": self.clients, "requests": n, "errors": len(self.errors),
                "throughput_rps": n / self.wall if self.wall else 0.0,
                "state_steps_per_s": n * STATE_STEPS / self.wall if self.wall else 0.0,
                "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                "max_ms": float(np.max(lat)), "error_samples": self.errors[:5]}


def run_level(url: str, level: Level) -> None:
    """``level.clients`` threads post /predict until the time is up; latencies of 200s, everything else an error."""
    lock = threading.Lock()
    deadline = time.monotonic() + level.seconds
    body = json.dumps(PREDICT).encode()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"Content-Type": "application/json"}) as http:
            while time.monotonic() < deadline and len(level.latencies) < MAX_REQUESTS_PER_LEVEL:
                t0 = time.perf_counter()
                try:
                    r = http.post("/predict", content=body)
                    ok = r.status_code == 200 and len(r.json()["trajectories"]) == 4
                    err = None if ok else f"{r.status_code}: {r.text[:200]}"
                except Exception as exc:  # a dropped connection is an error to count, not a crash
                    err = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if err is None:
                        level.latencies.append(elapsed)
                    else:
                        level.errors.append(err)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(level.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=level.seconds + 60)
    level.wall = time.monotonic() - t0


def feed_training(hinn: Client, dataset_id: str, name: str, stop: threading.Event, job_ids: list[str]) -> None:
    """Keep one training job queued or running until ``stop``: submit the next when the last ended."""
    current: str | None = None
    while not stop.is_set() and len(job_ids) < MAX_JOBS_PER_LEVEL:
        if current is None or hinn.job(current)["status"] not in ("queued", "running"):
            current = hinn.train(f"{name}-{len(job_ids)}", dataset_id=dataset_id, **TRAIN)["id"]
            job_ids.append(current)
        stop.wait(0.5)


def training_share(jobs: list[dict[str, Any]], start: float, end: float) -> float:
    """The share of ``[start, end]`` (epoch seconds) during which one of ``jobs`` was running."""
    spans = []
    for j in jobs:
        if j.get("started_at"):
            a = datetime.fromisoformat(j["started_at"].replace("Z", "+00:00")).timestamp()
            b = datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00")).timestamp() \
                if j.get("finished_at") else end
            spans.append((max(a, start), min(b, end)))
    covered, reach = 0.0, start
    for a, b in sorted(spans):
        a = max(a, reach)
        if b > a:
            covered, reach = covered + b - a, b
    return covered / (end - start) if end > start else 0.0


def metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,4,16", help="client counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of each level")
    ap.add_argument("--drain-seconds", type=float, default=120.0, help="wait this long for queued jobs at the end")
    ap.add_argument("--idle-seconds", type=float, default=10.0, help="RSS sampled this long after the load")
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--suites-junit", default=None, help="a pytest --junitxml file of tests/faults, fuzz, security")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    command = "python -m bench.load.run " + " ".join(argv if argv is not None else sys.argv[1:])

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server on the way out
    samples: list[tuple[float, float, float, str]] = []  # (t, api RSS, children RSS, phase)
    results: dict[str, Any] = {"load_average_start": os.getloadavg()}
    phase = ["setup"]
    stop = threading.Event()
    t_start = time.monotonic()
    with hinn_serve("load") as server:
        url = server.url

        def sample() -> None:
            while not stop.is_set():
                kids = sum(rss_mib(c) for c in children(server.proc.pid))
                samples.append((time.monotonic() - t_start, rss_mib(server.proc.pid), kids, phase[0]))
                stop.wait(1.0)

        threading.Thread(target=sample, daemon=True).start()
        try:
            with Client(url, timeout=60) as hinn:
                data = hinn.create_dataset("load-data", system="spring", n_trajectories=20, t_end=3.0, dt=0.1)
                t0 = time.monotonic()
                model_job = hinn.wait(hinn.train("load-model", dataset_id=data["id"], **TRAIN), progress=False,
                                      timeout=300)
                results["setup_training_s"] = time.monotonic() - t0
                results["model_metrics"] = hinn.model(model_job["model_id"])["metrics"]
                level_results = []
                job_ids: list[str] = []
                for n in levels:
                    phase[0] = f"{n} clients"
                    level = Level(n, args.seconds)
                    fed: list[str] = []
                    done = threading.Event()
                    with Client(url, timeout=60) as feeder_client:
                        feeder = threading.Thread(target=feed_training, args=(
                            feeder_client, data["id"], f"bg-{n}", done, fed), daemon=True)
                        started = time.time()
                        feeder.start()
                        run_level(url, level)
                        ended = time.time()
                        done.set()
                        feeder.join(timeout=60)
                    job_ids += fed
                    summary = level.summary()
                    summary["training_jobs"] = len(fed)
                    summary["training_share"] = training_share([hinn.job(j) for j in fed], started, ended)
                    level_results.append(summary)
                    print(json.dumps(level_results[-1]), flush=True)
                phase[0] = "drain"
                drain_until = time.monotonic() + args.drain_seconds
                while time.monotonic() < drain_until and any(
                        hinn.job(j)["status"] in ("queued", "running") for j in job_ids):
                    time.sleep(1.0)
                finished = [hinn.job(j) for j in job_ids]
                phase[0] = "idle after the load"
                time.sleep(args.idle_seconds)
                results["background_jobs"] = {"count": len(finished),
                                              "succeeded": sum(j["status"] == "succeeded" for j in finished),
                                              "failed": sum(j["status"] == "failed" for j in finished),
                                              "unfinished": sum(j["status"] in ("queued", "running") for j in finished),
                                              "epochs_each": TRAIN["training"]["epochs"]}
            scrape = httpx.get(f"{url}/metrics", timeout=10).text
            results["levels"] = level_results
            results["server_metrics"] = {
                "predict_state_steps_total": metric(scrape, "hinn_predict_state_steps_total"),
                "predict_seconds_total": metric(scrape, "hinn_predict_seconds_total"),
                "http_5xx": sum(float(v) for v in re.findall(r'^hinn_http_requests_total\{.*status="5\d\d"\} (\S+)$',
                                                             scrape, re.M)),
                "jobs_succeeded": metric(scrape, "hinn_jobs", '{status="succeeded"}'),
                "jobs_failed": metric(scrape, "hinn_jobs", '{status="failed"}'),
            }
        finally:
            stop.set()
    results["rss"] = samples
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    results["load_average_end"] = os.getloadavg()
    results["drain_seconds"] = args.drain_seconds
    results["command"] = command
    results["suites"] = suite_outcomes(args.suites_junit)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(results))
    print(f"wrote {args.out}")
    bad = sum(lv["errors"] for lv in results["levels"]) or results["server_metrics"]["http_5xx"]
    return 1 if bad else 0


def suite_outcomes(junit: str | None) -> dict[str, Any] | None:
    """Per test file: passed/failed/skipped counts and seconds, from a pytest --junitxml file."""
    if not junit:
        return None
    out: dict[str, dict[str, float]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        key = case.get("classname", "").replace(".", "/") + ".py"
        row = out.setdefault(key, {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0})
        row["seconds"] += float(case.get("time", 0))
        kinds = {child.tag for child in case}
        row["failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"] += 1
    return out


def _rss_table(samples: list[tuple[float, float, float, str]]) -> list[str]:
    rows = ["| phase | seconds | API RSS start → end (max), MiB | training child RSS (max), MiB |",
            "| --- | --- | --- | --- |"]
    phases: dict[str, list[tuple[float, float, float, str]]] = {}
    for s in samples:
        phases.setdefault(s[3], []).append(s)
    for name, ss in phases.items():
        api = [s[1] for s in ss]
        rows.append(f"| {name} | {ss[0][0]:.0f}–{ss[-1][0]:.0f} | {api[0]:.0f} → {api[-1]:.0f} ({max(api):.0f}) "
                    f"| {max(s[2] for s in ss):.0f} |")
    return rows


def _rss_verdict(samples: list[tuple[float, float, float, str]]) -> str:
    """Growth within each phase and over the drain (steady state after the load), in words."""
    by_phase: dict[str, list[float]] = {}
    for s in samples:
        by_phase.setdefault(s[3], []).append(s[1])
    within = {k: v[-1] - v[0] for k, v in by_phase.items() if k != "setup" and len(v) > 1}
    worst = max(within, key=lambda k: abs(within[k]))
    idle = by_phase.get("idle after the load", [float("nan")])
    return (f"Bar: zero errors and flat memory. The largest change of the API's RSS within one phase was "
            f"{within[worst]:+.0f} MiB ({worst}); from the end of the last level to the end of the idle period "
            f"after it: {idle[-1] - by_phase[worst][-1]:+.0f} MiB.")


def _findings(r: dict[str, Any]) -> str:
    """The run's findings in words, from its figures (nothing here is fixed text about the outcome)."""
    levels = r["levels"]
    errors = sum(lv["errors"] for lv in levels)
    first, best = levels[0], max(levels, key=lambda lv: lv["throughput_rps"])
    where = ", ".join(f"{lv['errors']} at {lv['clients']} clients" for lv in levels if lv["errors"])
    parts = ["Findings: " + ("no errors at any level" if errors == 0 else f"**{errors} errors** ({where})")]
    gain = best["throughput_rps"] / first["throughput_rps"] if first["throughput_rps"] else float("nan")
    parts.append(f"peak throughput {best['throughput_rps']:.0f} req/s at {best['clients']} clients, "
                 f"{gain:.2f}× the single client's {first['throughput_rps']:.0f} req/s "
                 f"({r['machine'].split(', ')[1]} shared by the server, its training child and the clients)")
    parts.append(f"p99 latency from {first['p99_ms']:.0f} ms at {first['clients']} client(s) to "
                 f"{levels[-1]['p99_ms']:.0f} ms at {levels[-1]['clients']}")
    jobs = r["background_jobs"]
    parts.append(f"{jobs['succeeded']} of {jobs['count']} training jobs succeeded")
    return "; ".join(parts) + "."


def _rss_series(samples: list[tuple[float, float, float, str]], every: int = 10) -> list[str]:
    rows = ["| t (s) | phase | API RSS | training child RSS |", "| --- | --- | --- | --- |"]
    picked = samples[::every] + ([samples[-1]] if samples and (len(samples) - 1) % every else [])
    rows += [f"| {t:.0f} | {ph} | {api:.0f} | {kid:.0f} |" for t, api, kid, ph in picked]
    return rows


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Reliability: load, faults, bad input",
        "",
        "Generated by `bench/load/run.py` (the load figures) from the fault, fuzz and security suites",
        "(`tests/faults/`, `tests/fuzz/`, `tests/security/`). Rerun both to refresh this page.",
        "",
        "## Load: sustained `/predict` with training in parallel",
        "",
        f"Command: `{r['command'].strip()}` — machine: {r['machine']}. Loopback only; `hinn serve` with one",
        "in-process worker on a SQLite file; each request rolls out 4 initial conditions × 100 leapfrog steps",
        "(400 state-steps) of a separable HINN (width 16). While each level runs, a feeder keeps one training",
        f"job queued or running ({r['background_jobs']['count']} jobs of {r['background_jobs']['epochs_each']} "
        f"epochs in all: {r['background_jobs']['succeeded']} succeeded, {r['background_jobs']['failed']} failed, "
        f"{r['background_jobs']['unfinished']} still queued or running after the {r['drain_seconds']:.0f} s "
        "drain), so requests and training share the CPU; *trained* is the share of the level during which",
        "the worker was training (from the jobs' start and finish times).",
        "",
        "| clients | requests | errors | throughput (req/s) | state-steps/s | p50 (ms) | p99 (ms) | max (ms) "
        "| training jobs | trained |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lv in r["levels"]:
        lines.append(f"| {lv['clients']} | {lv['requests']} | {lv['errors']} | {lv['throughput_rps']:.1f} | "
                     f"{lv['state_steps_per_s']:.0f} | {lv['p50_ms']:.1f} | {lv['p99_ms']:.1f} | {lv['max_ms']:.1f} "
                     f"| {lv.get('training_jobs', '—')} | "
                     + ("—" if "training_share" not in lv else f"{100 * lv['training_share']:.0f}%") + " |")
    sm = r["server_metrics"]
    if sm["predict_seconds_total"]:
        rollout = (f"rollouts alone ran at {sm['predict_state_steps_total'] / sm['predict_seconds_total']:,.0f} "
                   "state-steps/s (`hinn_predict_state_steps_total / hinn_predict_seconds_total`); the rest of "
                   "each request's latency is HTTP, JSON and waiting for a core.")
    else:
        rollout = ("the rollout-only throughput (`hinn_predict_state_steps_total`) was not reported: the predict "
                   "route did not call `app.metrics.observe_predict` in this build.")
    load = ", ".join(f"{x:.1f}" for x in r["load_average_start"]), ", ".join(f"{x:.1f}" for x in r["load_average_end"])
    lines += [
        "",
        f"Server side (`/metrics` at the end): {sm['http_5xx']:.0f} HTTP 5xx, {sm['jobs_failed']:.0f} failed jobs; "
        f"{rollout} Load average {load[0]} at the start, {load[1]} at the end (1, 5, 15 min). {_findings(r)}",
        "",
        "Memory (RSS sampled every second), by phase:",
        "",
        *_rss_table(r["rss"]),
        "",
        _rss_verdict(r["rss"]),
        "",
        "Over time (every 10th sample; MiB):",
        "",
        *_rss_series(r["rss"]),
        "",
        *FAULTS_AND_INPUTS.read_text().rstrip("\n").splitlines(),
    ]
    if r.get("suites"):
        lines += ["", "### Outcome of the suites (this run)", "", f"`{SUITES_COMMAND}`, then "
                  "`python -m bench.load.run --suites-junit suites.xml`:", "",
                  "| test file | passed | failed | skipped | seconds |", "| --- | --- | --- | --- | --- |"]
        for name, row in sorted(r["suites"].items()):
            lines.append(f"| `{name}` | {row['passed']:.0f} | {row['failed']:.0f} | {row['skipped']:.0f} | "
                         f"{row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
