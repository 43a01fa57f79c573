from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from channels.models import Channel
from infra.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

WA_SECRET = "EAAG-super-secret-access-token-123"
WA_APP_SECRET = "app-secret-abcdef0123456789"
WA_VERIFY = "verify-me-please"


def whatsapp_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "platform": "whatsapp",
        "name": "Support IT",
        "account_id": "106540352242922",
        "credentials": {
            "access_token": WA_SECRET,
            "app_secret": WA_APP_SECRET,
            "verify_token": WA_VERIFY,
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(settings) as running:
        yield running


async def test_channel_round_trip_through_postgres(
    api: RunningApp, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    created = await api.client.post(
        "/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY)
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["platform"] == "whatsapp"
    assert channel["credentials_set"] == ["access_token", "app_secret", "verify_token"]
    assert channel["webhook_url"] == f"{api.base_url}/webhooks/whatsapp/{channel['id']}"
    assert "credentials" not in channel

    async with sessionmaker() as session:
        row = await session.scalar(select(Channel).where(Channel.id == uuid.UUID(channel["id"])))
    assert row is not None
    assert row.account_id == "106540352242922"
    assert WA_SECRET.encode() not in row.secrets, "secrets must be encrypted at rest"

    fetched = await api.client.get(f"/v1/channels/{channel['id']}", headers=api.auth(ADMIN_KEY))
    assert fetched.status_code == 200
    assert fetched.json() == channel
    listed = await api.client.get("/v1/channels", headers=api.auth(ADMIN_KEY))
    assert [c["id"] for c in listed.json()] == [channel["id"]]


async def test_update_merges_credentials_and_disable(api: RunningApp) -> None:
    created = (
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    ).json()
    url = f"/v1/channels/{created['id']}"
    patched = await api.client.patch(
        url,
        json={"name": "Renamed", "credentials": {"previous_app_secret": "old-secret"}},
        headers=api.auth(ADMIN_KEY),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Renamed"
    assert "previous_app_secret" in patched.json()["credentials_set"]

    bad = await api.client.patch(
        url, json={"credentials": {"nonsense": "x"}}, headers=api.auth(ADMIN_KEY)
    )
    assert bad.status_code == 422
    assert "nonsense" in bad.json()["error"]["message"]

    disabled = await api.client.post(f"{url}/disable", headers=api.auth(ADMIN_KEY))
    assert disabled.json()["enabled"] is False
    listed = await api.client.get("/v1/channels?enabled=false", headers=api.auth(ADMIN_KEY))
    assert [c["id"] for c in listed.json()] == [created["id"]]


async def test_duplicate_account_is_a_conflict(api: RunningApp) -> None:
    first = await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    assert first.status_code == 201
    second = await api.client.post(
        "/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY)
    )
    assert second.status_code == 409
    assert "already exists" in second.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (whatsapp_body(platform="line"), "does not match any of the expected tags"),
        (
            whatsapp_body(credentials={"access_token": "x"}),
            "credentials.app_secret: Field required",
        ),
        (whatsapp_body(account_id="not-a-number"), "account_id must be the numeric Meta id"),
        (whatsapp_body(account_id="106540352242922\n"), "account_id must be the numeric Meta id"),
        (
            {
                "platform": "telegram",
                "name": "bot",
                "account_id": "999",
                "credentials": {
                    "bot_token": "123:AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    "secret_token": "s",
                },
            },
            "account_id must be the bot id",
        ),
        (
            {
                "platform": "twilio",
                "name": "sms",
                "account_id": "+15551234567",
                "credentials": {"account_sid": "XX123", "auth_token": "t"},
            },
            "must be 'AC' followed by 32 hexadecimal digits",
        ),
    ],
)
async def test_invalid_channels_are_422_with_a_clear_message(
    api: RunningApp, body: dict[str, object], fragment: str
) -> None:
    response = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]


async def test_api_keys_and_scopes(api: RunningApp) -> None:
    missing = await api.client.get("/v1/channels")
    assert missing.status_code == 401
    wrong = await api.client.get("/v1/channels", headers=api.auth("sb_nope"))
    assert wrong.status_code == 401

    issued = await api.client.post(
        "/v1/api-keys", json={"name": "reader", "scopes": ["read"]}, headers=api.auth(ADMIN_KEY)
    )
    assert issued.status_code == 201
    reader = issued.json()["key"]
    assert (await api.client.get("/v1/channels", headers=api.auth(reader))).status_code == 200
    forbidden = await api.client.post(
        "/v1/channels", json=whatsapp_body(), headers=api.auth(reader)
    )
    assert forbidden.status_code == 403
    assert "'admin' scope" in forbidden.json()["error"]["message"]

    listed = await api.client.get("/v1/api-keys", headers=api.auth(ADMIN_KEY))
    assert all("key" not in k and "key_hash" not in k for k in listed.json())
    revoked = await api.client.delete(
        f"/v1/api-keys/{issued.json()['id']}", headers=api.auth(ADMIN_KEY)
    )
    assert revoked.json()["revoked_at"] is not None
    assert (await api.client.get("/v1/channels", headers=api.auth(reader))).status_code == 401


async def test_secrets_never_in_responses_or_logs(
    api: RunningApp, capfd: pytest.CaptureFixture[str]
) -> None:
    secrets = [WA_SECRET, WA_APP_SECRET, WA_VERIFY]
    responses = [
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY)),
        await api.client.post(
            "/v1/channels",
            json=whatsapp_body(account_id="bad id"),
            headers=api.auth(ADMIN_KEY),
        ),
        await api.client.post(
            "/v1/channels",
            json=whatsapp_body(credentials={"access_token": WA_SECRET, "app_secret": 5}),
            headers=api.auth(ADMIN_KEY),
        ),
        await api.client.get("/v1/channels", headers=api.auth(ADMIN_KEY)),
    ]
    assert [r.status_code for r in responses] == [201, 422, 422, 200]
    out, err = capfd.readouterr()
    for secret in secrets:
        for response in responses:
            assert secret not in response.text
        assert secret not in out
        assert secret not in err


