"""Model files: safetensors weights with the JSON metadata document in the same file.

One file per model (``*.model``, a plain safetensors file): the tensors are the module's
``state_dict`` (including normalisation buffers and the energy offset), and the safetensors
header's ``__metadata__`` holds ``{"hinn": "<json>"}`` with the architecture, integrator, dims,
normalisation, energy offset, training config, metrics and data lineage. Loading parses JSON
and raw tensors only — nothing is ever unpickled — and the round trip is bit-exact.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hinn_core.atomic import write_bytes_atomically
from hinn_core.errors import ArtifactError, ConfigError
from hinn_core.models import DynamicsModel, ModelSpec

FORMAT = "hinn-model"
FORMAT_VERSION = 1
_MAX_HEADER = 16 * 1024 * 1024


@dataclass
class LoadedModel:
    model: DynamicsModel
    metadata: dict[str, Any]
    sha256: str

    @property
    def name(self) -> str | None:
        return self.metadata.get("name")


def build_metadata(
    model: DynamicsModel,
    *,
    name: str | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document stored beside the weights."""
    f = model.field
    out_scale = f.out_scale.detach().double().cpu()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "spec": model.spec.to_dict(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "normalisation": {
            "shift": f.shift.detach().double().cpu().tolist(),
            "scale": f.scale.detach().double().cpu().tolist(),
            "out_scale": out_scale.tolist(),
        },
        "energy_offset": float(f.energy_offset),
        "energy_offset_rule": (
            "least-squares fit to the true H over the training states when the system is known, "
            "else zero mean of H_theta over the training states"
        ),
        "training": training or {},
        "metrics": metrics or {},
        "lineage": {
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            **(lineage or {}),
        },
    }


def model_to_bytes(model: DynamicsModel, metadata: dict[str, Any]) -> bytes:
    """Serialise weights + metadata to one safetensors blob."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = _non_finite(metadata)
    if bad is not None:  # JSON has no NaN/inf: say which figure, not just that one exists
        raise ValueError(f"model metadata {bad[0]} = {bad[1]} is not finite (JSON has no NaN or inf; use None)")
    doc = json.dumps(metadata, sort_keys=True, allow_nan=False, default=_json_default)
    return st_save(tensors, metadata={"hinn": doc})


def _non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The first non-finite float in a JSON-like document, as (dotted path, value)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (path or "(root)", obj)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def read_metadata(data: bytes) -> dict[str, Any]:
    """The metadata document of a model blob, read from the header alone (no tensor decoding)."""
    if len(data) < 8:
        raise ArtifactError("not a hinn model file: too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or n > _MAX_HEADER or 8 + n > len(data):
        raise ArtifactError("not a hinn model file: invalid safetensors header length")
    try:
        header = json.loads(data[8 : 8 + n])
        doc = json.loads(header["__metadata__"]["hinn"])
    except (ValueError, KeyError, TypeError):
        raise ArtifactError("not a hinn model file: no 'hinn' metadata in the safetensors header") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtifactError(f"not a hinn model file: format is not '{FORMAT}'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"model file format version {doc.get('format_version')} is not supported (expected {FORMAT_VERSION})"
        )
    return doc


def model_from_bytes(data: bytes, *, device: str | torch.device = "cpu",
                     expected_sha256: str | None = None) -> LoadedModel:
    """Rebuild the model from a blob; verifies ``expected_sha256`` first when given."""
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ArtifactError(f"artifact checksum mismatch: expected sha256 {expected_sha256}, got {digest}")
    meta = read_metadata(data)
    try:
        spec = ModelSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"model file has an invalid 'spec': {exc}") from None
    try:
        tensors = st_load(data)
    except SafetensorError as exc:
        raise ArtifactError(f"model file's tensors are unreadable: {exc}") from None
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(meta.get("dtype", ""))
    if dtype is None:
        raise ArtifactError(f"model file has unsupported dtype {meta.get('dtype')!r}")
    model = DynamicsModel(spec).to(dtype=dtype)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"model file tensors do not match its spec: missing {missing}, unexpected {extra}")
    for key, value in tensors.items():
        if value.shape != expected[key].shape or value.dtype != expected[key].dtype:
            raise ArtifactError(
                f"tensor '{key}' has shape {tuple(value.shape)}/{value.dtype}, "
                f"expected {tuple(expected[key].shape)}/{expected[key].dtype}"
            )
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return LoadedModel(model.to(device), meta, digest)


def save_model(model: DynamicsModel, path: str | Path, metadata: dict[str, Any]) -> str:
    """Write the model file atomically (temp file + rename); returns its sha256."""
    data = model_to_bytes(model, metadata)
    write_bytes_atomically(path, data)
    return hashlib.sha256(data).hexdigest()


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file '{path}' does not exist")
    return model_from_bytes(path.read_bytes(), device=device)
