from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import BaseModel, HttpUrl, SecretStr, ValidationError
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from channels.schemas import (
    CREDENTIAL_MODELS,
    ChannelCreate,
    ChannelRead,
    ChannelUpdate,
    SendingError,
    SendingState,
    TelegramCredentials,
    check_bot_token_account,
)
from infra.base_url import BaseUrlPolicy, active_policy
from infra.crypto import SecretBox
from infra.errors import Conflict, NotFound, Unprocessable


@dataclass(frozen=True, slots=True)
class ChannelWithSecrets:
    """A channel with decrypted credentials, for the gateway's verifiers and the outbox senders."""

    id: uuid.UUID
    platform: str
    account_id: str
    api_base_url: str | None
    send_rate_per_second: float | None
    enabled: bool
    credentials: dict[str, str]


def _plain(model: BaseModel) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in model:
        if value is None:
            continue
        out[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return out


def _checked_base_url(url: HttpUrl | None, policy: BaseUrlPolicy | None) -> str | None:
    """The URL as stored (no trailing slash), if the deployment lets credentials go there."""
    if url is None:
        return None
    stored = str(url).rstrip("/")
    (policy or active_policy()).check(stored)
    return stored


def to_read(
    channel: Channel, box: SecretBox, public_base_url: str, sending: SendingState | None = None
) -> ChannelRead:
    state = sending or SendingState()
    return ChannelRead(
        id=channel.id,
        platform=channel.platform,
        name=channel.name,
        account_id=channel.account_id,
        api_base_url=channel.api_base_url,
        send_rate_per_second=channel.send_rate_per_second,
        enabled=channel.enabled,
        webhook_url=f"{public_base_url}/webhooks/{channel.platform}/{channel.id}",
        credentials_set=sorted(box.decrypt_json(channel.secrets)),
        business_account_id=channel.business_account_id,
        auto_answer_callbacks=channel.auto_answer_callbacks,
        created_at=channel.created_at,
        updated_at=channel.updated_at,
        sending=state.sending,
        sending_reason=state.sending_reason,
        sending_since=state.sending_since,
        sending_error=state.sending_error,
        circuit=state.circuit,
    )


_SENDING = text(
    """
    SELECT k.channel_id,
           CASE WHEN k.sending = 'paused' THEN 'paused'
                WHEN k.sending = 'suspended' AND k.secrets_digest = md5(c.secrets)
                THEN 'suspended'
                ELSE 'active' END AS sending,
           k.reason, k.since, k.error, k.circuit
    FROM outbox_channel_control k JOIN channels c ON c.id = k.channel_id
    WHERE k.channel_id = ANY(CAST(:ids AS uuid[]))
    """
)


async def sending_states(
    session: AsyncSession, ids: list[uuid.UUID]
) -> dict[uuid.UUID, SendingState]:
    """The sending states of ``ids`` that have one (absent: active, circuit closed). The
    table belongs to the outbox (``outbox.control``, which documents it); read here with
    SQL, as the channels package does not import the services. A suspension whose channel
    got new credentials since is over (``secrets_digest`` no longer matches)."""
    if not ids:
        return {}
    rows = await session.execute(_SENDING, {"ids": ids})
    states = {}
    for channel_id, sending, reason, since, error, circuit in rows.all():
        held = sending != "active"
        states[channel_id] = SendingState(
            sending=sending,
            sending_reason=reason if held else None,
            sending_since=since if held else None,
            sending_error=SendingError.model_validate(error) if held and error else None,
            circuit=circuit,
        )
    return states


async def read(
    session: AsyncSession, box: SecretBox, public_base_url: str, channel: Channel
) -> ChannelRead:
    """The channel resource with its sending state."""
    states = await sending_states(session, [channel.id])
    return to_read(channel, box, public_base_url, states.get(channel.id))


async def create(
    session: AsyncSession,
    box: SecretBox,
    body: ChannelCreate,
    *,
    base_url_policy: BaseUrlPolicy | None = None,
) -> Channel:
    api_base_url = _checked_base_url(body.api_base_url, base_url_policy)
    channel = Channel(
        platform=body.platform,
        name=body.name,
        account_id=body.account_id,
        secrets=box.encrypt_json(_plain(body.credentials)),
        api_base_url=api_base_url,
        send_rate_per_second=body.send_rate_per_second,
        enabled=body.enabled,
        business_account_id=getattr(body, "business_account_id", None),
        auto_answer_callbacks=getattr(body, "auto_answer_callbacks", True),
    )
    session.add(channel)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"a {body.platform} channel for account_id {body.account_id!r} already exists"
        ) from exc
    await session.refresh(channel)
    return channel


