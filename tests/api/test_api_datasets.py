"""Datasets over HTTP: generate, upload (JSON body and files), limits, pagination, persistence."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from api_helpers import TestClient, assert_problem, make_settings, newest_first, spring_spec, url

from app.main import create_app
from hinn_core import generate_dataset
from hinn_core.dataio import dataset_to_csv_text, dataset_to_json, dataset_to_npz_bytes
from tests.npz_bombs import deflate_npz

GOOD_CSV = "trajectory,t,q0,p0\n0,0.0,1.0,0.0\n0,0.1,0.99,-0.1\n1,0.0,0.5,0.5\n1,0.2,0.6,0.4\n"


def n_datasets(client: TestClient) -> int:
    return len(client.get(url(client, "list_datasets"), params={"limit": 200}).json()["items"])


def test_generate_then_read_back(client: TestClient) -> None:
    r = client.post(url(client, "create_dataset"), json=spring_spec(dt_jitter=0.3, noise_std=0.01, seed=3))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert r.headers["location"] == url(client, "get_dataset", dataset_id=ds["id"])
    assert ds["source"]["kind"] == "generated" and ds["source"]["seed"] == 3
    assert ds["time_stats"]["uniform"] is False and ds["created_at"].endswith("Z")
    assert client.get(r.headers["location"]).json() == ds
    data = client.get(url(client, "get_dataset_trajectories", dataset_id=ds["id"])).json()
    assert data["dataset_id"] == ds["id"] and len(data["trajectories"]) == 5
    assert set(data["trajectories"][0]) == {"t", "q", "p"}


def test_upload_json_body(client: TestClient) -> None:
    body = {"name": "lab-run-7", "trajectories": generate_dataset("pendulum", 2, 0.5, 0.1).to_lists()}
    r = client.post(url(client, "create_dataset"), json=body)
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "lab-run-7" and ds["n_trajectories"] == 2 and ds["system"] is None
    assert ds["source"]["kind"] == "upload"
    back = client.get(url(client, "get_dataset_trajectories", dataset_id=ds["id"])).json()["trajectories"]
    assert back == body["trajectories"]


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".json"])
def test_upload_files(client: TestClient, suffix: str) -> None:
    ds = generate_dataset("spring", 3, 0.5, 0.1, seed=2)
    content = {".csv": lambda: dataset_to_csv_text(ds).encode(), ".npz": lambda: dataset_to_npz_bytes(ds),
               ".json": lambda: json.dumps(dataset_to_json(ds)).encode()}[suffix]()
    r = client.post(url(client, "upload_dataset"), files={"file": (f"run{suffix}", content)},
                    data={"name": f"file{suffix}"})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["name"] == f"file{suffix}" and out["n_trajectories"] == 3 and out["n_points"] == 18
    assert r.headers["location"] == url(client, "get_dataset", dataset_id=out["id"])
    # a file's own claim to come from a built-in system is kept, but is not trusted as lineage
    assert out["system"] is None and out["source"]["format"] == suffix[1:]


def test_upload_name_defaults_to_file_stem(client: TestClient) -> None:
    r = client.post(url(client, "upload_dataset"), files={"file": ("lab-42.csv", GOOD_CSV.encode())})
    assert r.status_code == 201 and r.json()["name"] == "lab-42" and r.json()["n_trajectories"] == 2


@pytest.mark.parametrize(("filename", "content", "field"), [
    ("bad.csv", GOOD_CSV.replace("0.99", "abc"), "row 3, column q0"),
    ("bad.csv", GOOD_CSV.replace("0,0.1,", "0,-0.1,"), "row 3, column t"),
    ("bad.csv", "trajectory,t,q0,x0\n", "column p0"),
    ("bad.json", "{not json", "file"),
    ("bad.json", json.dumps({"trajectories": [{"t": [0, 1], "q": [[1], [2]], "p": [[0]]}]}), "trajectories[0].p"),
    ("bad.npz", "not a zip", "file"),
    ("bad.txt", GOOD_CSV, "file"),
])
def test_bad_upload_names_the_place_and_stores_nothing(client: TestClient, filename: str, content: str,
                                                       field: str) -> None:
    before = n_datasets(client)
    r = client.post(url(client, "upload_dataset"), files={"file": (filename, content.encode())})
    assert_problem(r, 422, field)
    assert n_datasets(client) == before


def test_upload_without_file_is_422(client: TestClient) -> None:
    assert_problem(client.post(url(client, "upload_dataset"), data={"name": "x"}), 422, "file")


@pytest.mark.parametrize(("body", "field"), [
    (spring_spec(system="springg"), "system"),
    (spring_spec(parameters={"stiffness": 2.0}), "parameters.stiffness"),
    (spring_spec(dt=2.0), "dt"),  # longer than t_end
    (spring_spec(dt=0), "dt"),
    (spring_spec(dt_jitter=1.0), "dt_jitter"),
    (spring_spec(n_trajectories=0), "n_trajectories"),
    (spring_spec(seed=-1), "seed"),
    (spring_spec(colour="red"), "colour"),
    ({"name": "x", "trajectories": []}, "trajectories"),
    ({"name": "x", "trajectories": [{"t": [0.0, 0.0], "q": [[1.0], [1.0]], "p": [[0.0], [0.0]]}]},
     "trajectories[0].t"),
    ({"name": "x", "trajectories": [{"t": [0.0, 1.0], "q": [[1.0], [1.0, 2.0]], "p": [[0.0], [0.0]]}]},
     "trajectories[0].q"),
    ({"name": "x", "trajectories": [{"t": [0.0, 1.0], "q": [[1.0], [1.0]]}]}, "trajectories[0].p"),
    ([1, 2], "body"),
    (spring_spec(noise_std=1e308), "noise_std"),  # noisy observations overflow: the knob, not the data
    (spring_spec(seed=2**70), "seed"),
    (spring_spec(n_trajectories="3"), "n_trajectories"),
])
def test_create_rejects_bad_input(client: TestClient, body: object, field: str) -> None:
    assert_problem(client.post(url(client, "create_dataset"), json=body), 422, field)
    assert n_datasets(client) == 0


def test_non_finite_literals_are_rejected(client: TestClient) -> None:
    raw = '{"name": "x", "trajectories": [{"t": [0.0, 1.0], "q": [[1.0], [Infinity]], "p": [[0.0], [0.0]]}]}'
    r = client.post(url(client, "create_dataset"), content=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "trajectories[0].q[1][0]")
    raw = json.dumps(spring_spec()).replace('"t_end": 1.0', '"t_end": NaN')
    r = client.post(url(client, "create_dataset"), content=raw, headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "t_end")


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post(url(client, "create_dataset"), content="{", headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "body")


def test_unknown_dataset_is_404(client: TestClient) -> None:
    assert_problem(client.get(url(client, "get_dataset", dataset_id="nope")), 404, "dataset_id")
    assert_problem(client.get(url(client, "get_dataset_trajectories", dataset_id="nope")), 404, "dataset_id")


def test_trajectory_limits_are_413(build: Callable[..., TestClient]) -> None:
    client = build(max_trajectories=3, max_dataset_points=100)
    traj = {"t": [0.0, 0.1], "q": [[1.0], [1.0]], "p": [[0.0], [0.0]]}
    body = assert_problem(client.post(url(client, "create_dataset"), json={"name": "x", "trajectories": [traj] * 4}),
                          413, "trajectories")
    assert "limit of 3" in body["detail"] and "HINN_MAX_TRAJECTORIES" in body["detail"]
    body = assert_problem(client.post(url(client, "create_dataset"), json=spring_spec(n_trajectories=4)),
                          413, "n_trajectories")
    assert "limit of 3" in body["detail"]
    body = assert_problem(client.post(url(client, "create_dataset"), json=spring_spec(n_trajectories=3, dt=0.01)),
                          413, "dt")
    assert "limit of 100" in body["detail"] and "HINN_MAX_DATASET_POINTS" in body["detail"]
    # a step count too large for an int's float formatting (found by the fuzzer: was a 500)
    huge = spring_spec(n_trajectories=3, t_end=1.7e308, dt=1.0)
    body = assert_problem(client.post(url(client, "create_dataset"), json=huge), 413, "dt")
    assert "HINN_MAX_DATASET_POINTS" in body["detail"]
    r = client.post(url(client, "upload_dataset"), files={"file": ("many.csv", dataset_to_csv_text(
        generate_dataset("spring", 4, 0.3, 0.1)).encode())})
    assert_problem(r, 413, "trajectories")
    r = client.post(url(client, "upload_dataset"), files={"file": ("long.csv", dataset_to_csv_text(
        generate_dataset("spring", 2, 5.9, 0.1)).encode())})  # 2 × 60 rows: reading stops at row 101
    body = assert_problem(r, 413, "row 102")
    assert "limit of 100" in body["detail"] and "HINN_MAX_DATASET_POINTS" in body["detail"]
    assert n_datasets(client) == 0


def test_npz_declaring_too_much_is_413_before_it_is_decompressed(build: Callable[..., TestClient]) -> None:
    client = build(max_dataset_points=1000, max_body_bytes=64 * 1024)  # NPZ arrays: ≤ 16 × 64 KiB = 1 MiB
    n = 1_000_000
    bomb = deflate_npz({"t": (n,), "q": (1, n, 1), "p": (1, n, 1)})  # 24 MB of zeros, deflated
    assert len(bomb) < 32 * 1024
    tracemalloc.start()
    try:
        r = client.post(url(client, "upload_dataset"), files={"file": ("bomb.npz", bomb)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    body = assert_problem(r, 413, "t")
    assert "1000000 time points" in body["detail"] and "limit of 1000" in body["detail"]
    assert "HINN_MAX_DATASET_POINTS" in body["detail"]
    assert peak < 8 * 2**20  # the 24 MB declared were never allocated
    wide = deflate_npz({"t": (2,), "q": (1, 2, 100_000), "p": (1, 2, 100_000)})  # 2 points, 3.2 MB
    body = assert_problem(client.post(url(client, "upload_dataset"), files={"file": ("wide.npz", wide)}), 413, "q")
    assert "limit of 1048576" in body["detail"] and "HINN_MAX_BODY_BYTES" in body["detail"]
    assert n_datasets(client) == 0
    ok = dataset_to_npz_bytes(generate_dataset("spring", 3, 0.5, 0.1, seed=2))
    r = client.post(url(client, "upload_dataset"), files={"file": ("ok.npz", ok)})
    assert r.status_code == 201 and r.json()["n_points"] == 18, r.text


def test_json_has_its_own_lower_limit_and_points_to_npz(build: Callable[..., TestClient]) -> None:
    """Parsed JSON takes ~10× its text in memory, so JSON bodies and .json files stop at
    HINN_MAX_JSON_BODY_BYTES while the same data as NPZ or CSV may use all of HINN_MAX_BODY_BYTES."""
    client = build(max_body_bytes=64 * 1024, max_json_body_bytes=4096)
    ds = generate_dataset("spring", 2, 4.0, 0.05, seed=3)  # 2 × 81 points
    doc = dataset_to_json(ds)
    body = {"name": "inline", "trajectories": doc["trajectories"]}
    text = json.dumps(body).encode()
    assert 4096 < len(text) < 64 * 1024
    problem = assert_problem(client.post(url(client, "create_dataset"), json=body), 413, "body")
    assert "limit of 4096 bytes for JSON" in problem["detail"] and "HINN_MAX_JSON_BODY_BYTES" in problem["detail"]
    assert "POST /datasets/upload" in problem["detail"]
    for ctype in ("application/json; charset=utf-8", "Application/JSON"):
        r = client.post(url(client, "create_dataset"), content=text, headers={"Content-Type": ctype})
        assert_problem(r, 413, "body")

    def chunks():  # no Content-Length: the JSON limit holds on the streamed bytes too
        for i in range(0, len(text), 512):
            yield text[i:i + 512]

    r = client.post(url(client, "create_dataset"), content=chunks(), headers={"Content-Type": "application/json"})
    assert "HINN_MAX_JSON_BODY_BYTES" in assert_problem(r, 413, "body")["detail"]
    as_file = json.dumps(doc).encode()
    r = client.post(url(client, "upload_dataset"), files={"file": ("run.json", as_file, "application/json")})
    problem = assert_problem(r, 413, "file")
    assert f"({len(as_file)} bytes)" in problem["detail"] and "HINN_MAX_JSON_BODY_BYTES" in problem["detail"]
    assert n_datasets(client) == 0
    for name, data in (("run.npz", dataset_to_npz_bytes(ds)), ("run.csv", dataset_to_csv_text(ds).encode())):
        r = client.post(url(client, "upload_dataset"), files={"file": (name, data)})  # the same data, not JSON
        assert r.status_code == 201 and r.json()["n_points"] == 162, r.text
    small = {"name": "small", "trajectories": [{k: v[:5] for k, v in tr.items()} for tr in doc["trajectories"]]}
    r = client.post(url(client, "create_dataset"), json=small)
    assert r.status_code == 201 and r.json()["n_points"] == 10, r.text
    assert n_datasets(client) == 3


@pytest.mark.parametrize(("ctype", "is_json"), [(b"application/json", True), (b"application/json; charset=utf-8", True),
                                                 (b"APPLICATION/JSON", True), (b"application/merge-patch+json", True),
                                                 (b"multipart/form-data; boundary=x", False), (b"text/csv", False),
                                                 (b"", False), (b"application/jsonl", False)])
def test_json_media_types(ctype: bytes, is_json: bool) -> None:
    from app.main import is_json_media_type

    assert is_json_media_type(ctype) is is_json


def test_body_over_the_limit_is_413(build: Callable[..., TestClient]) -> None:
    client = build(max_body_bytes=2048)
    body = {"name": "big", "trajectories": [{"t": [0.1 * k for k in range(200)], "q": [[1.0]] * 200,
                                             "p": [[0.0]] * 200}]}
    problem = assert_problem(client.post(url(client, "create_dataset"), json=body), 413, "body")
    assert "2048" in problem["detail"] and "HINN_MAX_BODY_BYTES" in problem["detail"]

    def chunks():  # no Content-Length: the limit is enforced on the streamed bytes
        data = json.dumps(body).encode()
        for i in range(0, len(data), 512):
            yield data[i:i + 512]

    r = client.post(url(client, "create_dataset"), content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(r, 413, "body")
    big = io.BytesIO(b"trajectory,t,q0,p0\n" + b"0,0.0,1.0,0.0\n" * 400)
    assert_problem(client.post(url(client, "upload_dataset"), files={"file": ("big.csv", big)}), 413, "body")
    assert n_datasets(client) == 0
    small = client.post(url(client, "create_dataset"), json=spring_spec())
    assert small.status_code == 201


def test_pagination_with_cursor(client: TestClient) -> None:
    ids = [client.post(url(client, "create_dataset"), json=spring_spec(n_trajectories=1, seed=i)).json()["id"]
           for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(url(client, "list_datasets"), params=params).json()
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and sorted(d["id"] for d in seen) == sorted(ids)  # each exactly once
    assert newest_first(seen) and seen[0]["created_at"] >= seen[-1]["created_at"]
    filtered = client.get(url(client, "list_datasets"), params={"name": "nope"}).json()
    assert filtered == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(("params", "field"), [
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "aGVsbG8"}, "cursor"),  # base64 of "hello": decodes, but is no position
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
])
def test_bad_page_parameters(client: TestClient, params: dict[str, object], field: str) -> None:
    assert_problem(client.get(url(client, "list_datasets"), params=params), 422, field)


def test_datasets_survive_a_restart(database_url: str) -> None:
    settings = make_settings(database_url)
    with TestClient(create_app(settings)) as first:
        ds = first.post(url(first, "create_dataset"), json=spring_spec()).json()
    with TestClient(create_app(settings)) as second:
        assert second.get(url(second, "get_dataset", dataset_id=ds["id"])).json() == ds
        stored = second.get(url(second, "get_dataset_trajectories", dataset_id=ds["id"])).json()
        assert np.asarray(stored["trajectories"][0]["t"]).shape == (11,)
