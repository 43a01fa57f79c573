"""``POST /v1/channels/{id}/pause`` and ``/resume``: hold or restart sending on a channel
(``outbox.control``). Webhooks of a paused channel are still accepted; its queued messages
wait (``not_after`` still applies) and go out in order on resume."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from apikeys.dependencies import RequireAdmin
from channels import service as channels
from channels.schemas import ChannelRead
from infra.errors import AUTHENTICATED, error_responses
from infra.logging import get_logger
from infra.resources import AppResources, DbSession
from outbox import control

router = APIRouter(prefix="/v1/channels", tags=["channels"])
log = get_logger(__name__)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    reason: str = Field(
        default="paused",
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Shown as the channel's `sending_reason`",
    )


@router.post(
    "/{channel_id}/pause",
    summary="Pause sending (webhooks are still accepted)",
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
async def pause_channel(
    channel_id: uuid.UUID,
    _: RequireAdmin,
    session: DbSession,
    resources: AppResources,
    body: Annotated[PauseRequest | None, Body()] = None,
) -> ChannelRead:
    """Hold sending: queued messages wait; nothing is failed. Idempotent. Pausing a suspended
    channel turns the suspension into a pause (lifted only by ``/resume``)."""
    channel = await channels.get(session, channel_id)
    await control.pause(session, channel_id, (body or PauseRequest()).reason)
    read = await channels.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    log.info("outbox.channel_paused", channel_id=str(channel_id))
    return read


@router.post(
    "/{channel_id}/resume",
    summary="Resume sending (lifts a pause or a suspension)",
    responses=error_responses(*AUTHENTICATED, 400, 404),
)
async def resume_channel(
    channel_id: uuid.UUID, _: RequireAdmin, session: DbSession, resources: AppResources
) -> ChannelRead:
    """The backlog goes out in order. Lifting a suspension emits ``channel.resumed``.
    Idempotent: resuming an active channel changes nothing."""
    channel = await channels.get(session, channel_id)
    topic = resources.settings.topic("outbound.events.v1")
    if await control.resume(session, channel_id, channel.platform, topic):
        log.info("outbox.channel_resumed", channel_id=str(channel_id))
    read = await channels.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    return read
