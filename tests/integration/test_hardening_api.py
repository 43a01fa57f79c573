"""Issue 9 at the management API: D3 (over-long api_base_url), D4 (NUL in any text field) and
D6 (api_base_url refused unless the deployment allows it) are 422s, never 500s."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from outbox.app import component
from tests.conftest import ADMIN_KEY
from tests.integration.test_channels_api import whatsapp_body
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

LONG_URL = "https://proxy.example.com/" + "a" * 600


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(settings, [component(settings)]) as running:
        yield running


@pytest.fixture
async def production_api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    """The default deployment: no api_base_url override."""
    async with running_app(
        settings.model_copy(update={"allow_api_base_url_override": False})
    ) as running:
        yield running


async def _create(api: RunningApp, **overrides: object) -> dict[str, object]:
    answer = await api.client.post(
        "/v1/channels", json=whatsapp_body(**overrides), headers=api.auth(ADMIN_KEY)
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, object] = answer.json()
    return body


def _assert_422(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert field in error["message"], error
    assert "aaaa" not in answer.text
    assert "\x00" not in answer.text


async def test_an_api_base_url_longer_than_its_column_is_a_422(api: RunningApp) -> None:
    created = await api.client.post(
        "/v1/channels", json=whatsapp_body(api_base_url=LONG_URL), headers=api.auth(ADMIN_KEY)
    )
    _assert_422(created, "api_base_url")
    channel = await _create(api)
    patched = await api.client.patch(
        f"/v1/channels/{channel['id']}",
        json={"api_base_url": LONG_URL},
        headers=api.auth(ADMIN_KEY),
    )
    _assert_422(patched, "api_base_url")


async def test_an_api_base_url_of_exactly_500_characters_is_kept(api: RunningApp) -> None:
    url = "https://proxy.example.com/" + "b" * (500 - len("https://proxy.example.com/"))
    channel = await _create(api, api_base_url=url)
    assert channel["api_base_url"] == url


async def test_an_api_key_name_with_nul_is_a_422(api: RunningApp) -> None:
    answer = await api.client.post(
        "/v1/api-keys",
        json={"name": "ops\x00key", "scopes": ["read"]},
        headers=api.auth(ADMIN_KEY),
    )
    _assert_422(answer, "name")


@pytest.mark.parametrize(
    "field",
    ["to", "reply_to", "channel_id", "content.text", "metadata", "content.media.caption"],
)
async def test_a_message_field_with_nul_is_a_422(api: RunningApp, field: str) -> None:
    channel = await _create(api)
    body: dict[str, object] = {
        "channel_id": channel["id"],
        "to": "15551230000",
        "content": {"kind": "text", "text": "hi"},
    }
    nul = "a\x00b"
    if field == "to":
        body["to"] = nul
    elif field == "reply_to":
        body["reply_to"] = nul
    elif field == "channel_id":
        body["channel_id"] = nul
    elif field == "content.text":
        body["content"] = {"kind": "text", "text": nul}
    elif field == "metadata":
        body["metadata"] = {"k": nul}
    else:
        body["content"] = {
            "kind": "media",
            "media": {"kind": "image", "url": "https://example.com/a.png", "caption": nul},
        }
    answer = await api.client.post(
        "/v1/messages",
        json=body,
        headers={**api.auth(ADMIN_KEY), "Idempotency-Key": "nul-1"},
    )
    assert answer.status_code == 422, answer.text
    assert "\x00" not in answer.text


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example.com",
        "http://127.0.0.1:9999",
        "http://10.0.0.8",
        "http://[::1]:8080",
        "http://localhost:8080",
    ],
)
async def test_api_base_url_is_refused_unless_the_deployment_allows_it(
    production_api: RunningApp, url: str
) -> None:
    created = await production_api.client.post(
        "/v1/channels", json=whatsapp_body(api_base_url=url), headers=production_api.auth(ADMIN_KEY)
    )
    assert created.status_code == 422, created.text
    assert created.json()["error"]["code"] == "api_base_url_not_allowed"
    channel = await _create(production_api)
    patched = await production_api.client.patch(
        f"/v1/channels/{channel['id']}",
        json={"api_base_url": url},
        headers=production_api.auth(ADMIN_KEY),
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"]["code"] == "api_base_url_not_allowed"
    cleared = await production_api.client.patch(
        f"/v1/channels/{channel['id']}",
        json={"api_base_url": None},
        headers=production_api.auth(ADMIN_KEY),
    )
    assert cleared.status_code == 200, cleared.text


async def test_an_allow_listed_https_host_is_accepted(
    settings: Settings, engine: AsyncEngine
) -> None:
    proxied = settings.model_copy(
        update={
            "allow_api_base_url_override": False,
            "api_base_url_allowed_hosts": ("egress.example.com",),
        }
    )
    async with running_app(proxied) as api:
        channel = await _create(api, api_base_url="https://Egress.example.com/graph")
        assert channel["api_base_url"] == "https://egress.example.com/graph"
        plain = await api.client.post(
            "/v1/channels",
            json=whatsapp_body(account_id="2", api_base_url="http://egress.example.com"),
            headers=api.auth(ADMIN_KEY),
        )
        assert plain.status_code == 422, plain.text


async def test_a_numeric_created_after_is_a_422_not_1970(api: RunningApp) -> None:
    for value in ("0", "1700000000", "1e9"):
        answer = await api.client.get(
            "/v1/messages", params={"created_after": value}, headers=api.auth(ADMIN_KEY)
        )
        assert answer.status_code == 422, answer.text
        assert "created_after" in answer.json()["error"]["message"]
    ok = await api.client.get(
        "/v1/messages",
        params={"created_after": "2026-01-01T00:00:00Z"},
        headers=api.auth(ADMIN_KEY),
    )
    assert ok.status_code == 200, ok.text


async def test_405_names_every_method_of_the_path(api: RunningApp) -> None:
    answer = await api.client.request("OPTIONS", "/v1/channels", headers=api.auth(ADMIN_KEY))
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
    assert answer.json()["error"]["code"] == "method_not_allowed"
