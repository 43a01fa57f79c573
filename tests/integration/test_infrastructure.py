from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra import kafka
from infra.settings import Settings
from switchboard import migrate
from tests.support import running_app

pytestmark = pytest.mark.integration


async def test_record_round_trips_through_the_real_broker(settings: Settings) -> None:
    created = await kafka.ensure_topics(settings)
    component_topics = [settings.topic(t) for t in kafka.COMPONENT_TOPICS]
    assert sorted(created) == sorted([*settings.topics.values(), *component_topics])
    assert await kafka.ensure_topics(settings) == []

    topic = settings.topic("inbound.v1")
    producer = kafka.create_producer(settings)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait(
                topic, f"v{i}".encode(), key=b"conv-1", headers=kafka.CE_HEADERS
            )
            for i in range(3)
        ]
    finally:
        await producer.stop()
    assert len({m.partition for m in sent}) == 1, "one key lands on one partition"

    consumer = kafka.create_consumer(settings, topic, group_id=f"g-{uuid.uuid4().hex}")
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(15):
            while len(got) < 3:
                batch = await consumer.getmany(timeout_ms=500)
                got += [r.value for records in batch.values() for r in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == [b"v0", b"v1", b"v2"]


async def test_health_and_readiness(settings: Settings, engine: AsyncEngine) -> None:
    async with running_app(settings) as api:
        assert (await api.client.get("/healthz")).text == "ok"
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
        assert (await api.client.get("/docs")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200


async def test_framework_errors_use_the_error_shape(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with running_app(settings) as api:
        missing = await api.client.get("/v1/nothing-here")
        wrong_method = await api.client.put("/healthz")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["allow"]


async def test_readiness_fails_when_the_broker_is_unreachable(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with running_app(settings) as api:
        api.resources.settings = settings.model_copy(
            update={"kafka_bootstrap_servers": "127.0.0.1:1"}
        )
        ready = await api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["kafka"].startswith("unavailable")


def test_migrations_are_reversible(database_url: str) -> None:
    """Upgrade, downgrade to base and upgrade again on a scratch database."""
    url = make_url(database_url)
    scratch = f"{url.database}_mig"

    async def admin(statement: str) -> None:
        eng = create_async_engine(
            url.set(database="postgres").render_as_string(hide_password=False),
            isolation_level="AUTOCOMMIT",
        )
        async with eng.connect() as conn:
            await conn.execute(text(statement))
        await eng.dispose()

    async def tables(db_url: str) -> set[str]:
        eng = create_async_engine(db_url)
        async with eng.connect() as conn:
            rows = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            names = {r[0] for r in rows}
        await eng.dispose()
        return names

    asyncio.run(admin(f'CREATE DATABASE "{scratch}"'))
    try:
        scratch_url = url.set(database=scratch).render_as_string(hide_password=False)
        cfg = Settings(database_url=SecretStr(scratch_url))
        migrate.upgrade(cfg)
        full = asyncio.run(tables(scratch_url))
        assert {"channels", "api_keys"} <= full
        migrate.downgrade(cfg, "base")
        assert asyncio.run(tables(scratch_url)) == {"alembic_version"}
        migrate.upgrade(cfg)
        assert asyncio.run(tables(scratch_url)) == full
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    """Alembic autogenerate finds nothing to do: every model change has its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import switchboard.models  # noqa: F401
    from infra.db import Base
    from switchboard.migrate import import_service_models

    import_service_models()

    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ: {changes}"