_PLATFORM_FIELDS = {"business_account_id": "whatsapp", "auto_answer_callbacks": "telegram"}


def _check_platform_fields(platform: str, fields: dict[str, object]) -> None:
    wrong = [k for k, p in _PLATFORM_FIELDS.items() if k in fields and p != platform]
    if wrong:
        raise Unprocessable(
            "; ".join(f"{k}: only for {_PLATFORM_FIELDS[k]} channels" for k in wrong)
        )


async def get(session: AsyncSession, channel_id: uuid.UUID) -> Channel:
    channel = await session.get(Channel, channel_id)
    if channel is None:
        raise NotFound("channel not found")
    return channel


async def list_all(
    session: AsyncSession, platform: str | None = None, enabled: bool | None = None
) -> list[Channel]:
    query = select(Channel).order_by(Channel.created_at, Channel.id)
    if platform is not None:
        query = query.where(Channel.platform == platform)
    if enabled is not None:
        query = query.where(Channel.enabled == enabled)
    return list(await session.scalars(query))


async def update(
    session: AsyncSession,
    box: SecretBox,
    channel_id: uuid.UUID,
    body: ChannelUpdate,
    *,
    base_url_policy: BaseUrlPolicy | None = None,
) -> Channel:
    channel = await get(session, channel_id)
    fields = body.model_dump(exclude_unset=True, exclude={"credentials"})
    _check_platform_fields(channel.platform, fields)
    for key, value in fields.items():
        if key == "api_base_url":
            value = _checked_base_url(body.api_base_url, base_url_policy)
        setattr(channel, key, value)
    if body.credentials is not None:
        model = CREDENTIAL_MODELS[channel.platform]
        required = [
            key
            for key, value in body.credentials.items()
            if value is None and key in model.model_fields and model.model_fields[key].is_required()
        ]
        if required:
            raise Unprocessable(
                "invalid credentials: "
                + "; ".join(
                    f"credentials.{key}: required, cannot be removed (give a new value instead)"
                    for key in required
                )
            )
        merged: dict[str, str | None] = dict(box.decrypt_json(channel.secrets))
        # None removes an optional credential: validated as absent, then dropped by _plain.
        merged.update(
            {
                k: v.get_secret_value() if v is not None else None
                for k, v in body.credentials.items()
            }
        )
        try:
            validated = model.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"credentials.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise Unprocessable(f"invalid credentials: {problems}") from None
        if isinstance(validated, TelegramCredentials):
            try:
                check_bot_token_account(validated.bot_token, channel.account_id)
            except ValueError as exc:
                raise Unprocessable(f"invalid credentials: credentials.bot_token: {exc}") from None
        channel.secrets = box.encrypt_json(_plain(validated))
    await session.flush()
    await session.refresh(channel)
    return channel


async def load_with_secrets(
    session: AsyncSession, box: SecretBox, channel_id: uuid.UUID
) -> ChannelWithSecrets | None:
    channel = await session.get(Channel, channel_id)
    if channel is None:
        return None
    return ChannelWithSecrets(
        id=channel.id,
        platform=channel.platform,
        account_id=channel.account_id,
        api_base_url=channel.api_base_url,
        send_rate_per_second=channel.send_rate_per_second,
        enabled=channel.enabled,
        credentials=box.decrypt_json(channel.secrets),
    )
