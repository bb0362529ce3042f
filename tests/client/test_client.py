"""hinn_client against a live server: a real uvicorn on a free loopback port, a temp SQLite file, one worker.

The README's scripted example (`README_EXAMPLE`) runs here verbatim except for the substitutions
in `README_TINY` (server URL, a tiny training budget), each checked to apply exactly once. Error
paths that need no server (auth header, non-problem bodies, corrupted downloads) use httpx's
MockTransport.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings
from hinn_client import Client, HinnAPIError, HinnError, JobFailed, Prediction
from hinn_core import model_from_bytes

ROOT = Path(__file__).resolve().parents[2]


def _readme_example() -> str:
    """The first ```python block of README.md that imports hinn_client: the one users copy."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.startswith("from hinn_client import Client")]
    assert found, "README.md has no hinn_client example"
    return found[0]


README_EXAMPLE = _readme_example()

README_TINY = {
    '"http://127.0.0.1:8000"': "URL",
    '"width": 32': '"width": 8',
    '"epochs": 100, "learning_rate": 0.01': '"epochs": 3, "learning_rate": 0.01, "lbfgs_iterations": 0',
    "n_trajectories=20": "n_trajectories=6",
}


class LiveServer:
    """uvicorn serving ``create_app(settings)`` in a thread, on a socket bound to a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        for _ in range(600):
            if self.server.started or not self.thread.is_alive():
                break
            self.thread.join(0.05)
        assert self.server.started, "the live server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("client")
    settings = Settings(database_url=f"sqlite:///{folder}/hinn.db", workers=1, poll_seconds=0.2, device="cpu",
                        lease_seconds=10.0)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def hinn(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, timeout=30) as client:
        yield client


def tiny(**overrides: Any) -> dict[str, Any]:
    return {"epochs": 3, "lbfgs_iterations": 0, **overrides}


def test_readme_example_runs_against_a_live_server(server: LiveServer, tmp_path: Path, monkeypatch, capsys) -> None:
    script = README_EXAMPLE
    assert len(script.splitlines()) <= 20
    for old, new in README_TINY.items():
        assert script.count(old) == 1, f"README_TINY no longer matches the example: {old!r}"
        script = script.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"URL": server.url}
    exec(compile(script, "README-example", "exec"), namespace)
    hinn, pred, job = namespace["hinn"], namespace["pred"], namespace["job"]
    assert job["status"] == "succeeded" and job["progress"]["epoch"] == 3
    assert pred.times.shape == (101,) and pred.q.shape == (2, 101, 1) and pred.p.shape == (2, 101, 1)
    assert pred.H is not None and pred.H.shape == (2, 101) and pred.H_true is not None
    np.testing.assert_allclose(pred.H_true[:, 0], [0.5, 0.25])  # spring: (q² + p²)/2 at the starts
    assert pred.model["name"] == "spring-hinn" and pred.model["id"] == job["model_id"]
    blob = (tmp_path / "spring-hinn.model").read_bytes()
    assert model_from_bytes(blob, expected_sha256=hinn.model("spring-hinn")["sha256"]).model.dof == 1
    assert "(101,) (2, 101, 1)" in capsys.readouterr().out
    hinn.close()


def test_datasets_from_arrays_and_files_round_trip(hinn: Client, tmp_path: Path) -> None:
    t = np.linspace(0.0, 1.0, 11)
    q = np.stack([np.cos(t), 0.5 * np.cos(t)])[..., None]  # (2, 11, 1)
    p = -np.stack([np.sin(t), 0.5 * np.sin(t)])[..., None]
    from_arrays = hinn.create_dataset("arrays", t=t, q=q, p=p)
    assert (from_arrays["n_trajectories"], from_arrays["dof"], from_arrays["n_points"]) == (2, 1, 22)
    assert from_arrays["name"] == "arrays" and from_arrays["source"]["format"] == "npz"  # sent as NPZ, not JSON
    ragged = hinn.create_dataset("ragged", trajectories=[{"t": t, "q": q[0], "p": p[0]},
                                                          {"t": [0.0, 0.1, 0.2], "q": [[1.0], [0.9], [0.8]],
                                                           "p": [[0.0], [-0.1], [-0.2]]}])
    assert (ragged["n_trajectories"], ragged["n_points"]) == (2, 14)
    with pytest.raises(ValueError, match="at least one trajectory"):
        hinn.create_dataset("none", trajectories=[])
    with pytest.raises(ValueError, match="trajectory 1 needs p"):
        hinn.create_dataset("half", trajectories=[{"t": t, "q": q[0], "p": p[0]}, {"t": t, "q": q[0]}])
    with pytest.raises(HinnAPIError) as info:  # the server's checks still name the array
        hinn.create_dataset("bad-shape", trajectories=[{"t": t, "q": q[0, :5], "p": p[0, :5]}])
    assert info.value.status == 422 and info.value.field == "q_0", info.value.problem
    path = tmp_path / "lab.npz"
    np.savez(path, t=t, q=q, p=p)
    uploaded = hinn.upload_dataset(path, name="lab")
    assert uploaded["name"] == "lab" and uploaded["n_points"] == 22 and uploaded["source"]["format"] == "npz"
    assert hinn.dataset(uploaded)["id"] == uploaded["id"]
    assert [d["id"] for d in hinn.datasets(name="lab")] == [uploaded["id"]]
    assert {s["name"] for s in hinn.systems()} >= {"spring", "pendulum"}


def test_http_errors_carry_the_problem(hinn: Client, tmp_path: Path) -> None:
    with pytest.raises(HinnAPIError) as err:
        hinn.create_dataset("bad", system="spring", dt=-1.0)
    assert err.value.status == 422 and err.value.field == "dt" and "dt" in err.value.detail
    with pytest.raises(HinnAPIError) as err:
        hinn.model("no-such-model")
    assert err.value.status == 404 and err.value.field == "ref" and err.value.problem["instance"].endswith("model")
    bad = tmp_path / "bad.txt"
    bad.write_text("nope")
    with pytest.raises(HinnAPIError) as err:
        hinn.upload_dataset(bad)
    assert err.value.status == 422 and err.value.field == "file"
    with pytest.raises(ValueError, match="not both"):
        hinn.create_dataset("x", system="spring", t=[0.0, 1.0], q=[[0.0], [1.0]], p=[[0.0], [1.0]])


def test_wait_raises_job_failed_with_the_jobs_error(hinn: Client) -> None:
    data = hinn.create_dataset("fail-data", system="spring", n_trajectories=5, t_end=1.0, dt=0.1)
    job = hinn.train("doomed", dataset_id=data, training=tiny(device="cuda"))  # no GPU here: fails at once
    with pytest.raises(JobFailed) as err:
        hinn.wait(job, progress=False, timeout=120, poll=0.2)
    assert err.value.status == "failed" and "cuda" in (err.value.error or "").lower()
    assert job["id"] in str(err.value) and err.value.job["model_id"] is None


def test_wait_times_out_then_cancel_ends_the_job(hinn: Client, capsys) -> None:
    data = hinn.create_dataset("long-data", system="spring", n_trajectories=5, t_end=1.0, dt=0.1)
    key = "client-test-long-job"
    job = hinn.train("long", dataset_id=data["id"], training=tiny(epochs=50_000, patience=0), idempotency_key=key)
    again = hinn.train("long", dataset_id=data["id"], training=tiny(epochs=50_000, patience=0), idempotency_key=key)
    assert again["id"] == job["id"]
    with pytest.raises(TimeoutError, match=job["id"]):
        hinn.wait(job, progress=True, timeout=1.0, poll=0.2)
    hinn.cancel(job)
    with pytest.raises(JobFailed) as err:
        hinn.wait(job, progress=False, timeout=60, poll=0.2)
    assert err.value.status == "cancelled" and err.value.error
    assert [j["id"] for j in hinn.jobs(status="cancelled")] == [job["id"]]
    assert "long" in capsys.readouterr().err  # the progress display named the job


# -- no server needed ----------------------------------------------------------------------------------
def _mock(handler: Any, **kwargs: Any) -> Client:
    return Client("http://hinn.test", transport=httpx.MockTransport(handler), **kwargs)


def test_the_api_key_is_sent_and_a_401_names_the_header() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"type": "https://hinn.dev/problems/unauthorized", "title": "Unauthorized",
                                         "status": 401, "detail": "Authorization: the API key is not valid",
                                         "instance": "/train", "errors": [{"field": "Authorization",
                                                                           "message": "the API key is not valid"}]},
                              headers={"content-type": "application/problem+json"})

    with _mock(handler, api_key="s3cret") as client, pytest.raises(HinnAPIError) as err:
        client.train("x", dataset_id="d")
    assert seen == ["Bearer s3cret"] and err.value.status == 401 and err.value.field == "Authorization"
    assert "POST /train -> 401" in str(err.value)


def test_a_non_problem_error_body_is_kept() -> None:
    with _mock(lambda r: httpx.Response(502, text="<html>bad gateway</html>")) as client:
        with pytest.raises(HinnAPIError) as err:
            client.systems()
    assert err.value.status == 502 and "bad gateway" in err.value.detail and err.value.field is None


def test_a_corrupted_download_saves_nothing(tmp_path: Path) -> None:
    blob = b"model bytes"

    def handler(request: httpx.Request) -> httpx.Response:
        etag = hashlib.sha256(blob).hexdigest() if request.url.path.startswith("/models/good") else "0" * 64
        return httpx.Response(200, content=blob, headers={"etag": f'"{etag}"'})

    with _mock(handler) as client:
        assert client.download("good", tmp_path / "good.model").read_bytes() == blob
        assert (tmp_path / "good.model").stat().st_mode & 0o777 == 0o644  # as `hinn train` writes, not mkstemp's 0600
        with pytest.raises(HinnError, match="corrupted"):
            client.download("bad", tmp_path / "bad.model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.model"]


def test_prediction_arrays_from_the_wire_format() -> None:
    body = {"model": {"id": "m", "name": "n", "version": 1}, "integrator": "leapfrog", "times": [0.0, 0.1],
            "trajectories": [{"q": [[1.0], [0.9]], "p": [[0.0], [0.1]], "H": [0.5, 0.5], "H_true": None}]}
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=body)

    with _mock(handler) as client:
        pred = client.predict({"id": "m"}, q0=[1.0], p0=[0.0], times=np.array([0.0, 0.1]))
    assert sent[0] == {"model": "m", "times": [0.0, 0.1], "initial_conditions": [{"q": [1.0], "p": [0.0]}]}
    assert pred.q.shape == (1, 2, 1) and pred.H is not None and pred.H.shape == (1, 2) and pred.H_true is None
    with _mock(handler) as client:
        client.predict("m", q0=[1.0], p0=[0.0], t_end=0.1, dt=0.1, integrator="rk45", rtol=1e-8, atol=1e-10)
    assert sent[1] == {"model": "m", "t_end": 0.1, "dt": 0.1, "integrator": "rk45", "rtol": 1e-8, "atol": 1e-10,
                       "initial_conditions": [{"q": [1.0], "p": [0.0]}]}
    assert pred.evaluations is None  # a fixed-step answer reports none
    body["trajectories"][0]["evaluations"] = 44
    with _mock(handler) as client:
        assert client.predict("m", q0=[1.0], p0=[0.0], t_end=0.1, dt=0.1).evaluations.tolist() == [44]


def test_prediction_is_requested_as_npz_and_read_without_pickles() -> None:
    q = np.array([[[1.0], [0.9]]])
    buf = io.BytesIO()
    np.savez(buf, times=np.array([0.0, 0.1]), q=q, p=-q, H=np.array([[0.5, 0.5]]),
             model=np.array(json.dumps({"id": "m", "name": "n", "version": 2})), integrator=np.array("rk4"))
    accepts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        accepts.append(request.headers["accept"])
        return httpx.Response(200, content=buf.getvalue(), headers={"content-type": "application/vnd.hinn.npz"})

    with _mock(handler) as client:
        pred = client.predict("m", q0=[1.0], p0=[0.0], t_end=0.1, dt=0.1)
    assert accepts[0].startswith("application/vnd.hinn.npz")
    assert pred.model["version"] == 2 and pred.integrator == "rk4" and pred.H_true is None
    np.testing.assert_array_equal(pred.q, q)
    np.testing.assert_array_equal(pred.p, -q)
    evil = io.BytesIO()
    np.savez(evil, times=np.array([0.0]), q=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        Prediction.from_npz(evil.getvalue())


def test_the_client_needs_neither_hinn_core_nor_torch() -> None:
    """hinn_client is for machines without the science stack: importing it loads neither."""
    code = ("import sys, hinn_client; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('hinn_core', 'torch', 'hessQuik', 'numba', 'app')); print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("bad", [{"q0": [float("nan")]}, {"p0": [float("inf")]}, {"dt": float("nan")},
                                 {"times": [0.0, float("inf")], "t_end": None, "dt": None}])
def test_predict_refuses_non_finite_numbers_before_sending(bad: dict) -> None:
    """JSON has no NaN: a clear ValueError naming the argument, and nothing sent."""
    sent: list[httpx.Request] = []
    args = {"q0": [1.0], "p0": [0.0], "t_end": 0.1, "dt": 0.1, **bad}
    with _mock(lambda request: sent.append(request) or httpx.Response(500)) as client:
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be finite"):
            client.predict("m", **args)
    assert sent == []
