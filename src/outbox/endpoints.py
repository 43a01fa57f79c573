"""The messages API: send, status and history, list and filter, cancel, redrive, dead letters.

Every write commits explicitly before the response is returned (never in a ``yield``
dependency's teardown, which runs after the response is sent).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from apikeys.dependencies import RequireRead, RequireSend
from infra.errors import AUTHENTICATED, error_responses
from infra.logging import get_logger
from infra.resources import AppResources, DbSession
from infra.schema_types import Instant, Text
from outbox import repository, service
from outbox.contracts import SendCommand
from outbox.errors import InvalidCommand
from outbox.schemas import (
    AttemptRead,
    MessageCreate,
    MessageDetail,
    MessagePage,
    MessageRead,
    MessageState,
)

router = APIRouter(prefix="/v1", tags=["messages"])
log = get_logger(__name__)
bind = structlog.contextvars.bind_contextvars
"""Log lines of a request carry its message and channel ids (with its request id)."""

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The command id. The same key with the same body answers with the same "
        "message; with a different body, 409. Without it a key is generated (no retry safety).",
    ),
]

Limit = Annotated[int, Query(ge=1, le=500, description="Page size")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


_BAD_CURSOR = "Invalid cursor (pass the `next_cursor` of a previous page), or NUL in `to`"


def _location(response: Response, message_id: uuid.UUID) -> None:
    response.headers["Location"] = f"/v1/messages/{message_id}"


@router.post(
    "/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageRead,
    summary="Send a message (durably queued; delivered by the outbox worker)",
    responses=error_responses(
        *AUTHENTICATED,
        400,
        descriptions={
            409: "Idempotency-Key reused with a different body",
            422: "Invalid body, unknown or disabled channel, content the platform cannot "
            "express, WhatsApp 24-hour window closed (template needed), proactive message to "
            "an opted-out contact (`opted_out`) or beyond the channel's frequency cap "
            "(`frequency_capped`, `details.allowed_at`)",
        },
    ),
)
async def send_message(
    body: MessageCreate,
    response: Response,
    session: DbSession,
    resources: AppResources,
    _: RequireSend,
    idempotency_key: IdempotencyKey = None,
) -> MessageRead:
    """Accept a send command. The message and its ``message.queued`` event are committed before
    the 202; a replay of the same key and body answers 202 with the same message (its current
    state) and ``Idempotent-Replayed: true``."""
    command_id = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    try:
        command = SendCommand.model_validate({**body.model_dump(), "id": command_id})
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise InvalidCommand(problems or "invalid command") from None
    accepted = await service.accept(session, resources.settings, command, source="api")
    bind(message_id=str(accepted.message.id), channel_id=str(accepted.message.channel_id))
    if not accepted.replayed:
        await session.commit()
    else:
        response.headers["Idempotent-Replayed"] = "true"
    log.debug("outbox.message_accepted", replayed=accepted.replayed)
    _location(response, accepted.message.id)
    return MessageRead.from_row(accepted.message)


@router.get(
    "/messages/{message_id:uuid}",
    response_model=MessageDetail,
    summary="A message",
    responses=error_responses(*AUTHENTICATED, 404),
)
async def get_message(message_id: uuid.UUID, session: DbSession, _: RequireRead) -> MessageDetail:
    """State, platform message id, last error, timestamps and every delivery attempt."""
    bind(message_id=str(message_id))
    message = await repository.get_message(session, message_id)
    history = await repository.attempt_history(session, message_id)
    return MessageDetail(
        **MessageRead.from_row(message).model_dump(),
        history=[AttemptRead.from_row(a) for a in history],
    )


@router.get(
    "/messages",
    response_model=MessagePage,
    summary="List messages, newest first",
    responses=error_responses(*AUTHENTICATED, descriptions={400: _BAD_CURSOR}),
)
async def list_messages(
    session: DbSession,
    _: RequireRead,
    channel_id: uuid.UUID | None = None,
    to: Annotated[str | None, Query(max_length=200, description="Recipient, exactly")] = None,
    state: Annotated[list[MessageState] | None, Query(description="Repeatable")] = None,
    created_after: Instant | None = None,
    created_before: Instant | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> MessagePage:
    filters = repository.MessageFilter(
        channel_id=channel_id,
        to=to,
        states=tuple(state or ()),
        created_after=created_after,
        created_before=created_before,
    )
    rows, next_cursor = await repository.list_messages(session, filters, cursor=cursor, limit=limit)
    return MessagePage(items=[MessageRead.from_row(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/messages/{message_id:uuid}/cancel",
    response_model=MessageRead,
    summary="Cancel a message not yet sent",
    responses=error_responses(
        *AUTHENTICATED,
        404,
        descriptions={409: "Not queued or retrying (details.state: current state)"},
    ),
)
async def cancel_message(
    message_id: uuid.UUID, session: DbSession, resources: AppResources, _: RequireSend
) -> MessageRead:
    """queued/retrying → cancelled (``message.cancelled``); already cancelled: 200, no change."""
    bind(message_id=str(message_id))
    message = await service.cancel(session, resources.settings, message_id)
    await session.commit()
    return MessageRead.from_row(message)


class RedriveRequest(BaseModel):
    """Which dead/failed messages to redrive; every given condition must hold."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    states: list[Literal["dead", "failed"]] = Field(
        default=["dead", "failed"], min_length=1, description="Terminal states to redrive"
    )
    channel_id: uuid.UUID | None = None
    error_code: Text | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The message's `last_error.code` (`190`, `http_503`, `expired`, …)",
    )
    finished_after: Instant | None = Field(default=None, description="Inclusive")
    finished_before: Instant | None = Field(default=None, description="Exclusive")
    limit: int = Field(
        default=1000, ge=1, le=10_000, description="At most this many; repeat while `more`"
    )


