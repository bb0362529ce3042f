"""`GET /systems`: the built-in Hamiltonian systems datasets can be generated from."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import READ_AUTH
from app.schemas import SystemPublic
from hinn_core import SYSTEMS, make_system

router = APIRouter(tags=["systems"], dependencies=READ_AUTH)


@router.get("/systems", name="list_systems", response_model=list[SystemPublic],
            summary="Built-in systems: name, dof, default parameters and the Hamiltonian")
def list_systems() -> list[dict[str, Any]]:
    return [make_system(name).describe() for name in SYSTEMS]
