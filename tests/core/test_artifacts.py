"""Model files: bit-exact round trip, metadata, and refusal of anything that is not ours."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from hinn_core import ArtifactError, build_metadata, load_model, model_from_bytes, model_to_bytes, predict, save_model
from hinn_core.artifacts import read_metadata


def _blob(result) -> bytes:
    meta = build_metadata(result.model, name="spring-test", training={"config": result.config.to_dict()},
                          metrics={"rollout_mse": 1.5e-6}, lineage={"dataset": {"system": "spring"}})
    return model_to_bytes(result.model, meta)


def test_round_trip_is_bit_exact(trained_spring, tmp_path) -> None:
    path = tmp_path / "spring.model"
    meta = build_metadata(trained_spring.model, name="spring-test")
    digest = save_model(trained_spring.model, path, meta)
    loaded = load_model(path)
    assert loaded.sha256 == digest == hashlib.sha256(path.read_bytes()).hexdigest()
    original = trained_spring.model.state_dict()
    restored = loaded.model.state_dict()
    assert set(original) == set(restored)
    assert all(torch.equal(original[k], restored[k]) and original[k].dtype == restored[k].dtype for k in original)
    times = np.linspace(0.0, 5.0, 51)
    a = predict(trained_spring.model, [0.7], [0.1], times)
    b = predict(loaded.model, [0.7], [0.1], times)
    assert np.array_equal(a.q, b.q) and np.array_equal(a.p, b.p) and np.array_equal(a.H, b.H)
    # saving the loaded model again gives the same tensors and metadata
    assert model_to_bytes(loaded.model, loaded.metadata) == path.read_bytes()


def test_metadata_holds_architecture_normalisation_offset_and_lineage(trained_spring) -> None:
    meta = read_metadata(_blob(trained_spring))
    assert meta["format"] == "hinn-model" and meta["format_version"] == 1
    assert meta["spec"]["architecture"] == "hinn-separable" and meta["spec"]["integrator"] == "leapfrog"
    assert meta["spec"]["dof"] == 1 and meta["dtype"] == "float64"
    f = trained_spring.model.field
    assert meta["normalisation"]["shift"] == f.shift.tolist()
    assert meta["energy_offset"] == float(f.energy_offset)
    assert meta["metrics"]["rollout_mse"] == 1.5e-6
    assert meta["lineage"]["dataset"]["system"] == "spring" and "torch_version" in meta["lineage"]


def test_loading_never_unpickles(trained_spring, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = model_from_bytes(_blob(trained_spring))
    assert loaded.model.spec.architecture == "hinn-separable"


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle payload executed')",))


def test_a_pickle_is_refused_without_executing_it(tmp_path) -> None:
    payload = pickle.dumps({"weights": _Boom()})
    with pytest.raises(ArtifactError):
        model_from_bytes(payload)
    path = tmp_path / "evil.model"
    path.write_bytes(payload)
    with pytest.raises(ArtifactError):
        load_model(path)


def test_tampered_bytes_fail_the_checksum(trained_spring) -> None:
    blob = bytearray(_blob(trained_spring))
    digest = hashlib.sha256(blob).hexdigest()
    blob[-1] ^= 0x01
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        model_from_bytes(bytes(blob), expected_sha256=digest)


def test_a_safetensors_file_without_hinn_metadata_is_refused() -> None:
    with pytest.raises(ArtifactError, match="no 'hinn' metadata"):
        model_from_bytes(st_save({"x": torch.zeros(2)}))


def test_tensors_that_do_not_match_the_spec_are_refused(trained_spring) -> None:
    meta = json.loads(json.dumps(build_metadata(trained_spring.model)))
    meta["spec"]["width"] = 17
    with pytest.raises(ArtifactError, match="shape"):
        model_from_bytes(model_to_bytes(trained_spring.model, meta))


def test_unknown_format_version_is_refused(trained_spring) -> None:
    meta = build_metadata(trained_spring.model)
    meta["format_version"] = 99
    with pytest.raises(ArtifactError, match="version 99"):
        model_from_bytes(model_to_bytes(trained_spring.model, meta))


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nope.model")


def test_non_finite_metadata_is_refused_by_name(trained_spring) -> None:
    """JSON has no NaN: the error names the figure (before, json's bare 'Out of range float values')."""
    history = [{"val_loss": 1.0}, {"val_loss": np.nan}]
    meta = build_metadata(trained_spring.model, name="m", training={"history": history})
    with pytest.raises(ValueError, match=r"training\.history\[1\]\.val_loss = nan is not finite"):
        model_to_bytes(trained_spring.model, meta)
    meta["training"]["history"][1]["val_loss"] = None  # what training records when nothing is held out
    assert model_from_bytes(model_to_bytes(trained_spring.model, meta)).metadata["training"]["history"][1] == {
        "val_loss": None}
