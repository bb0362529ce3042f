"""`POST /train` validation, resolution and idempotency; job listing, cancel, events and plots (no worker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from api_helpers import TestClient, assert_problem, newest_first, spring_spec, tiny_training, url

from app.schemas import TrainingOptions
from hinn_core import DEFAULT_INTEGRATOR, ModelSpec, TrainConfig


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    return client.post(url(client, "create_dataset"), json=spring_spec()).json()["id"]


def train(client: TestClient, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(url(client, "train"), json=body, headers=headers)


def n_jobs(client: TestClient) -> int:
    return len(client.get(url(client, "list_jobs"), params={"limit": 200}).json()["items"])


def test_training_defaults_are_hinn_cores() -> None:
    assert TrainingOptions().model_dump() == TrainConfig().to_dict()


def test_minimal_request_is_resolved_in_full(client: TestClient, dataset_id: str) -> None:
    r = train(client, {"name": "spring-hinn", "dataset_id": dataset_id})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == url(client, "get_job", job_id=job["id"])
    req = job["request"]
    assert req["training"] == TrainConfig().to_dict()
    # the API's defaults are the core's (the science benchmark's recipe)
    assert req["integrator"] == DEFAULT_INTEGRATOR["hinn-separable"] == "leapfrog"
    assert req["model"] == {"architecture": "hinn-separable", "width": 32, "depth": 2, "activation": "antitanh",
                            "resnet_step": 0.5}
    spec = ModelSpec()
    assert req["model"] == {k: getattr(spec, k) for k in req["model"]}
    # the activation left open resolves per architecture, like the integrator
    general = train(client, {"name": "ns", "dataset_id": dataset_id, "model": {"architecture": "hinn"}}).json()
    assert general["request"]["model"]["activation"] == "tanh"
    assert general["request"]["integrator"] == "implicit_midpoint"
    assert req["dataset_id"] == dataset_id and req["test_fraction"] == 0.2
    assert job["status"] == "queued" and job["progress"] is None and job["attempts"] == 0
    assert client.get(r.headers["location"]).json() == job


def test_inline_dataset_is_stored_with_the_job(client: TestClient) -> None:
    r = train(client, {"name": "m", "dataset": spring_spec(name="inline"), "integrator": "rk4",
                       "training": tiny_training()})
    assert r.status_code == 202, r.text
    job = r.json()
    ds = client.get(url(client, "get_dataset", dataset_id=job["dataset_id"])).json()
    assert ds["name"] == "inline" and ds["system"] == "spring"
    assert job["request"]["dataset_id"] == ds["id"] and job["request"]["integrator"] == "rk4"
    assert job["request"]["dataset_spec"]["system"] == "spring"


@pytest.mark.parametrize(("overrides", "status", "field"), [
    ({"training": {"epochs": 0}}, 422, "training.epochs"),
    ({"training": {"epochs": 51}}, 422, "training.epochs"),  # over max_epochs
    ({"training": {"epoch": 5}}, 422, "training.epoch"),
    ({"training": {"device": "tpu"}}, 422, "training.device"),
    ({"training": {"learning_rate": -1}}, 422, "training.learning_rate"),
    ({"training": {"seed": 2**70}}, 422, "training.seed"),  # beyond torch's 64-bit seeds (was a failed job)
    ({"training": {"epochs": "3"}}, 422, "training.epochs"),  # no strings as numbers
    ({"model": {"architecture": "transformer"}}, 422, "model.architecture"),
    ({"model": {"width": 0}}, 422, "model.width"),
    ({"integrator": "verlet"}, 422, "integrator"),
    ({"name": "bad@name"}, 422, "name"),
    ({"name": ""}, 422, "name"),
    ({"test_fraction": 1.0}, 422, "test_fraction"),
    ({"dataset_id": None}, 422, "dataset_id"),  # neither
    ({"dataset": spring_spec()}, 422, "dataset_id"),  # both
    ({"dataset_id": "0" * 32}, 404, "dataset_id"),
    ({"dataset_id": None, "dataset": spring_spec(system="nope")}, 422, "dataset.system"),
    ({"dataset_id": None, "dataset": spring_spec(dt=5.0)}, 422, "dataset.dt"),
    ({"dataset_id": None, "dataset": spring_spec(n_trajectories=10_001)}, 413, "dataset.n_trajectories"),
    # options hinn_core refuses together: refused before anything is stored, not a job that can only fail
    ({"dataset_id": None, "dataset": spring_spec(), "model": {"architecture": "hnn"},
      "training": tiny_training(initial_state="learned", lbfgs_iterations=2)}, 422, "training.initial_state"),
    ({"training": tiny_training(initial_state="learned", lbfgs_iterations=0)}, 422, "training.initial_state"),
])
def test_train_rejects_bad_input(build: Callable[..., TestClient], overrides: dict[str, Any], status: int,
                                 field: str) -> None:
    client = build(max_epochs=50)
    ds_id = client.post(url(client, "create_dataset"), json=spring_spec()).json()["id"]
    base = {"name": "m", "dataset_id": ds_id, "training": tiny_training()}
    body = {k: v for k, v in {**base, **overrides}.items() if v is not None}
    assert_problem(train(client, body), status, field)
    assert n_jobs(client) == 0
    assert len(client.get(url(client, "list_datasets")).json()["items"]) == 1  # no inline dataset was kept


def test_idempotency_key(client: TestClient, dataset_id: str) -> None:
    body = {"name": "m", "dataset_id": dataset_id, "training": tiny_training()}
    first = train(client, body, key="abc-1")
    again = train(client, body, key="abc-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert n_jobs(client) == 1
    other = dict(body, training=tiny_training(epochs=2))
    assert_problem(train(client, other, key="abc-1"), 422, "Idempotency-Key")
    assert train(client, other, key="abc-2").json()["id"] != first.json()["id"]
    assert_problem(train(client, body, key="k" * 201), 422, "Idempotency-Key")
    assert n_jobs(client) == 2


def test_idempotency_with_an_inline_dataset(client: TestClient) -> None:
    body = {"name": "m", "dataset": spring_spec(), "training": tiny_training()}
    first, again = train(client, body, key="k1"), train(client, body, key="k1")
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get(url(client, "list_datasets")).json()["items"]) == 1  # simulated once
    changed = dict(body, dataset=spring_spec(seed=9))
    assert_problem(train(client, changed, key="k1"), 422, "Idempotency-Key")


def test_cancel_queued_then_terminal(client: TestClient, dataset_id: str) -> None:
    job = train(client, {"name": "m", "dataset_id": dataset_id}).json()
    r = client.post(url(client, "cancel_job", job_id=job["id"]))
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["cancel_requested"] is True
    assert client.get(url(client, "get_job", job_id=job["id"])).json()["status"] == "cancelled"
    problem = assert_problem(client.post(url(client, "cancel_job", job_id=job["id"])), 409, "job_id")
    assert "cancelled" in problem["detail"]
    assert_problem(client.post(url(client, "cancel_job", job_id="nope")), 404, "job_id")


def test_events_of_a_terminal_job(client: TestClient, dataset_id: str) -> None:
    job = train(client, {"name": "m", "dataset_id": dataset_id}).json()
    client.post(url(client, "cancel_job", job_id=job["id"]))
    r = client.get(url(client, "job_events", job_id=job["id"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    assert [b.splitlines()[0] for b in blocks] == ["event: progress", "event: end"]
    assert '"status":"cancelled"' in blocks[0]
    assert_problem(client.get(url(client, "job_events", job_id="nope")), 404, "job_id")


def test_list_jobs_filter_and_plot(client: TestClient, dataset_id: str) -> None:
    ids = [train(client, {"name": f"m{i}", "dataset_id": dataset_id}).json()["id"] for i in range(3)]
    client.post(url(client, "cancel_job", job_id=ids[1]))
    queued = client.get(url(client, "list_jobs"), params={"status": "queued"}).json()["items"]
    assert sorted(j["id"] for j in queued) == sorted([ids[0], ids[2]]) and newest_first(queued)
    page = client.get(url(client, "list_jobs"), params={"limit": 2}).json()
    rest = client.get(url(client, "list_jobs"), params={"cursor": page["next_cursor"]}).json()
    listed = page["items"] + rest["items"]
    assert sorted(j["id"] for j in listed) == sorted(ids) and newest_first(listed) and rest["next_cursor"] is None
    assert_problem(client.get(url(client, "list_jobs"), params={"status": "sleeping"}), 422, "status")
    r = client.get(url(client, "job_plot", job_id=ids[0]))  # no epochs yet: still a PNG
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert_problem(client.get(url(client, "job_plot", job_id="nope")), 404, "job_id")
    assert_problem(client.get(url(client, "get_job", job_id="nope")), 404, "job_id")


def test_predict_unknown_model_is_404(client: TestClient) -> None:
    body = {"model": "ghost", "initial_conditions": [{"q": [1.0], "p": [0.0]}], "t_end": 1.0, "dt": 0.1}
    assert_problem(client.post(url(client, "predict"), json=body), 404, "model")
    assert_problem(client.post(url(client, "predict_plot"), json=body), 404, "model")


def test_events_follow_a_live_job_until_it_ends(client: TestClient, dataset_id: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.api.jobs.EVENTS_POLL_SECONDS", 0.05)
    job = train(client, {"name": "m", "dataset_id": dataset_id}).json()
    events: list[str] = []
    with client.stream("GET", url(client, "job_events", job_id=job["id"])) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
                if len(events) == 1:  # the queued state arrived: now change it
                    assert client.post(url(client, "cancel_job", job_id=job["id"])).status_code == 202
    assert events == ["progress", "progress", "end"]
