"""``send_rate_per_second`` is bounded at the API (issue 9, D8): 0.01 to 10,000 per second."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.integration.test_channels_api import whatsapp_body
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    async with running_app(settings) as running:
        yield running


@pytest.mark.parametrize("rate", [1e-300, 0.009, 0, -1, 10_000.5, 1e300])
async def test_rates_out_of_range_are_422_on_create_and_update(
    api: RunningApp, rate: float
) -> None:
    auth = api.auth(ADMIN_KEY)
    refused = await api.client.post(
        "/v1/channels", json=whatsapp_body(send_rate_per_second=rate), headers=auth
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"]
    created = await api.client.post("/v1/channels", json=whatsapp_body(), headers=auth)
    assert created.status_code == 201, created.text
    url = f"/v1/channels/{created.json()['id']}"
    patched = await api.client.patch(url, json={"send_rate_per_second": rate}, headers=auth)
    assert patched.status_code == 422, patched.text
    assert (await api.client.get(url, headers=auth)).json()["send_rate_per_second"] is None


@pytest.mark.parametrize("rate", [0.01, 1, 80, 10_000])
async def test_rates_in_range_are_accepted(api: RunningApp, rate: float) -> None:
    auth = api.auth(ADMIN_KEY)
    created = await api.client.post(
        "/v1/channels", json=whatsapp_body(send_rate_per_second=rate), headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["send_rate_per_second"] == rate
