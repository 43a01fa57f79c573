"""``PUT|GET|DELETE /v1/channels/{id}/frequency-cap``: a channel's frequency cap.

Kept by the outbox (``outbox_frequency_caps``), which enforces it at intake (``outbox.policy``):
the conversation layer's settings table belongs to a package the outbox must not import, and
the cap is a delivery rule like the rate. A new cap applies to the next command; messages
already accepted stay accepted.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert

from apikeys.dependencies import RequireAdmin, RequireRead
from channels.errors import ChannelNotFound
from channels.models import Channel
from infra.errors import AUTHENTICATED, NotFound, error_responses
from infra.resources import DbSession
from outbox.models import FrequencyCap

__all__ = ["FrequencyCapSettings", "router"]

router = APIRouter(prefix="/v1", tags=["channels"])

MAX_PERIOD_SECONDS = 90 * 86400
"""Caps look back at most as far as the messages are kept (90 days at most)."""


class FrequencyCapSettings(BaseModel):
    """At most ``max_messages`` proactive (business-initiated) messages per contact per rolling
    ``period_seconds``; replies inside a customer-initiated conversation never count."""

    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(ge=1, le=10_000)
    period_seconds: int = Field(ge=1, le=MAX_PERIOD_SECONDS)


class FrequencyCapNotFound(NotFound):
    code = "frequency_cap_not_found"


async def _channel(session: DbSession, channel_id: uuid.UUID) -> None:
    if await session.get(Channel, channel_id) is None:
        raise ChannelNotFound("channel not found")


@router.get(
    "/channels/{channel_id}/frequency-cap",
    response_model=FrequencyCapSettings,
    summary="A channel's frequency cap",
    responses=error_responses(
        *AUTHENTICATED, descriptions={404: "Unknown channel, or no cap configured"}
    ),
)
async def get_cap(
    channel_id: uuid.UUID, session: DbSession, _: RequireRead
) -> FrequencyCapSettings:
    await _channel(session, channel_id)
    row = await session.get(FrequencyCap, channel_id)
    if row is None:
        raise FrequencyCapNotFound("this channel has no frequency cap")
    return FrequencyCapSettings(max_messages=row.max_messages, period_seconds=row.period_seconds)


@router.put(
    "/channels/{channel_id}/frequency-cap",
    response_model=FrequencyCapSettings,
    summary="Set a channel's frequency cap",
    responses=error_responses(*AUTHENTICATED, descriptions={404: "Unknown channel"}),
)
async def put_cap(
    channel_id: uuid.UUID, body: FrequencyCapSettings, session: DbSession, _: RequireAdmin
) -> FrequencyCapSettings:
    await _channel(session, channel_id)
    stmt = pg_insert(FrequencyCap).values(channel_id=channel_id, **body.model_dump())
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FrequencyCap.channel_id],
            set_={**body.model_dump(), "updated_at": stmt.excluded.updated_at},
        )
    )
    await session.commit()
    return body


@router.delete(
    "/channels/{channel_id}/frequency-cap",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a channel's frequency cap (idempotent)",
    responses=error_responses(*AUTHENTICATED, descriptions={404: "Unknown channel"}),
)
async def delete_cap(channel_id: uuid.UUID, session: DbSession, _: RequireAdmin) -> Response:
    await _channel(session, channel_id)
    row = await session.get(FrequencyCap, channel_id)
    if row is not None:
        await session.delete(row)
        await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
