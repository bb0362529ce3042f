"""The model registry over HTTP: list, read (id | name | name@version), download the artifact, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import select

from app import registry
from app.api.deps import READ_AUTH, WRITE_AUTH, CacheDep, DbDep, PageDep, SessionDep, paginate
from app.db.models import Model
from app.schemas import MODEL_NAME_PATTERN, ModelPublic, Page

router = APIRouter(prefix="/models", tags=["models"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no model with this id, name or name@version"},
                                               410: {"description": "the model with this id was deleted"}}


def public(row: Model) -> ModelPublic:
    return ModelPublic.model_validate(row)


@router.get("", name="list_models", response_model=Page[ModelPublic], dependencies=READ_AUTH,
            summary="Model versions, newest first")
def list_models(s: SessionDep, page: PageDep,
                name: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN, description="only this name")] = None,
                ) -> Page[ModelPublic]:
    stmt = select(Model)
    if name is not None:
        stmt = stmt.where(Model.name == name)
    rows, next_cursor = paginate(s, stmt, Model, page)
    return Page[ModelPublic](items=[public(r) for r in rows], next_cursor=next_cursor)


@router.get("/{ref}", name="get_model", response_model=ModelPublic, dependencies=READ_AUTH, responses=NOT_FOUND,
            summary="One model version: `ref` is an id, a name (its latest ready version) or name@version")
def get_model(ref: str, s: SessionDep) -> ModelPublic:
    return public(registry.resolve(s, ref, field="ref"))


@router.get("/{ref}/artifact", name="get_model_artifact", dependencies=READ_AUTH, response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the model file (safetensors + JSON metadata); ETag = sha256"},
                       304: {"description": "If-None-Match matched the ETag"}, **NOT_FOUND},
            summary="Download the model file (load it with hinn_core.load_model)")
def get_model_artifact(ref: str, s: SessionDep,
                       if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None) -> Response:
    row = registry.resolve(s, ref, field="ref")
    etag = f'"{row.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate",
               "Content-Disposition": f'attachment; filename="{row.name}-v{row.version}.model"'}
    if if_none_match is not None and etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    blob = s.scalar(select(Model.artifact).where(Model.id == row.id))
    return Response(blob, media_type="application/octet-stream", headers=headers)


@router.delete("/{ref}", name="delete_model", status_code=204, dependencies=WRITE_AUTH, responses=NOT_FOUND,
               response_class=Response, summary="Delete one model version (a name deletes its latest version)")
def delete_model(ref: str, db: DbDep, cache: CacheDep) -> Response:
    with db.session(write=True) as s:
        row = registry.resolve(s, ref, field="ref")
        model_id = row.id
        registry.delete(s, row)
    cache.evict(model_id)
    return Response(status_code=204)
