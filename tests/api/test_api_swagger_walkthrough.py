"""README's Swagger walk-through, run as written, and the README checked against the API.

Swagger UI (/docs) pre-fills each operation's *first* OpenAPI example. The first test reads those
examples from the live schema (`app.openapi()`) and runs them in README order: POST /datasets →
POST /train (only the dataset id pasted in) → one worker runs the job → GET /jobs/{id} → POST
/predict → POST /predict/plot. The real example runs, with no smaller budget: the default recipe on
50 trajectories (~25 s on 2 idle cores; SQLite only, the database plays no part here).

The other tests pull every JSON body out of the README's walk-through and its curl block and check
that each validates against its operation's request schema and is exactly the pre-filled example
(placeholders included), so the README and the API cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from api_helpers import TestClient, make_settings
from pydantic import BaseModel, ValidationError

from app import schemas
from app.main import create_app
from app.settings import Settings
from app.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATASET_ID_PLACEHOLDER = "<id from POST /datasets>"
#: the operations the walk-through posts a body to, and the example Swagger pre-fills for each
PREFILLED = {("POST", "/datasets"): "generate", ("POST", "/train"): "stored-dataset",
             ("POST", "/predict"): "uniform", ("POST", "/predict/plot"): "uniform"}
# an app that is built but not started: its schema needs no database
OPENAPI = create_app(Settings(database_url="sqlite:////nonexistent/hinn.db", workers=0)).openapi()


def _request_body(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return openapi["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]


def first_example(openapi: dict[str, Any], method: str, path: str) -> tuple[str, Any]:
    """(name, value) of the example Swagger UI pre-fills: the first one listed."""
    name, example = next(iter(_request_body(openapi, method, path)["examples"].items()))
    return name, copy.deepcopy(example["value"])


def request_models(openapi: dict[str, Any], method: str, path: str) -> list[type[BaseModel]]:
    """The pydantic models named by the operation's request schema (a $ref or a oneOf of them)."""
    refs = re.findall(r"#/components/schemas/(\w+)", json.dumps(_request_body(openapi, method, path)["schema"]))
    assert refs, f"{method} {path}: no request schema"
    return [getattr(schemas, name) for name in refs]


def assert_valid_request(method: str, path: str, body: Any) -> None:
    """The body validates against exactly one of the operation's request models."""
    ok = []
    for model in request_models(OPENAPI, method, path):
        try:
            model.model_validate(body)
            ok.append(model.__name__)
        except ValidationError:
            pass
    assert len(ok) == 1, f"{method} {path}: {body} validates against {ok or 'none'} of the request schemas"


# -- the examples, run in order -----------------------------------------------------------------------
@pytest.mark.slow
def test_swagger_examples_run_in_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings)
    openapi = app.openapi()
    for (method, path), name in PREFILLED.items():
        assert first_example(openapi, method, path)[0] == name, f"{method} {path} pre-fills another example"

    with TestClient(app) as client:
        _, dataset_body = first_example(openapi, "POST", "/datasets")
        r = client.post("/datasets", json=dataset_body)
        assert r.status_code == 201, r.text
        dataset = r.json()
        assert r.headers["location"].endswith(dataset["id"])
        assert dataset["n_trajectories"] == dataset_body["n_trajectories"] == 50 and dataset["dof"] == 1

        _, train_body = first_example(openapi, "POST", "/train")
        assert train_body["dataset_id"] == DATASET_ID_PLACEHOLDER
        train_body["dataset_id"] = dataset["id"]  # what the user pastes; nothing else changes
        r = client.post("/train", json=train_body)
        assert r.status_code == 202, r.text
        job_url = r.headers["location"]
        queued = client.get(job_url)
        assert queued.status_code == 200 and queued.json()["status"] == "queued"

        started = time.perf_counter()
        done = Worker(app.state.db, settings).run(max_jobs=1, exit_when_idle=True)
        wall = time.perf_counter() - started

        r = client.get(job_url)
        assert r.status_code == 200, r.text
        job = r.json()
        assert done == 1 and job["status"] == "succeeded", f"worker ran {done} job(s); the job: {job}"
        assert job["dataset_id"] == dataset["id"] and job["model_id"] and job["error"] is None
        progress = job["progress"]
        # Adam's epochs, then the L-BFGS polish counted on as more epochs: the bar ends full
        assert progress["epoch"] == progress["epochs"] >= job["request"]["training"]["epochs"], progress
        assert progress["phase"] and progress["train_loss"] > 0 and "val_loss" in progress, progress
        run_s = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
        print(f"\nthe walk-through's job: {run_s:.1f} s started → finished, {wall:.1f} s in the worker")
        plot = client.get(f"{job_url}/plot")
        assert plot.status_code == 200 and plot.content.startswith(PNG_MAGIC)

        _, predict_body = first_example(openapi, "POST", "/predict")
        assert predict_body["model"] == train_body["name"]  # the model name from step 2: nothing to paste
        r = client.post("/predict", json=predict_body)
        assert r.status_code == 200, r.text
        pred = r.json()
        n_times = round(predict_body["t_end"] / predict_body["dt"]) + 1
        assert pred["model"]["name"] == "spring-hinn" and pred["model"]["id"] == job["model_id"]
        assert pred["integrator"] == "leapfrog"
        assert len(pred["times"]) == n_times and pred["times"][0] == 0.0
        assert pred["times"][-1] == pytest.approx(predict_body["t_end"])
        assert len(pred["trajectories"]) == len(predict_body["initial_conditions"]) == 1
        (traj,) = pred["trajectories"]
        for key in ("q", "p"):
            assert len(traj[key]) == n_times and all(len(row) == 1 for row in traj[key]), key
        assert traj["q"][0] == predict_body["initial_conditions"][0]["q"]
        assert len(traj["H"]) == len(traj["H_true"]) == n_times

        _, plot_body = first_example(openapi, "POST", "/predict/plot")
        assert plot_body == predict_body  # README step 5: "the same body"
        r = client.post("/predict/plot", json=plot_body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)


