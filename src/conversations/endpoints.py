"""The conversations API: conversations and their timelines (scope ``read``), per-channel
settings, auto-reply and opt-outs (scope ``admin``; listing opt-outs: ``read``).

Writes commit explicitly before the response (never in a ``yield`` dependency's teardown).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy import select

from apikeys.dependencies import RequireAdmin, RequireRead
from channels.models import Channel
from conversations import repository, service
from conversations.errors import (
    AutoReplyNotFound,
    ChannelNotFound,
    ConversationNotFound,
    InvalidContact,
)
from conversations.keys import contact_key
from conversations.models import ChannelSettings, Conversation, OptOut
from conversations.schemas import (
    AutoReplyConfig,
    ConversationPage,
    ConversationRead,
    ConversationSettings,
    ConversationState,
    OptOutPage,
    OptOutRead,
    OptOutWrite,
    TimelineMessage,
    TimelinePage,
)
from infra.resources import AppResources, DbSession

router = APIRouter(prefix="/v1", tags=["conversations"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[
    str | None, Query(max_length=2000, description="`next_cursor` of the previous page")
]
ContactId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        description="The contact as a send command's `to` names it (WhatsApp: digits compare)",
    ),
]


async def _channel(session: DbSession, channel_id: uuid.UUID) -> Channel:
    channel = await session.get(Channel, channel_id)
    if channel is None:
        raise ChannelNotFound("channel not found")
    return channel


async def _settings_row(session: DbSession, channel_id: uuid.UUID) -> ChannelSettings:
    row = await session.get(ChannelSettings, channel_id, with_for_update=True)
    if row is None:
        row = ChannelSettings(channel_id=channel_id)
        session.add(row)
    return row


def _read(conversation: Conversation, opted_out: bool) -> ConversationRead:
    return ConversationRead(
        conversation_id=conversation.conversation_id,
        channel_id=conversation.channel_id,
        platform=conversation.platform,
        contact_id=conversation.contact_key,
        recipient=conversation.recipient,
        contact=conversation.contact,
        state=repository.state_of(conversation),
        last_inbound_at=conversation.last_inbound_at,
        last_outbound_at=conversation.last_outbound_at,
        last_activity_at=conversation.last_activity_at,
        unanswered_since=conversation.unanswered_since,
        opted_out=opted_out,
    )


@router.get("/conversations", response_model=ConversationPage, summary="List conversations")
async def list_conversations(
    session: DbSession,
    _: RequireRead,
    channel_id: uuid.UUID | None = None,
    state: Annotated[
        ConversationState | None,
        Query(
            description="open: a customer message waits for a reply; unanswered: it waited "
            "longer than the channel's unanswered_after_seconds; answered: nothing waits"
        ),
    ] = None,
    active_after: Annotated[datetime | None, Query(description="last activity at or after")] = None,
    active_before: Annotated[datetime | None, Query(description="last activity before")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ConversationPage:
    """Most recently active first. Conversations move to the front when something happens
    in them, so a paged walk over a busy set may see one twice."""
    rows, next_cursor = await repository.list_conversations(
        session,
        channel_id=channel_id,
        state=state,
        active_after=active_after,
        active_before=active_before,
        cursor=cursor,
        limit=limit,
    )
    return ConversationPage(items=[_read(c, o) for c, o in rows], next_cursor=next_cursor)


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationRead,
    summary="One conversation",
    responses={404: {"description": "Unknown conversation"}},
)
async def get_conversation(
    conversation_id: Annotated[str, Path(max_length=600)], session: DbSession, _: RequireRead
) -> ConversationRead:
    if "\x00" in conversation_id:
        raise ConversationNotFound("conversation not found")
    row = (
        await session.execute(
            select(Conversation, repository.opted_out_clause()).where(
                Conversation.conversation_id == conversation_id
            )
        )
    ).first()
    if row is None:
        raise ConversationNotFound("conversation not found")
    return _read(row[0], bool(row[1]))


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=TimelinePage,
    summary="A conversation's messages, inbound and outbound, in time order",
    responses={404: {"description": "Unknown conversation"}},
)
async def list_messages(
    conversation_id: Annotated[str, Path(max_length=600)],
    session: DbSession,
    _: RequireRead,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> TimelinePage:
    """Oldest first. Outbound entries carry the outbox message id and its latest state (their
    text is not in the lifecycle events: read it with `GET /v1/messages/{id}`)."""
    if "\x00" in conversation_id or await session.get(Conversation, conversation_id) is None:
        raise ConversationNotFound("conversation not found")
    rows, next_cursor = await repository.list_timeline(
        session, conversation_id, cursor=cursor, limit=limit
    )
    items = [
        TimelineMessage(
            direction=r.direction,
            message_id=r.message_id,
            platform_message_id=r.platform_message_id,
            kind=r.kind,
            text=r.text,
            media=r.media,
            state=r.state,
            automatic=r.automatic,
            metadata=r.metadata_,
            error=r.error,
            occurred_at=r.occurred_at,
        )
        for r in rows
    ]
    return TimelinePage(items=items, next_cursor=next_cursor)


# ---- per-channel settings -----------------------------------------------------------------


@router.get("/channels/{channel_id}/conversation-settings", response_model=ConversationSettings)
async def get_settings(
    channel_id: uuid.UUID, session: DbSession, _: RequireAdmin
) -> ConversationSettings:
    await _channel(session, channel_id)
    row = await session.get(ChannelSettings, channel_id)
    return ConversationSettings(
        unanswered_after_seconds=row.unanswered_after_seconds if row else None,
        opt_out_keywords=row.opt_out_keywords if row else None,
        opt_in_keywords=row.opt_in_keywords if row else None,
    )


@router.put("/channels/{channel_id}/conversation-settings", response_model=ConversationSettings)
async def put_settings(
    channel_id: uuid.UUID, body: ConversationSettings, session: DbSession, _: RequireAdmin
) -> ConversationSettings:
    """Replace the channel's conversation settings (a field left out goes back to its
    default). A new threshold applies to conversations already waiting."""
    await _channel(session, channel_id)
    row = await _settings_row(session, channel_id)
    row.unanswered_after_seconds = body.unanswered_after_seconds
    row.opt_out_keywords = body.opt_out_keywords
    row.opt_in_keywords = body.opt_in_keywords
    await session.commit()
    return body


@router.get(
    "/channels/{channel_id}/auto-reply",
    response_model=AutoReplyConfig,
    responses={404: {"description": "Unknown channel, or no auto-reply configured"}},
)
async def get_auto_reply(
    channel_id: uuid.UUID, session: DbSession, _: RequireAdmin
) -> AutoReplyConfig:
    await _channel(session, channel_id)
    row = await session.get(ChannelSettings, channel_id)
    if row is None or row.auto_reply is None:
        raise AutoReplyNotFound("this channel has no auto-reply")
    return AutoReplyConfig.model_validate(row.auto_reply)


@router.put("/channels/{channel_id}/auto-reply", response_model=AutoReplyConfig)
async def put_auto_reply(
    channel_id: uuid.UUID, body: AutoReplyConfig, session: DbSession, _: RequireAdmin
) -> AutoReplyConfig:
    await _channel(session, channel_id)
    row = await _settings_row(session, channel_id)
    row.auto_reply = body.model_dump(mode="json")
    await session.commit()
    return body


@router.delete("/channels/{channel_id}/auto-reply", status_code=status.HTTP_204_NO_CONTENT)
async def delete_auto_reply(channel_id: uuid.UUID, session: DbSession, _: RequireAdmin) -> Response:
    await _channel(session, channel_id)
    row = await session.get(ChannelSettings, channel_id, with_for_update=True)
    if row is not None:
        row.auto_reply = None
        await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- opt-outs ----------------------------------------------------------------------------


@router.get("/channels/{channel_id}/opt-outs", response_model=OptOutPage)
async def list_opt_outs(
    channel_id: uuid.UUID,
    session: DbSession,
    _: RequireRead,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> OptOutPage:
    await _channel(session, channel_id)
    rows, next_cursor = await repository.list_opt_outs(
        session, channel_id, cursor=cursor, limit=limit
    )
    items = [
        OptOutRead(
            contact_id=r.contact_key, source=r.source, reason=r.reason, opted_out_at=r.opted_out_at
        )
        for r in rows
    ]
    return OptOutPage(items=items, next_cursor=next_cursor)


async def _change_opt_out(
    session: DbSession,
    resources: AppResources,
    channel_id: uuid.UUID,
    contact_id: str,
    *,
    opted_out: bool,
    reason: str | None,
) -> str:
    channel = await _channel(session, channel_id)
    if "\x00" in contact_id:
        raise InvalidContact("contact_id must not contain the NUL character")
    key = contact_key(channel.platform, contact_id)
    conversation = await session.scalar(
        select(Conversation)
        .where(Conversation.channel_id == channel_id, Conversation.contact_key == key)
        .with_for_update()
    )
    now = datetime.now(UTC)
    await service.set_opt_out(
        session,
        resources.settings,
        conversation,
        channel_id=channel_id,
        key=key,
        opted_out=opted_out,
        source="api",
        reason=reason,
        trigger=f"api:{uuid.uuid4()}",
        at=now,
    )
    await session.commit()
    return key


@router.put("/channels/{channel_id}/opt-outs/{contact_id}", response_model=OptOutRead)
async def put_opt_out(
    channel_id: uuid.UUID,
    contact_id: ContactId,
    session: DbSession,
    resources: AppResources,
    _: RequireAdmin,
    body: OptOutWrite | None = None,
) -> OptOutRead:
    """Opt a contact out (imports, corrections). Idempotent: an opted-out contact stays as it
    was recorded, and no second `contact.opted_out` is emitted."""
    key = await _change_opt_out(
        session,
        resources,
        channel_id,
        contact_id,
        opted_out=True,
        reason=body.reason if body else None,
    )
    row = await session.get(OptOut, (channel_id, key))
    assert row is not None
    return OptOutRead(
        contact_id=row.contact_key,
        source=row.source,
        reason=row.reason,
        opted_out_at=row.opted_out_at,
    )


@router.delete(
    "/channels/{channel_id}/opt-outs/{contact_id}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_opt_out(
    channel_id: uuid.UUID,
    contact_id: ContactId,
    session: DbSession,
    resources: AppResources,
    _: RequireAdmin,
) -> Response:
    """Opt a contact in again (idempotent; `contact.opted_in` only when it was opted out)."""
    await _change_opt_out(session, resources, channel_id, contact_id, opted_out=False, reason=None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
