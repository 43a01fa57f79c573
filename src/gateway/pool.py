"""The gateway's own asyncpg pool (the hot path skips the ORM).

Commits do not wait for the WAL flush unless a spool row is in them (``synchronous_commit =
off``, see ``gateway.service``); the pool skips asyncpg's reset query on release
(``_keep_session``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from infra.dberrors import DATABASE_ERRORS
from infra.settings import Settings


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


@contextlib.asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url.get_secret_value()),
        min_size=0,
        max_size=settings.gateway_db_pool_size,
        timeout=settings.gateway_db_timeout_seconds,
        # Every statement of the hot path (BEGIN, claim, spool, COMMIT) gives up after the
        # gateway's database timeout; maintenance statements pass their own (repository).
        command_timeout=settings.gateway_db_timeout_seconds,
        # Commits do not wait for the WAL flush unless a spool row is in them (see accept).
        server_settings={"synchronous_commit": "off"},
        reset=_keep_session,
    )
    try:
        yield pool
    finally:
        await pool.close()


def terminate(conn: asyncpg.Connection) -> None:
    """Drop a pooled connection at once, if it is still attached (asyncpg terminates one
    whose reset failed and detaches it: then there is nothing left to do)."""
    with contextlib.suppress(*DATABASE_ERRORS):
        conn.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset``: asyncpg still rolls back an open transaction on release; we skip its
    default reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL), a round trip per
    batch. The gateway never leaves session state behind: ``SET LOCAL`` and
    ``pg_try_advisory_xact_lock`` only (transaction-scoped), no LISTEN, no cursors."""
