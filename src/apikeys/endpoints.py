from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from apikeys import service
from apikeys.dependencies import RequireAdmin
from apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from infra.errors import AUTHENTICATED, error_responses
from infra.resources import DbSession

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses=error_responses(*AUTHENTICATED, 400)
)
async def create_api_key(body: ApiKeyCreate, _: RequireAdmin, session: DbSession) -> ApiKeyCreated:
    """Issue a key. The key itself is in this response only; store it now."""
    row, key = await service.create_key(session, body.name, body.scopes)
    await session.commit()
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(row).model_dump(), "key": key})


@router.get("", responses=error_responses(*AUTHENTICATED))
async def list_api_keys(_: RequireAdmin, session: DbSession) -> list[ApiKeyRead]:
    return [ApiKeyRead.model_validate(r) for r in await service.list_keys(session)]


@router.delete("/{key_id}", responses=error_responses(*AUTHENTICATED, 404))
async def revoke_api_key(key_id: uuid.UUID, _: RequireAdmin, session: DbSession) -> ApiKeyRead:
    row = await service.revoke_key(session, key_id)
    await session.commit()
    return ApiKeyRead.model_validate(row)
