"""The model registry: resolve ``id`` / ``name`` / ``name@version``, list, delete, load for serving.

Loaded models are cached by id (LRU); every load verifies the artifact's sha256 before parsing it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.base import db_now
from app.db.models import Job, Model
from app.errors import Gone, NotFound
from app.schemas import iso_utc
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
        gone = s.execute(select(Job.id, Job.name, Job.model_deleted_at)
                         .where(Job.model_id == ref, Job.model_deleted_at.is_not(None)).limit(1)).first()
        if gone is not None:
            job_id, name, when = gone
            raise Gone(f"model '{ref}' ('{name}', registered by job {job_id}) was deleted at {iso_utc(when)}",
                       field=field)
        raise NotFound(f"no model with id or name '{ref}'", field=field)
    return row


def delete(s: Session, row: Model) -> None:
    """Delete a model version; the job that registered it keeps its ``model_id`` and records when
    the model went (``model_deleted_at``), so the id answers 410 Gone rather than 404. One
    transaction: the caller's session commits both or neither."""
    s.execute(update(Job).where(Job.model_id == row.id).values(model_deleted_at=db_now()))
    s.delete(row)


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
