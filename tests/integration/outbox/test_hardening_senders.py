"""Issue 9, D5 and D6 at the sender: credentials never come back in what a send records, however
the platform or a proxy echoes the URL, and never go to a base URL the deployment refuses."""

from __future__ import annotations

import contextlib
import html
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from fake_platforms import FakePlatformServer, Fault
from infra.base_url import BaseUrlPolicy, install_policy
from outbox.contracts import SendCommand
from outbox.platforms import SENDERS, ChannelConfig, SendResult, make_http_client
from outbox.platforms.http import HttpClient

pytestmark = pytest.mark.integration

BOT_ID = "7000000001"
BOT_SECRET = "AAH-bot-token-0123456789abcdef"
BOT_TOKEN = f"{BOT_ID}:{BOT_SECRET}"
WA_TOKEN = "EAAGwa-token-0123456789abcdef"
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"


def _colon(replacement: str) -> Callable[[str], str]:
    return lambda path: urllib.parse.unquote(path).replace(":", replacement)


ECHOES: dict[str, Callable[[str], str]] = {
    "plain": urllib.parse.unquote,
    "html decimal &#58;": _colon("&#58;"),
    "html hex &#x3a;": _colon("&#x3a;"),
    "html named &colon;": _colon("&colon;"),
    "percent lower %3a": _colon("%3a"),
    "percent upper %3A": _colon("%3A"),
    "double percent %253A": _colon("%253A"),
    "json \\u003a": _colon("\\u003a"),
    "json \\u003A": _colon("\\u003A"),
    "hex \\x3a": _colon("\\x3a"),
    "fully percent-encoded": lambda p: urllib.parse.quote(urllib.parse.unquote(p), safe=""),
    "upper-cased": lambda p: urllib.parse.unquote(p).upper(),
    "html-escaped whole": lambda p: "".join(f"&#{ord(c)};" for c in urllib.parse.unquote(p)),
    "json-escaped whole": lambda p: "".join(f"\\u{ord(c):04x}" for c in urllib.parse.unquote(p)),
    "secret part only": lambda p: urllib.parse.unquote(p).split(":", 1)[1],
}

HELLO = {"kind": "text", "text": "hello"}


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as srv:
        yield srv


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[HttpClient]:
    async with make_http_client(timeout=5.0) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(server: FakePlatformServer) -> None:
    server.reset()


@pytest.fixture
def deny_overrides() -> Iterator[None]:
    previous = install_policy(BaseUrlPolicy.of(False))
    try:
        yield
    finally:
        install_policy(previous)


def _channel(platform: str, base_url: str) -> ChannelConfig:
    account, creds = {
        "whatsapp": ("106540352242922", {"access_token": WA_TOKEN}),
        "telegram": (BOT_ID, {"bot_token": BOT_TOKEN}),
        "twilio": ("+15550000000", {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}),
    }[platform]
    return ChannelConfig(f"ch-{platform}", platform, account, creds, base_url)


def _cmd(to: str) -> SendCommand:
    return SendCommand.model_validate({"id": "c", "channel_id": "ch", "to": to, "content": HELLO})


def _leaks(result: SendResult) -> list[str]:
    """Every credential (and the bot token's secret part) found in any decoding of what the
    attempt records: the raw texts, and them HTML-, percent- and JSON-unescaped."""
    texts = [result.error_title or "", result.response_excerpt or "", repr(result)]
    decoded: list[str] = []
    for text in texts:
        decoded += [text, html.unescape(text), urllib.parse.unquote(text)]
        with contextlib.suppress(ValueError):
            decoded.append(json.loads(f'"{text}"'))
    secrets = (BOT_TOKEN, BOT_SECRET, WA_TOKEN, TWILIO_TOKEN)
    return [s for s in secrets for t in decoded if s.lower() in t.lower()]


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
@pytest.mark.parametrize("raw", [False, True], ids=["json-error", "html-page"])
async def test_telegram_token_echoed_in_any_encoding_is_not_recorded(
    server: FakePlatformServer, client: HttpClient, echo: Callable[[str], str], raw: bool
) -> None:
    server.inject(Fault(status=404, code=404, message="Not Found", echo=echo, echo_raw=raw))
    result = await SENDERS["telegram"].send(
        client, _channel("telegram", server.base_url), _cmd("1"), timeout=5.0
    )
    assert result.outcome == "permanent"
    assert result.http_status == 404
    assert _leaks(result) == []


@pytest.mark.parametrize("platform", ["whatsapp", "twilio"])
async def test_header_credentials_echoed_encoded_are_not_recorded(
    server: FakePlatformServer, client: HttpClient, platform: str
) -> None:
    token = WA_TOKEN if platform == "whatsapp" else TWILIO_TOKEN
    encoded = "".join(f"&#{ord(c)};" for c in token)
    server.inject(Fault(status=400, code=100, message=f"echo {encoded} and {token.upper()}"))
    to = "15551230000" if platform == "whatsapp" else "+15551230000"
    result = await SENDERS[platform].send(
        client, _channel(platform, server.base_url), _cmd(to), timeout=5.0
    )
    assert result.outcome == "permanent"
    assert _leaks(result) == []


@pytest.mark.parametrize("platform", ["whatsapp", "telegram", "twilio"])
@pytest.mark.usefixtures("deny_overrides")
async def test_no_credentials_go_to_a_base_url_the_deployment_refuses(
    server: FakePlatformServer, client: HttpClient, platform: str
) -> None:
    to = {"whatsapp": "15551230000", "telegram": "1", "twilio": "+15551230000"}[platform]
    result = await SENDERS[platform].send(
        client, _channel(platform, server.base_url), _cmd(to), timeout=5.0
    )
    assert result.outcome == "permanent"
    assert result.error_code == "api_base_url_not_allowed"
    assert server.requests == []


async def test_an_allow_listed_host_is_still_refused_over_loopback(
    server: FakePlatformServer, client: HttpClient
) -> None:
    previous = install_policy(BaseUrlPolicy.of(False, ["127.0.0.1"]))
    try:
        result = await SENDERS["telegram"].send(
            client, _channel("telegram", server.base_url), _cmd("1"), timeout=5.0
        )
    finally:
        install_policy(previous)
    assert result.error_code == "api_base_url_not_allowed"
    assert server.requests == []
