"""The delivery worker: claim due messages of the channels this process owns, pace, send,
record every outcome with its lifecycle event. docs/outbox-delivery.md tells the whole story.

One ``DeliveryWorker`` per process keeps the lifecycle and wires its collaborators, each with
its own state and tests; four loops run on one event loop:

* **ownership** (every ``outbox_channel_renew_interval``): ``ownership.ChannelOwnership``
  holds a fair share of the active channels. Only the owner sends on a channel, so the
  in-process ``Pacer`` is a global limiter.
* **claim**: ``claims.Claimer`` claims, per owned channel, what the pacer will grant within
  ``outbox_claim_lookahead`` (bounded by ``outbox_max_in_flight``, counted by
  ``claims.InFlight``); ``sending.Dispatcher`` paces each channel's claims and sends them
  through the one pooled HTTP client.
* **writer**: ``outcomes.OutcomeWriter`` batches outcomes (``outbox_flush_interval``) and
  writes them in one transaction per batch with their lifecycle events and channel throttles.
* **maintenance** (every ``outbox_maintenance_interval``): ``maintenance.Maintenance``
  recovers expired message leases, sweeps rows past ``not_after``, settles early receipts.

On ``stop``: claiming stops, claims still waiting for the pacer are released (back to their
state, due now), sends already on the wire get ``outbox_shutdown_deadline`` to finish (those
cut are recorded as an ``interrupted`` attempt and retried), outcomes are flushed, channel
leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TypeVar

from infra.aio import abandon, first_of
from infra.logging import get_logger
from infra.resources import Resources
from outbox.claims import SAFETY, Claimer, InFlight
from outbox.delivery import interrupted_result
from outbox.maintenance import Maintenance
from outbox.outcomes import DB_ERRORS, OutcomeWriter, WorkerStats
from outbox.ownership import ChannelOwnership
from outbox.platforms.http import HttpClient, make_http_client
from outbox.ratelimit import Pacer
from outbox.retry import RetryPolicy
from outbox.sending import Dispatcher

__all__ = ["DeliveryWorker", "WorkerStats", "default_owner"]

log = get_logger(__name__)

_STOP_GRACE = 1.0
"""Seconds a claim statement in flight when ``stop`` is set gets to finish. Past it (a database
that stopped answering) it is abandoned; rows it may have claimed are recovered after their
lease, like a dead worker's."""

_T = TypeVar("_T")


