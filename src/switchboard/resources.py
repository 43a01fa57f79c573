"""Long-lived clients shared by the HTTP app and the workers, built at start-up.

``DbSession`` yields a session that is never committed by the dependency: since FastAPI 0.118
a ``yield`` dependency's teardown runs after the response is sent, so committing there would
acknowledge before the data is durable. Endpoints commit explicitly before returning.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.crypto import SecretBox
from switchboard.settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    producer: AIOKafkaProducer
    secret_box: SecretBox

    @property
    def public_base_url(self) -> str:
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        return f"http://{self.settings.http_host}:{self.settings.http_port}"


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def _session(
    resources: Annotated[Resources, Depends(get_resources)],
) -> AsyncIterator[AsyncSession]:
    async with resources.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]
AppResources = Annotated[Resources, Depends(get_resources)]