TG_TOKEN = "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def telegram_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "platform": "telegram",
        "name": "bot",
        "account_id": "123456",
        "credentials": {"bot_token": TG_TOKEN, "secret_token": "tg-secret"},
    }
    body.update(overrides)
    return body


def twilio_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "platform": "twilio",
        "name": "sms",
        "account_id": "+15551234567",
        "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": "twilio-token"},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("body", "previous", "required"),
    [
        (whatsapp_body(), "previous_app_secret", "access_token"),
        (telegram_body(), "previous_secret_token", "secret_token"),
        (twilio_body(), "previous_auth_token", "account_sid"),
    ],
)
async def test_rotation_finishes_by_removing_the_previous_secret(
    api: RunningApp, body: dict[str, object], previous: str, required: str
) -> None:
    created = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    assert created.status_code == 201, created.text
    url = f"/v1/channels/{created.json()['id']}"
    rotating = await api.client.patch(
        url, json={"credentials": {previous: "old-secret"}}, headers=api.auth(ADMIN_KEY)
    )
    assert rotating.status_code == 200, rotating.text
    assert previous in rotating.json()["credentials_set"]

    finished = await api.client.patch(
        url, json={"credentials": {previous: None}}, headers=api.auth(ADMIN_KEY)
    )
    assert finished.status_code == 200, finished.text
    assert previous not in finished.json()["credentials_set"]
    assert finished.json()["credentials_set"] == created.json()["credentials_set"]
    stored = await api.client.get(url, headers=api.auth(ADMIN_KEY))
    assert previous not in stored.json()["credentials_set"]
    again = await api.client.patch(
        url, json={"credentials": {previous: None}}, headers=api.auth(ADMIN_KEY)
    )
    assert again.status_code == 200, "removing an absent optional credential is a no-op"

    refused = await api.client.patch(
        url, json={"credentials": {required: None}}, headers=api.auth(ADMIN_KEY)
    )
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert f"credentials.{required}" in message
    assert "cannot be removed" in message
    kept = await api.client.get(url, headers=api.auth(ADMIN_KEY))
    assert kept.json()["credentials_set"] == created.json()["credentials_set"]


async def test_credential_removal_validates_keys_and_empty_is_not_removal(
    api: RunningApp,
) -> None:
    created = (
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    ).json()
    url = f"/v1/channels/{created['id']}"
    unknown = await api.client.patch(
        url, json={"credentials": {"nonsense": None}}, headers=api.auth(ADMIN_KEY)
    )
    assert unknown.status_code == 422
    assert "credentials.nonsense" in unknown.json()["error"]["message"]
    empty = await api.client.patch(
        url, json={"credentials": {"previous_app_secret": ""}}, headers=api.auth(ADMIN_KEY)
    )
    assert empty.status_code == 422
    assert "credentials.previous_app_secret" in empty.json()["error"]["message"]