class _Abandoned(Exception):
    """A database call given up on because the worker is stopping (see ``_until_stopped``)."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class DeliveryWorker:
    """Deliver queued messages until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        resources: Resources,
        *,
        client: HttpClient | None = None,
        owner: str | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = resources.settings
        self._settings = s
        self.owner = owner or s.outbox_worker_id or default_owner()
        self._client = client
        self._http: HttpClient | None = client
        self._clock = clock
        self._timeout = s.outbox_http_timeout
        self._lease = max(s.outbox_message_lease, s.outbox_http_timeout + 2 * SAFETY)
        self._wake = asyncio.Event()
        self.stats = WorkerStats()
        pacer = Pacer(clock)
        self.in_flight = InFlight()
        self.writer = OutcomeWriter(
            resources,
            owner=self.owner,
            policy=policy
            or RetryPolicy(schedule=tuple(s.outbox_retry_schedule), jitter=s.outbox_retry_jitter),
            in_flight=self.in_flight,
            stats=self.stats,
            on_written=self._wake.set,
            clock=clock,
        )
        self.ownership = ChannelOwnership(
            resources,
            owner=self.owner,
            in_flight=self.in_flight,
            pacer=pacer,
            release_waiting=lambda channel: self.dispatcher.release_queue(channel),
            clock=clock,
        )
        self.dispatcher = Dispatcher(
            pacer=pacer,
            pacing=s.outbox_pacing_enabled,
            ownership=self.ownership,
            writer=self.writer,
            http=self._client_in_use,
            timeout=self._timeout,
            clock=clock,
        )
        self.claimer = Claimer(
            resources,
            owner=self.owner,
            lease=self._lease,
            in_flight=self.in_flight,
            ownership=self.ownership,
            dispatcher=self.dispatcher,
            writer=self.writer,
            pacer=pacer,
            stats=self.stats,
            clock=clock,
        )
        self.maintenance = Maintenance(
            resources, owner=self.owner, stats=self.stats, on_recovered=self._wake.set
        )

    def _client_in_use(self) -> HttpClient:
        assert self._http is not None
        return self._http

    async def maintain(self) -> tuple[int, int]:
        """One maintenance round (``Maintenance.maintain``): (recovered, swept)."""
        return await self.maintenance.maintain()

    async def settle_receipts(self) -> tuple[int, int]:
        """Early receipts (``Maintenance.settle_receipts``): (applied, expired)."""
        return await self.maintenance.settle_receipts()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if self._lease != self._settings.outbox_message_lease:
            log.warning("outbox.lease_raised", lease=self._lease, timeout=self._timeout)
        if self._http is None:
            self._http = make_http_client(
                self._timeout, max_connections=self._settings.outbox_max_in_flight
            )
        log.info(
            "outbox.worker_started", owner=self.owner, pacing=self._settings.outbox_pacing_enabled
        )
        writer = asyncio.create_task(self.writer.run(), name="outbox-writer")
        background = [
            asyncio.create_task(self._ownership_loop(stop), name="outbox-ownership"),
            asyncio.create_task(self._maintenance_loop(stop), name="outbox-maintenance"),
        ]
        try:
            await self._claim_loop(stop)
        finally:
            self.dispatcher.stopping = True
            self.writer.stopping = True
            for task in background:  # they stop on their own at ``stop``, even mid-statement
                task.cancel()
            _, stuck = await asyncio.wait(background, timeout=_STOP_GRACE)
            for task in stuck:
                abandon(task)
            await self._drain()
            self.writer.close()
            # The database steps of the shutdown share one deadline: a database that stopped
            # answering must not hold the process (the rows keep their leases, the channel
            # leases and the heartbeat expire on their own).
            give_up = self._clock() + self._settings.outbox_shutdown_deadline
            try:
                await self._within(writer, give_up)
            except _Abandoned:
                log.error("outbox.outcomes_lost", rows=len(self.in_flight))
            channels = self.ownership.give_up_all()
            try:
                await self._within(self.ownership.release(channels), give_up)
                await self._within(self.ownership.retire(), give_up)
            except _Abandoned:
                log.warning("outbox.release_abandoned", channels=len(channels))
            if self._client is None:
                await self._http.close()
            log.info("outbox.worker_stopped", owner=self.owner, **asdict(self.stats))

    async def _drain(self) -> None:
        """Release claims waiting for the pacer; give sends on the wire the deadline."""
        await self.dispatcher.stop(list(self.ownership.channels.values()))
        claims = list(self.in_flight)
        tasks = [c.task for c in claims if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._settings.outbox_shutdown_deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finish = self.writer.finish
        for claim in claims:  # tasks cancelled before they ever ran
            if not claim.finished:
                if claim.sending:
                    finish(claim, "result", interrupted_result(0.0), datetime.now(UTC))
                else:
                    finish(claim, "release")

    async def _until_stopped(
        self, stop: asyncio.Event, call: Awaitable[_T], grace: float = 0.0
    ) -> _T:
        """Await ``call`` unless ``stop`` is set first: it then gets ``grace`` seconds more and
        is abandoned (``_Abandoned``). A statement on a connection to a database that stopped
        answering never returns, and its cancellation's cleanup (closing that connection) can
        itself take seconds, so it is not waited for."""
        task = asyncio.ensure_future(call)
        try:
            await first_of(task, stop)
        except BaseException:
            abandon(task)
            raise
        return await self._within(task, self._clock() + grace)

    async def _within(self, call: Awaitable[_T], give_up: float) -> _T:
        """Await ``call`` until ``give_up`` (monotonic); past it, abandon it (``_Abandoned``)."""
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait((task,), timeout=max(0.0, give_up - self._clock()))
        except BaseException:
            abandon(task)
            raise
        if not task.done():
            abandon(task)
            raise _Abandoned
        return task.result()

    async def _ownership_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.outbox_channel_renew_interval
        while not stop.is_set():
            try:
                if await self._until_stopped(stop, self.ownership.refresh()):
                    self._wake.set()
            except _Abandoned:
                return
            except DB_ERRORS as exc:
                log.warning("outbox.ownership_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.ownership_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        async def forward_stop() -> None:
            await stop.wait()
            self._wake.set()

        forwarder = asyncio.create_task(forward_stop())
        poll = self._settings.outbox_poll_interval
        try:
            while not stop.is_set():
                self._wake.clear()
                budgets = self.claimer.budgets()
                claimed = 0
                if budgets:
                    try:
                        claimed = await self._until_stopped(
                            stop, self.claimer.claim(budgets), grace=_STOP_GRACE
                        )
                    except _Abandoned:
                        log.warning("outbox.claim_abandoned", channels=len(budgets))
                        return
                    except DB_ERRORS as exc:
                        log.warning("outbox.claim_failed", error=type(exc).__name__)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), poll * 10)
                        continue
                if claimed and claimed >= sum(budgets.values()):
                    continue  # there may be more
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), poll)
        finally:
            forwarder.cancel()

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.outbox_maintenance_interval
        while not stop.is_set():
            try:
                await self._until_stopped(stop, self.maintain())
            except _Abandoned:
                return
            except DB_ERRORS as exc:
                log.warning("outbox.maintenance_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.maintenance_crashed")
            try:
                await self._until_stopped(stop, self.settle_receipts())
            except _Abandoned:
                return
            except DB_ERRORS as exc:  # e.g. a deadlock with the receipts consumer: next round
                log.warning("outbox.settle_receipts_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.settle_receipts_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
