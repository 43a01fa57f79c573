"""Meta Graph API plumbing shared by the WhatsApp and Messenger/Instagram senders.

Error envelope
(https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes):
``{"error": {"message", "type", "code", "error_subcode", "error_data": {"details"},
"fbtrace_id"}}``.
Meta says to key handling on ``error.code``: copies of its table disagree on the HTTP status of
throttling errors (code 4 is listed as 429 in one copy and 400 in another), so the HTTP status
is only the fallback when a code is not in our table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from outbox.platforms.base import (
    ChannelConfig,
    ErrorRule,
    SendResult,
    api_base,
    excerpt,
    missing_credential,
    parse_json,
    parse_retry_after,
    result_from_rule,
    retry_after_seconds,
    sent,
)
from outbox.platforms.http import HttpClient, HttpExchange, post
from outbox.platforms.scrub import scrub

GRAPH_API_VERSION = "v21.0"
GRAPH_BASE_URL = "https://graph.facebook.com"


def graph_url(base_url: str, node_id: str) -> str:
    return f"{base_url}/{GRAPH_API_VERSION}/{node_id}/messages"


def _usage_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``X-Business-Use-Case-Usage``'s ``estimated_time_to_regain_access`` (minutes).

    https://developers.facebook.com/docs/graph-api/overview/rate-limiting/
    """
    raw = headers.get("x-business-use-case-usage")
    if not raw:
        return None
    usage = parse_json(raw.encode())
    if not isinstance(usage, dict):
        return None
    minutes = 0.0
    for entries in usage.values():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, dict):
                # validated and capped like any hint (the unit here is minutes)
                value = retry_after_seconds(entry.get("estimated_time_to_regain_access"))
                if value is not None and value > minutes:
                    minutes = value
    return retry_after_seconds(minutes * 60.0) if minutes > 0 else None


def graph_failure(
    exchange: HttpExchange, table: Mapping[int, ErrorRule], secrets: tuple[str, ...]
) -> SendResult:
    payload = parse_json(exchange.body)
    error = payload.get("error") if isinstance(payload, dict) else None
    code: int | None = None
    title: str | None = None
    if isinstance(error, dict):
        raw_code = error.get("code")
        if isinstance(raw_code, int):
            code = raw_code
        message = error.get("message")
        title = message if isinstance(message, str) else None
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        if isinstance(details, str) and details:
            title = f"{title}: {details}" if title else details
        subcode = error.get("error_subcode")
        if isinstance(subcode, int) and title is not None:
            title = f"{title} (subcode {subcode})"
    retry_after = parse_retry_after(exchange.headers.get("retry-after"))
    if retry_after is None:
        retry_after = _usage_retry_after(exchange.headers)
    return result_from_rule(
        table.get(code) if code is not None else None,
        status=exchange.status,
        code=str(code) if code is not None else None,
        title=scrub(title, secrets) if title is not None else None,
        retry_after=retry_after,
        body_excerpt=excerpt(exchange.body, secrets),
        duration_ms=exchange.duration_ms,
    )


async def graph_send(
    client: HttpClient,
    channel: ChannelConfig,
    body: dict[str, Any],
    *,
    errors: Mapping[int, ErrorRule],
    timeout: float,  # noqa: ASYNC109 - enforced inside post()
    message_id: Callable[[object], str | None],
) -> SendResult:
    """POST a Send API body to ``/{account_id}/messages`` with the channel's token and classify
    the answer; ``message_id`` reads the platform id out of a success body."""
    token = channel.credentials.get("access_token")
    if not token:
        return missing_credential("access_token")
    secrets = (token,)
    base = api_base(channel, GRAPH_BASE_URL)
    if isinstance(base, SendResult):
        return base
    exchange = await post(
        client,
        graph_url(base, channel.account_id),
        timeout=timeout,
        secrets=secrets,
        json_body=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    if isinstance(exchange, SendResult):
        return exchange
    if 200 <= exchange.status < 300:
        return sent(message_id(parse_json(exchange.body)), exchange, secrets)
    return graph_failure(exchange, errors, secrets)
