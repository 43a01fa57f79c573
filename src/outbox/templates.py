"""The WhatsApp template registry: what a channel's WABA may send, and checks against it.

A WhatsApp channel with a ``business_account_id`` (its WABA id) gets its templates listed from
Graph ``GET /{waba_id}/message_templates`` (paged by ``paging.cursors.after``) by
``run_template_sync``: at worker start, then every ``outbox_template_sync_interval`` seconds.
One replica syncs at a time (a transaction-scoped advisory lock). A full listing replaces the
channel's rows and marks it synced (``TemplateSync``); a failed listing changes nothing.

Between syncs, ``message_template_status_update`` webhooks (normalized as ``unsupported``
events carrying the Meta change in ``raw``) move a known template's status
(``apply_status_updates``, run by the receipts consumer). ``REINSTATED`` means ``APPROVED``
again; ``FLAGGED`` is a quality warning, the template can still be sent, so the status stays.
A template the registry does not know yet (created after the last sync) is not added by a
webhook: the webhook carries no components to check parameters against; the next sync adds it.

Intake (``check_send``): when the channel's registry is synced for its current WABA id, a
template send is refused (``template_invalid``) if its name and language are unknown, its
status is not ``APPROVED``, or its ``components`` do not fit the template's header, body and
buttons (``outbox.template_check``). Otherwise (no WABA id, never synced, WABA id changed
since) sends pass unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from infra.logging import get_logger
from infra.resources import Resources
from normalizer.models import UnsupportedEvent
from normalizer.platforms import Platform
from outbox.contracts import SendCommand
from outbox.errors import TemplateInvalid
from outbox.models import MessageTemplate, TemplateSync
from outbox.platforms._graph import GRAPH_API_VERSION, GRAPH_BASE_URL
from outbox.template_check import (
    Placeholders,
    button_problems,
    parameter_problems,
    placeholders,
    problems,
)

__all__ = [
    "PLATFORM",
    "STATUS_UPDATE_FIELD",
    "Placeholders",
    "apply_status_updates",
    "button_problems",
    "check_send",
    "fetch_templates",
    "is_status_update",
    "parameter_problems",
    "placeholders",
    "run_template_sync",
    "sync_once",
]

log = get_logger(__name__)

PLATFORM: Final[Platform] = "whatsapp"
"""The one platform with a template registry to sync (Meta's WhatsApp Business Management API).
Template sends on other platforms (Twilio's Content API) are not checked: the registry has
nothing to check them against."""
STATUS_UPDATE_FIELD: Final = "message_template_status_update"
_SYNC_LOCK: Final = 0x5B_7470_6C73  # pg advisory lock id of the template sync ("[tpls")
_MAX_PAGES: Final = 200
_PAGE_LIMIT: Final = 100
_FIELDS: Final = "name,language,status,category,components"


# ---- the intake check ---------------------------------------------------------------------


async def check_send(session: AsyncSession, channel: Channel, command: SendCommand) -> None:
    """Raise ``TemplateInvalid`` if the registry is synced and refuses this template send."""
    template = command.content.template
    if channel.platform != PLATFORM or template is None or not channel.business_account_id:
        return
    sync = await session.get(TemplateSync, channel.id)
    if sync is None or sync.business_account_id != channel.business_account_id:
        return
    known = await session.get(MessageTemplate, (channel.id, template.name, template.language))
    if known is None:
        raise TemplateInvalid(
            f"template {template.name!r} is not in the channel's registry for this language"
        )
    if known.status != "APPROVED":
        raise TemplateInvalid(
            f"template {template.name!r} is {known.status}: only APPROVED templates can be sent",
            details={"status": known.status},
        )
    wrong = problems(known.components, template.components)
    if wrong:
        raise TemplateInvalid(f"template {template.name!r}: " + "; ".join(wrong))


# ---- webhooks -----------------------------------------------------------------------------------


def _status_update(event: UnsupportedEvent) -> tuple[uuid.UUID, str, str, str] | None:
    data = event.data
    raw = data.raw
    if data.platform != PLATFORM or not isinstance(raw, dict):
        return None
    value = raw.get("value")
    if raw.get("field") != STATUS_UPDATE_FIELD or not isinstance(value, dict):
        return None
    name, language, status = (
        value.get("message_template_name"),
        value.get("message_template_language"),
        value.get("event"),
    )
    if not all(isinstance(v, str) and v and len(v) <= 512 for v in (name, language, status)):
        return None
    status = str(status).upper()
    if status == "FLAGGED" or len(status) > 32:
        return None
    try:
        channel_id = uuid.UUID(data.channel_id)
    except ValueError:
        return None
    return channel_id, str(name), str(language), "APPROVED" if status == "REINSTATED" else status


def is_status_update(event: UnsupportedEvent) -> bool:
    """Whether ``event`` may be a template status webhook (the receipts consumer collects
    these for ``apply_status_updates``, which reads them in full)."""
    return event.data.platform == PLATFORM


async def apply_status_updates(
    session: AsyncSession, events: Sequence[UnsupportedEvent], *, now: datetime | None = None
) -> int:
    """Apply the template status webhooks among ``events`` (in order); returns rows changed."""
    changed = 0
    for event in events:
        parsed = _status_update(event)
        if parsed is None:
            continue
        channel_id, name, language, status = parsed
        result = await session.execute(
            update(MessageTemplate)
            .where(
                MessageTemplate.channel_id == channel_id,
                MessageTemplate.name == name,
                MessageTemplate.language == language,
            )
            .values(status=status, updated_at=now or datetime.now(UTC))
        )
        rowcount = int(getattr(result, "rowcount", 0) or 0)
        changed += rowcount
        log.info(
            "outbox.template_status", channel_id=str(channel_id), status=status, known=rowcount
        )
    return changed


# ---- sync ---------------------------------------------------------------------------------------


class ListingFailed(Exception):
    """Graph did not give a complete listing (the registry is left as it was)."""


async def fetch_templates(
    client: aiohttp.ClientSession, base_url: str | None, waba_id: str, access_token: str
) -> list[dict[str, Any]]:
    """Every template of the WABA, following ``paging.cursors.after`` while ``paging.next`` is
    given. Pages are requested from the channel's own base URL (the cursor is reused, never the
    ``next`` URL, so the token goes nowhere else)."""
    base = (base_url or GRAPH_BASE_URL).rstrip("/")
    url = f"{base}/{GRAPH_API_VERSION}/{waba_id}/message_templates"
    headers = {"Authorization": f"Bearer {access_token}"}
    params = {"fields": _FIELDS, "limit": str(_PAGE_LIMIT)}
    templates: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        try:
            async with client.get(url, params=params, headers=headers) as response:
                if response.status != 200:
                    raise ListingFailed(f"HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ListingFailed(type(exc).__name__) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ListingFailed("no data array")
        templates.extend(t for t in data if isinstance(t, dict))
        paging = _obj(body.get("paging"))
        after = _obj(paging.get("cursors")).get("after")
        if not paging.get("next") or not isinstance(after, str) or not after:
            return templates
        params = {**params, "after": after}
    raise ListingFailed("too many pages")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _rows(channel_id: uuid.UUID, listed: Iterable[dict[str, Any]], now: datetime) -> list[Any]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for t in listed:
        name, language, status = t.get("name"), t.get("language"), t.get("status")
        if not all(isinstance(v, str) and v and "\x00" not in v for v in (name, language, status)):
            continue
        if len(str(name)) > 512 or len(str(language)) > 32 or len(str(status)) > 32:
            continue
        category = t.get("category")
        components = t.get("components")
        rows[(str(name), str(language))] = {
            "channel_id": channel_id,
            "name": name,
            "language": language,
            "status": str(status).upper(),
            "category": str(category)[:64] if isinstance(category, str) else None,
            "components": components if isinstance(components, list) else [],
            "updated_at": now,
        }
    return list(rows.values())


async def _store(
    session: AsyncSession, channel: Channel, listed: list[dict[str, Any]], now: datetime
) -> None:
    await session.execute(delete(MessageTemplate).where(MessageTemplate.channel_id == channel.id))
    rows = _rows(channel.id, listed, now)
    if rows:
        await session.execute(pg_insert(MessageTemplate).values(rows))
    stmt = pg_insert(TemplateSync).values(
        channel_id=channel.id, business_account_id=channel.business_account_id, synced_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[TemplateSync.channel_id],
            set_={"business_account_id": stmt.excluded.business_account_id, "synced_at": now},
        )
    )


async def sync_once(resources: Resources, client: aiohttp.ClientSession) -> int | None:
    """One round over the enabled WhatsApp channels with a WABA id; returns how many were
    synced, or None when another replica holds the lock."""
    box = resources.secret_box
    synced = 0
    async with resources.sessionmaker() as session, session.begin():
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _SYNC_LOCK}
        )
        if not locked:
            return None
        channels = await session.scalars(
            select(Channel).where(
                Channel.platform == PLATFORM,
                Channel.enabled.is_(True),
                Channel.business_account_id.is_not(None),
            )
        )
        for channel in list(channels):
            token = box.decrypt_json(channel.secrets).get("access_token", "")
            try:
                listed = await fetch_templates(
                    client, channel.api_base_url, str(channel.business_account_id), token
                )
            except ListingFailed as exc:
                log.warning(
                    "outbox.template_sync_failed", channel_id=str(channel.id), reason=str(exc)
                )
                continue
            async with session.begin_nested():
                await _store(session, channel, listed, datetime.now(UTC))
            synced += 1
            log.info("outbox.template_synced", channel_id=str(channel.id), templates=len(listed))
    return synced


async def run_template_sync(resources: Resources, stop: asyncio.Event) -> None:
    """Sync at start, then every ``outbox_template_sync_interval`` seconds until ``stop``."""
    settings = resources.settings
    timeout = aiohttp.ClientTimeout(total=settings.outbox_http_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        while not stop.is_set():
            try:
                await sync_once(resources, client)
            except Exception as exc:  # the database is away: try again next round
                log.warning("outbox.template_sync_round_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.outbox_template_sync_interval)