@pytest.mark.parametrize("field", ["enabled", "name"])
async def test_patch_null_for_a_non_nullable_field_is_422(api: RunningApp, field: str) -> None:
    created = (
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    ).json()
    url = f"/v1/channels/{created['id']}"
    response = await api.client.patch(url, json={field: None}, headers=api.auth(ADMIN_KEY))
    assert response.status_code == 422, response.text
    assert f"{field}: cannot be null" in response.json()["error"]["message"]
    unchanged = await api.client.get(url, headers=api.auth(ADMIN_KEY))
    assert unchanged.json() == created


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"name": ""}, "name: String should have at least 1 character"),
        ({"enabled": "maybe"}, "enabled: Input should be a valid boolean"),
        ({"enabled": 0}, "enabled: Input should be a valid boolean"),  # not read as false
    ],
)
async def test_patch_errors_name_the_field_only(
    api: RunningApp, patch: dict[str, object], message: str
) -> None:
    created = (
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    ).json()
    response = await api.client.patch(
        f"/v1/channels/{created['id']}", json=patch, headers=api.auth(ADMIN_KEY)
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == message


async def test_patch_bot_token_must_belong_to_the_channels_bot(api: RunningApp) -> None:
    created = await api.client.post(
        "/v1/channels", json=telegram_body(), headers=api.auth(ADMIN_KEY)
    )
    assert created.status_code == 201, created.text
    url = f"/v1/channels/{created.json()['id']}"
    other_bot = await api.client.patch(
        url,
        json={"credentials": {"bot_token": "999:BBBBBBBBBBBBBBBBBBBBBBBBBBBB"}},
        headers=api.auth(ADMIN_KEY),
    )
    assert other_bot.status_code == 422
    assert "account_id must be the bot id" in other_bot.json()["error"]["message"]
    same_bot = await api.client.patch(
        url,
        json={"credentials": {"bot_token": "123456:CCCCCCCCCCCCCCCCCCCCCCCCCCCC"}},
        headers=api.auth(ADMIN_KEY),
    )
    assert same_bot.status_code == 200, same_bot.text


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (whatsapp_body(name="Support\u0000IT"), "name"),
        (whatsapp_body(account_id="106540352242922\u0000"), "account_id"),
        (telegram_body(name="\u0000"), "name"),
        (twilio_body(account_id="+1555\u00001234567"), "account_id"),
        (
            whatsapp_body(
                credentials={
                    "access_token": "tok\u0000en",
                    "app_secret": WA_APP_SECRET,
                    "verify_token": WA_VERIFY,
                }
            ),
            "credentials.access_token",
        ),
        (
            twilio_body(credentials={"account_sid": "AC" + "0" * 32, "auth_token": "\u0000"}),
            "credentials.auth_token",
        ),
    ],
)
async def test_nul_characters_are_422_on_create(
    api: RunningApp, body: dict[str, object], where: str
) -> None:
    response = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert where in message
    assert "NUL" in message


async def test_control_characters_in_credentials_are_422(api: RunningApp) -> None:
    """A pasted token with a trailing newline would make every send fail in the HTTP layer."""
    body = whatsapp_body(
        credentials={"access_token": "SEKRIT\n", "app_secret": WA_APP_SECRET, "verify_token": "v"}
    )
    response = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "credentials.access_token" in message
    assert "control characters" in message
    assert "SEKRIT" not in response.text


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"name": "a\u0000b"}, "name"),
        ({"credentials": {"access_token": "a\u0000b"}}, "credentials.access_token"),
        ({"credentials": {"previous_app_secret": "\u0000"}}, "credentials.previous_app_secret"),
    ],
)
async def test_nul_characters_are_422_on_update(
    api: RunningApp, patch: dict[str, object], where: str
) -> None:
    created = (
        await api.client.post("/v1/channels", json=whatsapp_body(), headers=api.auth(ADMIN_KEY))
    ).json()
    url = f"/v1/channels/{created['id']}"
    response = await api.client.patch(url, json=patch, headers=api.auth(ADMIN_KEY))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert where in message
    assert "NUL" in message
    unchanged = await api.client.get(url, headers=api.auth(ADMIN_KEY))
    assert unchanged.json() == created
