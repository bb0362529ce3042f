"""The walk-through: dataset → train (one real worker run) → model lookup → predict → plots → artifact.

One tiny job is trained once for the module (the worker's child process takes a few seconds).
The limits are set low so that the bound checks of /predict can be exercised on the same model.
The last test deletes the model; keep it last.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from api_helpers import TestClient, assert_problem, make_settings, tiny_training

from app.main import create_app
from app.worker import Worker
from hinn_core import model_from_bytes
from tests.service_helpers import postgres_schema_url

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LIMITS = {"max_initial_conditions": 4, "max_steps": 500, "max_state_steps": 1000}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "sqlite":
        yield from _env(make_settings(tmp_path_factory.mktemp("workflow"), **LIMITS))
    else:
        with postgres_schema_url() as db_url:
            yield from _env(make_settings(db_url, **LIMITS))


def _env(settings: Any) -> Any:
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.post(app.url_path_for("create_dataset"),
                        json={"name": "spring-small", "system": "spring", "n_trajectories": 6, "t_end": 1.0,
                              "dt": 0.1, "seed": 1})
        assert r.status_code == 201, r.text
        dataset = r.json()
        train = client.post(app.url_path_for("train"), json={
            "name": "spring-hinn", "dataset_id": dataset["id"],
            "model": {"architecture": "hinn-separable", "width": 8}, "training": tiny_training()})
        assert train.status_code == 202, train.text
        done = Worker(app.state.db, settings).run(max_jobs=1, exit_when_idle=True)
        job = client.get(train.headers["location"]).json()
        assert done == 1 and job["status"] == "succeeded", f"worker ran {done} job(s); the job: {job}"
        yield SimpleNamespace(app=app, client=client, dataset=dataset, train=train, job_id=train.json()["id"])


def path(env: Any, name: str, **params: Any) -> str:
    return env.app.url_path_for(name, **params)


def predict_body(**overrides: Any) -> dict[str, Any]:
    return {"model": "spring-hinn", "initial_conditions": [{"q": [1.0], "p": [0.0]}], "t_end": 2.0, "dt": 0.1,
            **overrides}


def test_dataset_created_with_location(env: Any) -> None:
    ds = env.dataset
    assert ds["system"] == "spring" and ds["dof"] == 1 and ds["n_trajectories"] == 6 and ds["n_points"] == 66
    r = env.client.get(path(env, "get_dataset", dataset_id=ds["id"]))
    assert r.status_code == 200 and r.json() == ds


def test_train_is_accepted_with_location_and_resolved_request(env: Any) -> None:
    r = env.train
    job = r.json()
    assert r.headers["location"] == path(env, "get_job", job_id=job["id"])
    assert job["status"] == "queued" and job["dataset_id"] == env.dataset["id"]
    request = job["request"]
    assert request["integrator"] == "leapfrog"  # hinn-separable's default, stored concretely
    assert request["model"] == {"architecture": "hinn-separable", "width": 8, "depth": 2, "activation": "antitanh",
                                "resnet_step": 0.5}
    assert request["training"]["epochs"] == 3 and request["training"]["learning_rate"] == 0.01


def test_job_succeeds_and_registers_a_model(env: Any) -> None:
    job = env.client.get(path(env, "get_job", job_id=env.job_id)).json()
    assert job["status"] == "succeeded", job
    assert job["model_id"] and job["attempts"] == 1 and job["finished_at"]
    assert job["progress"]["epochs"] >= 3 and job["progress"]["train_loss"] is not None
    listed = env.client.get(path(env, "list_jobs"), params={"status": "succeeded"}).json()
    assert [j["id"] for j in listed["items"]] == [env.job_id]


def test_model_by_name_version_and_id(env: Any) -> None:
    job = env.client.get(path(env, "get_job", job_id=env.job_id)).json()
    by_name = env.client.get(path(env, "get_model", ref="spring-hinn")).json()
    by_version = env.client.get(path(env, "get_model", ref="spring-hinn@1")).json()
    by_id = env.client.get(path(env, "get_model", ref=job["model_id"])).json()
    assert by_name == by_version == by_id
    assert by_id["version"] == 1 and by_id["job_id"] == env.job_id and by_id["dataset_id"] == env.dataset["id"]
    assert by_id["status"] == "ready" and by_id["metrics"] and by_id["config"]["model"]["width"] == 8
    listed = env.client.get(path(env, "list_models"), params={"name": "spring-hinn"}).json()
    assert [m["id"] for m in listed["items"]] == [by_id["id"]] and listed["next_cursor"] is None
    assert_problem(env.client.get(path(env, "get_model", ref="spring-hinn@2")), 404, "ref")


def test_predict_uniform_steps_with_energies(env: Any) -> None:
    r = env.client.post(path(env, "predict"), json=predict_body())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"]["name"] == "spring-hinn" and out["model"]["version"] == 1
    assert out["integrator"] == "leapfrog"
    assert len(out["times"]) == 21 and out["times"][0] == 0.0 and out["times"][-1] == 2.0
    (tr,) = out["trajectories"]
    assert len(tr["q"]) == len(tr["p"]) == len(tr["H"]) == len(tr["H_true"]) == 21
    assert tr["q"][0] == [1.0] and tr["p"][0] == [0.0]
    assert tr["H_true"][0] == pytest.approx(0.5)  # spring, m = k = 1: H = (p² + q²)/2


def test_predict_variable_times_and_integrator_override(env: Any) -> None:
    times = [0.0, 0.05, 0.15, 0.3, 0.5]
    body = predict_body(t_end=None, dt=None, times=times, integrator="rk4",
                        initial_conditions=[{"q": [1.0], "p": [0.0]}, {"q": [0.2], "p": [0.5]}])
    r = env.client.post(path(env, "predict"), json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["times"] == times and out["integrator"] == "rk4"
    assert len(out["trajectories"]) == 2 and all(len(t["q"]) == 5 and t["H_true"] for t in out["trajectories"])


@pytest.mark.parametrize("accept", ["application/vnd.hinn.npz", "text/html, application/x-npy;q=0.9"])
def test_predict_npz_response_carries_the_json_numbers(env: Any, accept: str) -> None:
    body = predict_body(initial_conditions=[{"q": [1.0], "p": [0.0]}, {"q": [0.2], "p": [0.5]}])
    ref = env.client.post(path(env, "predict"), json=body).json()
    r = env.client.post(path(env, "predict"), json=body, headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.hinn.npz"
    assert r.headers["vary"] == "Accept"
    arrays = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert json.loads(str(arrays["model"])) == ref["model"] and str(arrays["integrator"]) == ref["integrator"]
    np.testing.assert_array_equal(arrays["times"], ref["times"])
    for key in ("q", "p", "H", "H_true"):
        assert arrays[key].dtype == np.float64
        np.testing.assert_array_equal(arrays[key], [t[key] for t in ref["trajectories"]])
    half = env.client.post(path(env, "predict"), json=body, headers={"Accept": "application/x-npy; dtype=float32"})
    small = np.load(io.BytesIO(half.content), allow_pickle=False)
    assert small["q"].dtype == np.float32 and len(half.content) < len(r.content)
    np.testing.assert_allclose(small["q"], arrays["q"], rtol=1e-6)


@pytest.mark.parametrize(("accept", "expected"), [
    ("*/*", "application/json"),
    ("application/*", "application/json"),
    ("application/json;q=0.5, application/vnd.hinn.npz;q=0.4", "application/json"),
    ("application/json;q=0.4, application/vnd.hinn.npz", "application/vnd.hinn.npz"),
    ("application/vnd.hinn.npz;q=0, */*", "application/json"),
    ("application/xml", None),
    ("application/json;q=0", None),
    ("text/html, application/xml;q=0.9", None),
])
def test_predict_negotiates_the_accept_header(env: Any, accept: str, expected: str | None) -> None:
    """q-values decide; NPZ only when named; nothing acceptable is a 406 naming Accept (before any rollout)."""
    r = env.client.post(path(env, "predict"), json=predict_body(), headers={"Accept": accept})
    if expected is None:
        problem = assert_problem(r, 406, "Accept")
        assert "application/json" in problem["detail"] and problem["title"] == "Not acceptable"
    else:
        assert r.status_code == 200 and r.headers["content-type"] == expected


def test_predict_reports_server_timing_and_metrics(env: Any) -> None:
    def state_steps() -> float:
        text = env.client.get("/metrics").text
        return float(re.search(r"^hinn_predict_state_steps_total (\S+)$", text, re.M).group(1))

    before = state_steps()
    r = env.client.post(path(env, "predict"), json=predict_body(initial_conditions=[{"q": [1.0], "p": [0.0]}] * 3))
    assert r.status_code == 200
    timing = dict(re.findall(r"(\w+);dur=([0-9.]+)", r.headers["server-timing"]))
    assert set(timing) == {"rollout", "encode"} and float(timing["rollout"]) > 0
    assert state_steps() - before == 3 * 20  # 3 initial conditions × 20 steps


def test_predict_adaptive_rk45(env: Any) -> None:
    """integrator "rk45": adaptive steps under rtol/atol, outputs on the requested grid; it agrees
    with a fine fixed-step RK4 rollout of the same model at the shared times."""
    r = env.client.post(path(env, "predict"), json=predict_body(integrator="rk45", rtol=1e-10, atol=1e-10))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["integrator"] == "rk45" and len(body["times"]) == 21
    traj = body["trajectories"][0]
    assert len(traj["q"]) == len(traj["H"]) == 21 and traj["q"][0] == [1.0]
    fine = env.client.post(path(env, "predict"), json=predict_body(integrator="rk4", dt=0.01)).json()
    ref = np.array(fine["trajectories"][0]["q"])[::10]
    assert np.abs(np.array(traj["q"]) - ref).max() < 1e-7
    H = np.array(traj["H"])
    assert np.abs(H - H[0]).max() < 1e-7  # the learned H, conserved to the tolerance's scale
    loose = env.client.post(path(env, "predict"), json=predict_body(integrator="rk45", rtol=1e-3, atol=1e-3)).json()
    loose_q = np.array(loose["trajectories"][0]["q"])
    assert 0 < np.abs(loose_q - np.array(traj["q"])).max() < 1e-2  # other steps, still close
    assert 0 < loose["trajectories"][0]["evaluations"] < traj["evaluations"]  # looser: fewer evaluations
    assert "evaluations" not in fine["trajectories"][0]  # fixed-step rollouts have none to report
    npz = env.client.post(path(env, "predict"), json=predict_body(integrator="rk45", rtol=1e-10, atol=1e-10),
                          headers={"Accept": "application/vnd.hinn.npz"})
    with np.load(io.BytesIO(npz.content), allow_pickle=False) as z:
        assert z["evaluations"].tolist() == [traj["evaluations"]] and z["evaluations"].dtype == np.int64
        np.testing.assert_array_equal(z["q"][0], np.array(traj["q"]))


def test_plots_are_png(env: Any) -> None:
    r = env.client.post(path(env, "predict_plot"), json=predict_body())
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)
    r = env.client.get(path(env, "job_plot", job_id=env.job_id))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)


def test_artifact_download_loads(env: Any) -> None:
    model = env.client.get(path(env, "get_model", ref="spring-hinn")).json()
    r = env.client.get(path(env, "get_model_artifact", ref="spring-hinn@1"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["etag"].strip('"') == model["sha256"] == hashlib.sha256(r.content).hexdigest()
    assert 'filename="spring-hinn-v1.model"' in r.headers["content-disposition"]
    loaded = model_from_bytes(r.content, expected_sha256=model["sha256"])
    assert loaded.model.dof == 1 and loaded.metadata["name"] == "spring-hinn"
    again = env.client.get(path(env, "get_model_artifact", ref=model["id"]),
                           headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_job_events_stream_ends_for_a_finished_job(env: Any) -> None:
    r = env.client.get(path(env, "job_events", job_id=env.job_id))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
    assert events == ["progress", "end"]
    assert '"status":"succeeded"' in r.text


@pytest.mark.parametrize(("overrides", "status", "field"), [
    ({"initial_conditions": [{"q": [1.0], "p": [0.0]}, {"q": [1.0, 2.0], "p": [0.0]}]}, 422,
     "initial_conditions[1].q"),
    ({"initial_conditions": [{"q": [1.0], "p": [0.0, 1.0]}]}, 422, "initial_conditions[0].p"),
    ({"times": [0.0, 0.2, 0.1], "t_end": None, "dt": None}, 422, "times"),
    ({"times": [0.0, 0.1]}, 422, "times"),  # both ways at once
    ({"t_end": None, "dt": None}, 422, "t_end"),  # neither
    ({"dt": None}, 422, "dt"),
    ({"t_end": None}, 422, "t_end"),
    ({"dt": -0.1}, 422, "dt"),
    ({"initial_conditions": [{"q": [0.0], "p": [0.0]}] * 5}, 413, "initial_conditions"),
    ({"t_end": 100.0, "dt": 0.1}, 413, "dt"),  # 1000 steps > max_steps 500
    ({"t_end": 1e300, "dt": 1e-300}, 413, "dt"),
    ({"times": [0.01 * k for k in range(502)], "t_end": None, "dt": None}, 413, "times"),
    ({"initial_conditions": [{"q": [0.0], "p": [0.0]}] * 4, "t_end": 40.0, "dt": 0.1}, 413,
     "initial_conditions"),  # 4 × 400 state-steps > max_state_steps 1000
    ({"model": "no-such-model"}, 404, "model"),
    ({"model": "spring-hinn@7"}, 404, "model"),
    ({"integrator": "verlet"}, 422, "integrator"),
    ({"rtol": 1e-6}, 422, "rtol"),  # the model's own integrator is fixed-step
    ({"integrator": "rk4", "atol": 1e-6}, 422, "atol"),
    ({"integrator": "rk45", "rtol": 1e-20}, 422, "rtol"),  # below 100 ulp of float64
    ({"integrator": "rk45", "atol": 0.0}, 422, "atol"),
    ({"extra": 1}, 422, "extra"),
    ({"initial_conditions": [{"q": [0.5], "p": [0.0]}, {"q": [1e300], "p": [0.0]}]}, 422,
     "initial_conditions[1]"),  # H overflows at the start: the start is at fault, not dt
    ({"integrator": "rk45", "t_end": 1e6, "dt": 2e5}, 422, "t_end"),  # beyond rk45's step budget (≤ max_steps)
    ({"initial_conditions": [{"q": [True], "p": [0.0]}]}, 422, "initial_conditions[0].q[0]"),  # no bool as 1.0
    ({"dt": "0.1"}, 422, "dt"),  # nor strings as numbers
])
def test_predict_rejects_bad_input(env: Any, overrides: dict[str, Any], status: int, field: str) -> None:
    body = {k: v for k, v in predict_body(**overrides).items() if v is not None}  # None: leave the key out
    r = env.client.post(path(env, "predict"), json=body)
    problem = assert_problem(r, status, field)
    if status == 413:
        assert "limit" in problem["detail"] and "HINN_MAX_" in problem["detail"]


def test_predict_rejects_nan_literal(env: Any) -> None:
    raw = '{"model": "spring-hinn", "initial_conditions": [{"q": [NaN], "p": [0.0]}], "t_end": 1.0, "dt": 0.1}'
    r = env.client.post(path(env, "predict"), content=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "initial_conditions[0].q", prefix=True)
    raw = raw.replace("[NaN]", "[1.0]").replace('"dt": 0.1', '"dt": Infinity')
    assert_problem(env.client.post(path(env, "predict"), content=raw, headers={"Content-Type": "application/json"}),
                   422, "dt")


def test_datasets_jobs_and_models_survive_an_api_restart(env: Any) -> None:
    """A second API process on the same database sees everything the first one stored."""
    with TestClient(create_app(env.app.state.settings)) as again:
        job = again.get(again.app.url_path_for("get_job", job_id=env.job_id)).json()
        assert job["status"] == "succeeded" and job["model_id"]
        model = again.get(again.app.url_path_for("get_model", ref="spring-hinn@1")).json()
        assert model["id"] == job["model_id"] and model["dataset_id"] == env.dataset["id"]
        ds = again.get(again.app.url_path_for("get_dataset", dataset_id=env.dataset["id"])).json()
        assert ds == env.dataset
        r = again.post(again.app.url_path_for("predict"), json=predict_body())
        assert r.status_code == 200 and r.json()["model"]["id"] == model["id"]


def test_delete_model_evicts_it(env: Any) -> None:
    """Last in the module: the model is gone afterwards. Its id answers 410 Gone (it existed, and
    retrying is pointless) and says when it went; the job keeps the id and records the deletion."""
    assert env.client.post(path(env, "predict"), json=predict_body()).status_code == 200  # cached now
    job = env.client.get(path(env, "get_job", job_id=env.job_id)).json()
    model_id = job["model_id"]
    assert model_id and job["model_deleted_at"] is None
    r = env.client.delete(path(env, "delete_model", ref="spring-hinn@1"))
    assert r.status_code == 204 and not r.content
    assert_problem(env.client.get(path(env, "get_model", ref="spring-hinn")), 404, "ref")
    assert_problem(env.client.post(path(env, "predict"), json=predict_body()), 404, "model")
    assert_problem(env.client.delete(path(env, "delete_model", ref="spring-hinn@1")), 404, "ref")

    after = env.client.get(path(env, "get_job", job_id=env.job_id)).json()
    assert after["model_id"] == model_id and after["status"] == "succeeded"
    deleted_at = after["model_deleted_at"]
    assert deleted_at.endswith("Z") and deleted_at >= job["finished_at"]
    listed = env.client.get(path(env, "list_jobs")).json()["items"]
    assert [j["model_deleted_at"] for j in listed if j["id"] == env.job_id] == [deleted_at]
    for response, field in ((env.client.get(path(env, "get_model", ref=model_id)), "ref"),
                            (env.client.get(path(env, "get_model_artifact", ref=model_id)), "ref"),
                            (env.client.delete(path(env, "delete_model", ref=model_id)), "ref"),
                            (env.client.post(path(env, "predict"), json=predict_body(model=model_id)), "model")):
        problem = assert_problem(response, 410, field)
        assert problem["title"] == "Gone" and problem["type"].endswith("/gone")
        assert model_id in problem["detail"] and env.job_id in problem["detail"]
        assert f"deleted at {deleted_at}" in problem["detail"]
    # the deletion touched nothing else: the dataset and the job are still there
    assert env.client.get(path(env, "get_dataset", dataset_id=env.dataset["id"])).json() == env.dataset
