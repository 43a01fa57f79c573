"""One replica at a time: periodic work guarded by a session-level PostgreSQL advisory lock.

``run_as_leader`` keeps one dedicated connection (autocommit) holding
``pg_try_advisory_lock(key)`` for as long as this process does the work; the other replicas try
again every interval and call ``on_follower`` meanwhile. The lock is sticky (the leader keeps
it until it stops or its connection fails), so sampled metrics do not hop between replicas.
A lost connection releases the lock in PostgreSQL at once; the lock is released explicitly
before a healthy connection goes back to the pool (a pooled connection would keep it).

Work runs next to the process's real work (the outbox worker's task group): any failure of a
round is logged and the next round starts over; nothing here ends the task but ``stop``.

Log events: ``leader.acquired``, ``leader.failed`` (database away, round timed out),
``leader.work_crashed`` (a bug), all with ``role=<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.logging import get_logger

log = get_logger(__name__)

Work = Callable[[AsyncConnection], Awaitable[None]]

_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)


class AdvisoryLeader:
    """Holds (or not) the session-level advisory lock ``key`` on a connection of its own."""

    def __init__(self, engine: AsyncEngine, key: int, name: str) -> None:
        self._engine = engine
        self._key = key
        self.name = name
        self._conn: AsyncConnection | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    async def hold(self) -> AsyncConnection | None:
        """The lock's connection if this process leads (taking the lock if it is free)."""
        if self._conn is not None:
            return self._conn
        conn = await self._engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key})
        except BaseException:
            await _discard(conn)
            raise
        if not got:
            await conn.close()
            return None
        self._conn = conn
        log.info("leader.acquired", role=self.name)
        return conn

    async def drop(self) -> None:
        """Give up after a failure: the connection is discarded (PostgreSQL frees the lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await _discard(conn)

    async def release(self) -> None:
        """Unlock and return the connection to the pool (or discard it if that fails)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(5):
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                await conn.close()
        except BaseException as exc:  # cancelled too: never pool a connection holding the lock
            await _discard(conn)
            if not isinstance(exc, _ERRORS):
                raise


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


async def run_as_leader(
    leader: AdvisoryLeader,
    work: Work,
    *,
    interval: float,
    stop: asyncio.Event,
    on_follower: Callable[[], None] = lambda: None,
    round_timeout: float = 60.0,
) -> None:
    """Every ``interval`` seconds until ``stop``: ``work(conn)`` if this process leads, else
    ``on_follower()``. A failing round (database away, ``round_timeout`` exceeded) gives the lock up
    and is logged; the next round starts over."""
    try:
        while not stop.is_set():
            try:
                conn = await leader.hold()
                if conn is None:
                    on_follower()
                else:
                    async with asyncio.timeout(round_timeout):
                        await work(conn)
            except _ERRORS as exc:
                log.warning("leader.failed", role=leader.name, error=type(exc).__name__)
                await leader.drop()
                on_follower()
            except Exception as exc:  # a bug here must not stop the process's real work
                log.error("leader.work_crashed", role=leader.name, error=repr(exc))
                await leader.drop()
                on_follower()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await leader.release()