class RedriveResult(BaseModel):
    count: int = Field(description="Messages requeued (each with `message.queued`)")
    more: bool = Field(description="The limit was reached: more may match; call again")


@router.post(
    "/messages/retry",
    response_model=RedriveResult,
    summary="Redrive dead and failed messages in bulk, by filter",
    responses=error_responses(*AUTHENTICATED, 400),
)
async def retry_messages(
    body: RedriveRequest, resources: AppResources, _: RequireSend
) -> RedriveResult:
    """Each match goes back to ``queued`` as with ``/v1/messages/{id}/retry``, committed in
    batches of 500; returns how many. A message redriven concurrently is skipped, not
    waited for."""
    where = repository.RedriveFilter(
        states=tuple(dict.fromkeys(body.states)),
        channel_id=body.channel_id,
        error_code=body.error_code,
        finished_after=body.finished_after,
        finished_before=body.finished_before,
    )
    count = await service.redrive_matching(
        resources.sessionmaker, resources.settings, where, body.limit
    )
    log.info("outbox.messages_redriven", count=count)
    return RedriveResult(count=count, more=count == body.limit)


@router.post(
    "/messages/{message_id:uuid}/retry",
    response_model=MessageRead,
    summary="Redrive a dead or failed message",
    responses=error_responses(
        *AUTHENTICATED,
        404,
        descriptions={409: "Not dead or failed (details.state: current state)"},
    ),
)
async def retry_message(
    message_id: uuid.UUID, session: DbSession, resources: AppResources, _: RequireSend
) -> MessageRead:
    """dead or failed → queued (``message.queued``), due now, new ``not_after``; attempts are
    kept."""
    bind(message_id=str(message_id))
    message = await service.redrive(session, resources.settings, message_id)
    await session.commit()
    return MessageRead.from_row(message)


@router.get(
    "/dead-letters",
    response_model=MessagePage,
    summary="Dead messages (retry with /retry)",
    responses=error_responses(*AUTHENTICATED, descriptions={400: _BAD_CURSOR}),
)
async def list_dead_letters(
    session: DbSession,
    _: RequireRead,
    channel_id: uuid.UUID | None = None,
    to: Annotated[str | None, Query(max_length=200)] = None,
    created_after: Instant | None = None,
    created_before: Instant | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> MessagePage:
    """``GET /v1/messages?state=dead`` under its own name, for operators."""
    return await list_messages(
        session, _, channel_id, to, ["dead"], created_after, created_before, cursor, limit
    )