# -- the README against the schema -------------------------------------------------------------------
def _walkthrough_steps() -> list[tuple[str, str, str]]:
    """(method, path, text) of each numbered step of the README's Swagger walk-through."""
    section = README.split("## The service: a Swagger walk-through", 1)[1].split("\n#", 1)[0]
    steps: list[tuple[str, str, str]] = []
    for line in section.splitlines():
        start = re.match(r"\d+\. `(GET|POST|DELETE) (/\S*)`(.*)", line)
        if start:
            steps.append((start.group(1), start.group(2), start.group(3)))
        elif steps and line.startswith("   "):
            method, path, text = steps[-1]
            steps[-1] = (method, path, f"{text}\n{line}")
    return steps


def _json_spans(text: str) -> list[Any]:
    return [json.loads(span) for span in re.findall(r"`([^`]*)`", text) if span.lstrip().startswith("{")]


def _curl_commands() -> list[list[str]]:
    """Every curl command in the README's bash blocks, split as the shell would."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README, re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            try:
                argv = shlex.split(pending, comments=True)
            except ValueError:  # a quoted body that goes on over the next line
                continue
            pending = ""
            if argv and argv[0] == "curl":
                commands.append(argv)
        assert not pending, f"unterminated command in a README bash block: {pending!r}"
    return commands


def _curl_request(argv: list[str]) -> tuple[str, str, Any]:
    """(method, path, JSON body or None) of one curl command."""
    method, body, url = None, None, None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-d", "--data", "--data-raw"):
            body = json.loads(next(args))
        elif arg in ("-H", "--header", "-o", "--output"):
            next(args)
        elif re.match(r"(https?://)?(localhost|127\.0\.0\.1):\d+/", arg) and url is None:
            url = arg  # (a placeholder such as ``<job id>`` splits in two: its first half is in the URL)
    assert url is not None, argv
    path = urlsplit(url if "://" in url else f"http://{url}").path
    return method or ("POST" if body is not None else "GET"), path, body


def _route_exists(method: str, path: str) -> bool:
    """``path`` (README placeholders such as ``<job id>`` in its segments) is one of the schema's paths."""
    for template, ops in OPENAPI["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if method.lower() in ops and re.fullmatch(pattern, path):
            return True
    return False


def test_the_readme_walkthrough_bodies_are_the_prefilled_examples() -> None:
    steps = _walkthrough_steps()
    assert [(m, p) for m, p, _ in steps] == [("POST", "/datasets"), ("POST", "/train"), ("GET", "/jobs/{id}"),
                                             ("POST", "/predict"), ("POST", "/predict/plot")]
    with_bodies = 0
    for method, path, text in steps:
        assert _route_exists(method, path), f"README step names {method} {path}, which the API lacks"
        bodies = _json_spans(text)
        if (method, path) in PREFILLED and path != "/predict/plot":  # step 5 says "the same body"
            assert len(bodies) == 1, f"README step {method} {path}: expected one JSON body, found {bodies}"
            name, example = first_example(OPENAPI, method, path)
            assert name == PREFILLED[method, path] and f"`{name}`" in text, f"step {path} must name `{name}`"
            assert_valid_request(method, path, bodies[0])
            assert bodies[0] == example, f"README {method} {path} body differs from Swagger's pre-filled example"
            with_bodies += 1
        else:
            assert not bodies, f"README step {method} {path} has an unexpected JSON body {bodies}"
    assert with_bodies == 3


def test_the_readme_curl_bodies_validate_and_match_the_examples() -> None:
    requests = [_curl_request(argv) for argv in _curl_commands()]
    posted = {(method, path) for method, path, body in requests if body is not None}
    assert posted == set(PREFILLED), f"the README's curl walk-through posts to {posted}"
    for method, path, body in requests:
        assert _route_exists(method, path), f"README curls {method} {path}, which the API lacks"
        if body is not None:
            assert_valid_request(method, path, body)
            assert body == first_example(OPENAPI, method, path)[1], f"README curl {method} {path} body drifted"


def test_the_readme_job_time_is_stated_for_the_defaults() -> None:
    """The time README step 3 quotes is for the pre-filled job: the defaults on the 50-trajectory dataset."""
    assert first_example(OPENAPI, "POST", "/train")[1].keys() == {"name", "dataset_id"}
    assert re.search(r"default spring job takes about \d+ s \(\d+ s measured", README)
