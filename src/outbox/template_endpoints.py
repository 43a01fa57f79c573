"""``GET /v1/channels/{id}/templates``: a WhatsApp channel's template registry
(``outbox.templates``).

The whole registry in one answer, sorted by name and language: Meta caps a WABA at a few
hundred templates (thousands for the largest accounts), which fits one response, and a
client checking a send wants all of them at once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from apikeys.dependencies import RequireRead
from channels.models import Channel
from infra.errors import AUTHENTICATED, NotFound, error_responses
from infra.resources import DbSession
from outbox.models import MessageTemplate, TemplateSync

router = APIRouter(prefix="/v1", tags=["channels"])


class TemplateRead(BaseModel):
    name: str
    language: str
    status: str = Field(description="Graph's status (APPROVED, PAUSED, DISABLED, REJECTED, …)")
    category: str | None
    components: list[Any] = Field(description="Graph's components, as listed")
    updated_at: datetime = Field(description="Last listed by a sync or changed by a webhook")


class TemplateRegistry(BaseModel):
    channel_id: uuid.UUID
    business_account_id: str | None
    synced: bool = Field(
        description="True when a full listing for the channel's current WABA id is stored: "
        "only then are template sends checked against the registry"
    )
    synced_at: datetime | None
    templates: list[TemplateRead]


@router.get(
    "/channels/{channel_id}/templates",
    response_model=TemplateRegistry,
    summary="The channel's WhatsApp message templates (synced from Graph)",
    responses=error_responses(*AUTHENTICATED, 404, descriptions={404: "No such channel"}),
)
async def list_templates(
    channel_id: uuid.UUID, session: DbSession, _: RequireRead
) -> TemplateRegistry:
    channel = await session.get(Channel, channel_id)
    if channel is None:
        raise NotFound("channel not found")
    sync = await session.get(TemplateSync, channel_id)
    current = sync is not None and sync.business_account_id == channel.business_account_id
    rows = await session.scalars(
        select(MessageTemplate)
        .where(MessageTemplate.channel_id == channel_id)
        .order_by(MessageTemplate.name, MessageTemplate.language)
    )
    return TemplateRegistry(
        channel_id=channel_id,
        business_account_id=channel.business_account_id,
        synced=current,
        synced_at=sync.synced_at if sync is not None else None,
        templates=[
            TemplateRead(
                name=r.name,
                language=r.language,
                status=r.status,
                category=r.category,
                components=r.components,
                updated_at=r.updated_at,
            )
            for r in rows
        ],
    )
