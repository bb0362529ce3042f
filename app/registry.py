"""The model registry: resolve ``id`` / ``name`` / ``name@version``, list, delete, load for serving.

Loaded models are cached by id (LRU); every load verifies the artifact's sha256 before parsing it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Model
from app.errors import NotFound
from hinn_core.artifacts import LoadedModel, model_from_bytes


def resolve(s: Session, ref: str, field: str = "model") -> Model:
    """``ref`` is a model id, a name (newest ready version) or ``name@version``."""
    row = s.get(Model, ref)
    if row is not None:
        return row
    name, sep, version = ref.rpartition("@")
    if sep:
        if not version.isdigit():
            raise NotFound(f"'{ref}': the version after '@' must be a positive integer", field=field)
        row = s.scalar(select(Model).where(Model.name == name, Model.version == int(version),
                                           Model.status == "ready"))
        if row is None:
            raise NotFound(f"no model '{name}' with version {version}", field=field)
        return row
    row = s.scalar(select(Model).where(Model.name == ref, Model.status == "ready")
                   .order_by(Model.version.desc()).limit(1))
    if row is None:
        raise NotFound(f"no model with id or name '{ref}'", field=field)
    return row


class ModelCache:
    """Thread-safe LRU of deserialised models, keyed by model id."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, s: Session, row: Model) -> LoadedModel:
        with self._lock:
            hit = self._items.get(row.id)
            if hit is not None:
                self._items.move_to_end(row.id)
                return hit
        blob = s.scalar(select(Model.artifact).where(Model.id == row.id))
        assert blob is not None
        loaded = model_from_bytes(blob, expected_sha256=row.sha256)
        with self._lock:
            self._items[row.id] = loaded
            self._items.move_to_end(row.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._items.pop(model_id, None)
