"""Long-lived clients shared by the HTTP app and the workers, built at start-up.

``DbSession`` yields a session that is never committed by the dependency: since FastAPI 0.118
a ``yield`` dependency's teardown runs after the response is sent, so committing there would
acknowledge before the data is durable. Endpoints commit explicitly before returning, and
read what they answer *before* the commit: a query after it opens a transaction that stays open
until that teardown, after the response, where a connection lost meanwhile (a database restart)
makes the rollback raise and the server drop the client's keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra import db, kafka
from infra.base_url import BaseUrlPolicy, install_policy
from infra.crypto import SecretBox
from infra.dberrors import DATABASE_ERRORS, kind_name
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


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
    """The request's session. Its teardown runs after the response was sent (see above), so a
    close that fails because the database went away meanwhile (the rollback of a cut
    connection) is logged and dropped: raised there, it would make the server drop the
    keep-alive connection under the client's next request."""
    session = resources.sessionmaker()
    try:
        yield session
    finally:
        try:
            await session.close()
        except DATABASE_ERRORS as exc:
            log.warning("db.session_close_failed", error=kind_name(exc))


DbSession = Annotated[AsyncSession, Depends(_session)]
AppResources = Annotated[Resources, Depends(get_resources)]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Start the shared long-lived clients and close them in reverse order."""
    async with AsyncExitStack() as stack:
        box = SecretBox.from_settings(settings)
        stack.callback(install_policy, install_policy(BaseUrlPolicy.from_settings(settings)))
        engine = db.create_engine(settings)
        stack.push_async_callback(engine.dispose)
        producer = kafka.create_producer(settings)
        stack.push_async_callback(producer.stop)
        try:
            await kafka.connect(settings, producer)
        except Exception as exc:
            # Start anyway: the ingress spools to PostgreSQL while the broker is away, the
            # relays and consumers retry; /readyz says the broker is not reachable.
            log.warning("kafka.unavailable_at_start", error=type(exc).__name__)
            connecting = asyncio.create_task(kafka.keep_connecting(settings, producer))
            stack.push_async_callback(_cancel, connecting)
        yield Resources(
            settings=settings,
            engine=engine,
            sessionmaker=db.create_sessionmaker(engine),
            producer=producer,
            secret_box=box,
        )
