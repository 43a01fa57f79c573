from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from apikeys.dependencies import RequireAdmin, RequireRead
from channels import service
from channels.schemas import ChannelCreate, ChannelRead, ChannelUpdate
from infra.base_url import BaseUrlPolicy
from infra.errors import AUTHENTICATED, error_responses
from infra.resources import AppResources, DbSession, Resources
from normalizer.platforms import Platform

router = APIRouter(prefix="/v1/channels", tags=["channels"])


def _policy(resources: Resources) -> BaseUrlPolicy:
    return BaseUrlPolicy.from_settings(resources.settings)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*AUTHENTICATED, 400, 409),
)
async def create_channel(
    body: Annotated[ChannelCreate, Body()],
    _: RequireAdmin,
    session: DbSession,
    resources: AppResources,
) -> ChannelRead:
    """Register a channel. Credentials are encrypted at rest and never returned."""
    channel = await service.create(
        session, resources.secret_box, body, base_url_policy=_policy(resources)
    )
    read = await service.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    return read


@router.get("", responses=error_responses(*AUTHENTICATED))
async def list_channels(
    _: RequireRead,
    session: DbSession,
    resources: AppResources,
    platform: Annotated[Platform | None, Query()] = None,
    enabled: Annotated[bool | None, Query()] = None,
) -> list[ChannelRead]:
    rows = await service.list_all(session, platform, enabled)
    states = await service.sending_states(session, [c.id for c in rows])
    return [
        service.to_read(c, resources.secret_box, resources.public_base_url, states.get(c.id))
        for c in rows
    ]


@router.get("/{channel_id}", responses=error_responses(*AUTHENTICATED, 404))
async def get_channel(
    channel_id: uuid.UUID, _: RequireRead, session: DbSession, resources: AppResources
) -> ChannelRead:
    channel = await service.get(session, channel_id)
    return await service.read(session, resources.secret_box, resources.public_base_url, channel)


@router.patch("/{channel_id}", responses=error_responses(*AUTHENTICATED, 400, 404))
async def update_channel(
    channel_id: uuid.UUID,
    body: ChannelUpdate,
    _: RequireAdmin,
    session: DbSession,
    resources: AppResources,
) -> ChannelRead:
    channel = await service.update(
        session, resources.secret_box, channel_id, body, base_url_policy=_policy(resources)
    )
    read = await service.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    return read


@router.post("/{channel_id}/disable", responses=error_responses(*AUTHENTICATED, 404))
async def disable_channel(
    channel_id: uuid.UUID, _: RequireAdmin, session: DbSession, resources: AppResources
) -> ChannelRead:
    """Stop accepting webhooks (404) and sends for this channel; its data is kept."""
    channel = await service.update(
        session, resources.secret_box, channel_id, ChannelUpdate(enabled=False)
    )
    read = await service.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    return read


@router.post("/{channel_id}/enable", responses=error_responses(*AUTHENTICATED, 404))
async def enable_channel(
    channel_id: uuid.UUID, _: RequireAdmin, session: DbSession, resources: AppResources
) -> ChannelRead:
    channel = await service.update(
        session, resources.secret_box, channel_id, ChannelUpdate(enabled=True)
    )
    read = await service.read(session, resources.secret_box, resources.public_base_url, channel)
    await session.commit()
    return read
