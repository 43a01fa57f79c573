"""The delivery worker: claim due messages of the channels this process owns, pace, send,
record every outcome with its lifecycle event. docs/outbox-delivery.md tells the whole story.

One ``DeliveryWorker`` per process, four loops on one event loop:

* **ownership** (every ``outbox_channel_renew_interval``): heartbeat, then hold a fair share
  of the active channels (``outbox.delivery.plan_ownership``: ceil(active / live workers)),
  renewing held ones with work, taking free ones up to the share (and any channel left
  unheld past ``outbox_channel_grace``), releasing idle and surplus ones. Only the owner
  sends on a channel, so the in-process ``Pacer`` is a global limiter.
* **claim**: for each owned channel, claim up to "what the pacer will grant within
  ``outbox_claim_lookahead``" due conversation heads in one statement (bounded by
  ``outbox_max_in_flight``); each claim becomes a task that waits for the pacer, then sends
  through the one pooled HTTP client.
* **writer**: outcomes are batched (``outbox_flush_interval``) and written in one transaction
  per batch: row states, attempts, lifecycle events (transactional outbox) and channel
  throttles. A claim counts against the in-flight bound until its outcome is committed.
* **maintenance** (every ``outbox_maintenance_interval``): expired message leases (a dead
  worker's claims) back to ``retrying``; waiting rows past ``not_after`` to ``dead``; held
  early receipts applied once their message's platform id is recorded (``outbox.receipts``).

On ``stop``: claiming stops, claims still waiting for the pacer are released (back to their
state, due now), sends already on the wire get ``outbox_shutdown_deadline`` to finish (those
cut are recorded as an ``interrupted`` attempt and retried), outcomes are flushed, channel
leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import orjson
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from outbox import leases, receipts
from outbox.delivery import (
    EXPIRED,
    LEASE_EXPIRED,
    ClaimedMessage,
    Decision,
    channel_rate,
    decide,
    expired_decision,
    interrupted_result,
    paced_limits,
    plan_ownership,
)
from outbox.events import build_event
from outbox.models import TERMINAL_STATES, OutboxAttempt, OutboxEvent
from outbox.platforms import SENDERS, ChannelConfig, SendResult, UnsupportedContent
from outbox.platforms.base import HttpClient, make_http_client
from outbox.ratelimit import Limit, Pacer, Rate, channel_key, recipient_key
from outbox.retry import RetryPolicy
from switchboard.aio import abandon, first_of
from switchboard.channels.service import load_with_secrets
from switchboard.logging import get_logger
from switchboard.resources import Resources

__all__ = ["DeliveryWorker", "WorkerStats", "default_owner"]

log = get_logger(__name__)

_SAFETY = 1.0
"""Seconds: no send starts later than this before its message or channel lease ends."""
_CHANNEL_REFRESH = 30.0
"""Seconds: how often an owned channel's settings (rate, credentials, base URL) are re-read."""
_DEFAULT_THROTTLE_PAUSE = 1.0
_MAINTENANCE_BATCH = 500
_DB_ERRORS = (SQLAlchemyError, OSError)
_STOP_GRACE = 1.0
"""Seconds a claim statement in flight when ``stop`` is set gets to finish. Past it (a database
that stopped answering) it is abandoned; rows it may have claimed are recovered after their
lease, like a dead worker's."""

_T = TypeVar("_T")


class _Abandoned(Exception):
    """A database call given up on because the worker is stopping (see ``_until_stopped``)."""


OutcomeKind = Literal["result", "release", "expired"]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class WorkerStats:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    recovered: int = 0
    """Other workers' expired claims this worker put back (possible duplicates)."""
    swept: int = 0
    """Rows that expired (``not_after``) while waiting."""
    stale: int = 0
    """Outcomes not written because the row's lease had been taken away meanwhile."""
    claim_queries: int = 0
    write_batches: int = 0


@dataclass(slots=True)
class _Channel:
    config: ChannelConfig
    rate: Rate
    limit: Limit
    per_second: float
    valid_until: float
    loaded_at: float
    queue: deque[_Claim] = field(default_factory=deque)
    """Claims waiting for the pacer, in claim order (they count against the claim budget)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dispatcher: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False)
class _Claim:
    message: ClaimedMessage
    deadline: float
    """Monotonic: no send of this claim starts after this (its lease would be too short)."""
    limits: tuple[Limit, ...] = ()
    sending: bool = False
    finished: bool = False
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Outcome:
    kind: OutcomeKind
    claim: _Claim
    result: SendResult | None = None
    started_at: datetime | None = None


@dataclass(slots=True)
class _Transition:
    message: ClaimedMessage
    decision: Decision
    attempt: int


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
        self._resources = resources
        self._settings = s
        self.owner = owner or s.outbox_worker_id or default_owner()
        self._client = client
        self._http: HttpClient | None = client
        self._policy = policy or RetryPolicy(
            schedule=tuple(s.outbox_retry_schedule), jitter=s.outbox_retry_jitter
        )
        self._clock = clock
        self._pacer = Pacer(clock)
        self._pacing = s.outbox_pacing_enabled
        self._max_in_flight = s.outbox_max_in_flight
        self._claim_batch = s.outbox_claim_batch
        self._timeout = s.outbox_http_timeout
        self._min_claim = max(1, min(self._claim_batch, self._max_in_flight) // 8)
        self._lease = max(s.outbox_message_lease, s.outbox_http_timeout + 2 * _SAFETY)
        self._events_topic = s.topic("outbound.events.v1")
        self._claims: dict[uuid.UUID, _Claim] = {}
        self._channels: dict[uuid.UUID, _Channel] = {}
        self._throttles: dict[uuid.UUID, float] = {}
        self._unloadable: dict[uuid.UUID, float] = {}
        """Channels whose settings could not be loaded → monotonic time to try them again."""
        self._outcomes: asyncio.Queue[_Outcome | None] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stopping = False
        self.stats = WorkerStats()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if self._lease != self._settings.outbox_message_lease:
            log.warning("outbox.lease_raised", lease=self._lease, timeout=self._timeout)
        if self._http is None:
            self._http = make_http_client(self._timeout, max_connections=self._max_in_flight)
        log.info("outbox.worker_started", owner=self.owner, pacing=self._pacing)
        writer = asyncio.create_task(self._writer_loop(), name="outbox-writer")
        background = [
            asyncio.create_task(self._ownership_loop(stop), name="outbox-ownership"),
            asyncio.create_task(self._maintenance_loop(stop), name="outbox-maintenance"),
        ]
        try:
            await self._claim_loop(stop)
        finally:
            self._stopping = True
            for task in background:  # they stop on their own at ``stop``, even mid-statement
                task.cancel()
            _, stuck = await asyncio.wait(background, timeout=_STOP_GRACE)
            for task in stuck:
                abandon(task)
            await self._drain()
            self._outcomes.put_nowait(None)
            # The database steps of the shutdown share one deadline: a database that stopped
            # answering must not hold the process (the rows keep their leases, the channel
            # leases and the heartbeat expire on their own).
            give_up = self._clock() + self._settings.outbox_shutdown_deadline
            try:
                await self._within(writer, give_up)
            except _Abandoned:
                log.error("outbox.outcomes_lost", rows=len(self._claims))
            channels = list(self._channels)
            self._channels.clear()
            try:
                await self._within(self._release_channels(channels), give_up)
                await self._within(self._retire(), give_up)
            except _Abandoned:
                log.warning("outbox.release_abandoned", channels=len(channels))
            if self._client is None:
                await self._http.close()
            log.info("outbox.worker_stopped", owner=self.owner, **asdict(self.stats))

    async def _drain(self) -> None:
        """Release claims waiting for the pacer; give sends on the wire the deadline."""
        dispatchers = [c.dispatcher for c in self._channels.values() if c.dispatcher is not None]
        for task in dispatchers:
            task.cancel()
        await asyncio.gather(*dispatchers, return_exceptions=True)
        for channel in self._channels.values():
            self._release_queue(channel)
        claims = list(self._claims.values())
        tasks = [c.task for c in claims if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._settings.outbox_shutdown_deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for claim in claims:  # tasks cancelled before they ever ran
            if not claim.finished:
                if claim.sending:
                    self._finish(claim, "result", interrupted_result(0.0), datetime.now(UTC))
                else:
                    self._finish(claim, "release")

    def _release_queue(self, channel: _Channel) -> None:
        while channel.queue:
            self._finish(channel.queue.popleft(), "release")

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

    # ---- channel ownership -------------------------------------------------------------------

    async def _ownership_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.outbox_channel_renew_interval
        while not stop.is_set():
            try:
                await self._until_stopped(stop, self._refresh_ownership())
            except _Abandoned:
                return
            except _DB_ERRORS as exc:
                log.warning("outbox.ownership_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.ownership_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def _refresh_ownership(self) -> None:
        s = self._settings
        started = self._clock()
        busy = {c.message.channel_id for c in self._claims.values()}
        async with self._resources.sessionmaker() as session, session.begin():
            live = await leases.heartbeat(session, self.owner, s.outbox_channel_lease)
            views = await leases.survey_channels(
                session, s.outbox_channel_renew_interval, s.outbox_channel_grace
            )
            plan = plan_ownership(
                self.owner, held=self._channels, busy=busy, views=views, live_workers=live
            )
            self._unloadable = {c: t for c, t in self._unloadable.items() if t > started}
            take = [c for c in plan.take if c not in self._unloadable]
            grants = await leases.acquire_channels(
                session, self.owner, sorted(plan.keep + take), s.outbox_channel_lease
            )
            await leases.release_channels(session, self.owner, plan.release, s.outbox_handover_gap)
        idle = plan.release
        if plan.surplus:
            log.info(
                "outbox.channels_rebalanced",
                owner=self.owner,
                released=[str(c) for c in plan.surplus],
                share=plan.share,
                workers=live,
            )
        granted = {g.channel_id: g for g in grants}
        for cid in list(self._channels):
            if cid not in granted:
                if cid not in idle:
                    log.warning("outbox.channel_lost", channel_id=str(cid), owner=self.owner)
                lost = self._channels.pop(cid)
                self._release_queue(lost)  # waiting claims go back for the next owner
                lost.arrived.set()
        new = False
        unusable: list[uuid.UUID] = []
        for grant in grants:
            cid = grant.channel_id
            channel = self._channels.get(cid)
            if channel is None or started - channel.loaded_at > _CHANNEL_REFRESH:
                loaded = await self._try_load_channel(cid, started, held=channel is not None)
                if channel is None:
                    if loaded is None:  # not usable here: do not hold its lease
                        unusable.append(cid)
                        continue
                    channel = self._channels[cid] = loaded
                    new = True
                    if grant.throttled_for > 0 and self._pacing:
                        self._pacer.penalize(channel.limit.key, retry_after=grant.throttled_for)
                    log.info("outbox.channel_acquired", channel_id=str(cid))
                elif loaded is None:  # keep the settings it was sending with; retry later
                    channel.loaded_at = started
                else:  # in place: claim tasks hold a reference
                    channel.config = loaded.config
                    channel.rate = loaded.rate
                    channel.limit = loaded.limit
                    channel.per_second = loaded.per_second
                    channel.loaded_at = started
            channel.valid_until = started + s.outbox_channel_lease
        if new:
            self._wake.set()
        await self._release_channels(unusable)

    async def _try_load_channel(
        self, channel_id: uuid.UUID, now: float, *, held: bool
    ) -> _Channel | None:
        """``_load_channel``, but one channel that cannot be loaded (e.g. secrets the configured
        keys cannot decrypt after a key-rotation mistake) must not stop the others' round: it
        is logged and skipped, and not taken again here for ``_CHANNEL_REFRESH`` seconds, so a
        worker that can load it (or the not_after sweep) gets its messages."""
        try:
            return await self._load_channel(channel_id, now)
        except Exception as exc:
            log.error(
                "outbox.channel_load_failed",
                channel_id=str(channel_id),
                error=type(exc).__name__,
                held=held,
            )
            self._unloadable[channel_id] = now + _CHANNEL_REFRESH
            return None

    async def _load_channel(self, channel_id: uuid.UUID, now: float) -> _Channel | None:
        async with self._resources.sessionmaker() as session:
            row = await load_with_secrets(session, self._resources.secret_box, channel_id)
        if row is None or not row.enabled:
            return None
        rate = channel_rate(row.platform, row.send_rate_per_second)
        margin = self._settings.outbox_pacing_margin
        paced = Rate(rate.count, rate.per * (1.0 + margin))
        return _Channel(
            config=ChannelConfig(
                id=str(row.id),
                platform=row.platform,
                account_id=row.account_id,
                credentials=row.credentials,
                api_base_url=row.api_base_url,
            ),
            rate=rate,
            limit=Limit(channel_key(str(row.id)), paced),
            per_second=rate.count / rate.per,
            valid_until=now,
            loaded_at=now,
        )

    async def _release_channels(self, ids: list[uuid.UUID]) -> None:
        if not ids:
            return
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                await leases.release_channels(
                    session, self.owner, ids, self._settings.outbox_handover_gap
                )
        except _DB_ERRORS as exc:  # the leases expire on their own
            log.warning("outbox.release_failed", error=type(exc).__name__)

    async def _retire(self) -> None:
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                await leases.retire(session, self.owner)
        except _DB_ERRORS as exc:  # the heartbeat expires on its own
            log.warning("outbox.retire_failed", error=type(exc).__name__)

    # ---- claiming ----------------------------------------------------------------------------

    def _budgets(self) -> dict[uuid.UUID, int]:
        free = self._max_in_flight - len(self._claims)
        if self._claims and free < self._min_claim:
            return {}  # wait for a worthwhile batch: the round trip costs as much as 50 rows
        now = self._clock()
        budgets: dict[uuid.UUID, int] = {}
        lookahead = self._settings.outbox_claim_lookahead
        for cid, channel in self._channels.items():
            if free <= 0:
                break
            if channel.valid_until - _SAFETY <= now:
                continue
            if self._pacing:
                if self._pacer.peek_delay(channel.limit, now) > lookahead:
                    continue  # throttled: claim nothing that would only wait
                want = max(1, math.ceil(channel.per_second * lookahead)) - len(channel.queue)
            else:
                want = self._claim_batch
            n = min(want, free, self._claim_batch)
            if n > 0:
                budgets[cid] = n
                free -= n
        return budgets

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        async def forward_stop() -> None:
            await stop.wait()
            self._wake.set()

        forwarder = asyncio.create_task(forward_stop())
        poll = self._settings.outbox_poll_interval
        try:
            while not stop.is_set():
                self._wake.clear()
                budgets = self._budgets()
                claimed = 0
                if budgets:
                    try:
                        claimed = await self._until_stopped(
                            stop, self._claim(budgets), grace=_STOP_GRACE
                        )
                    except _Abandoned:
                        log.warning("outbox.claim_abandoned", channels=len(budgets))
                        return
                    except _DB_ERRORS as exc:
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

    async def _claim(self, budgets: dict[uuid.UUID, int]) -> int:
        async with self._resources.sessionmaker() as session, session.begin():
            rows = await leases.claim_messages(session, self.owner, budgets, self._lease)
        deadline = self._clock() + self._lease - self._timeout - _SAFETY
        margin = self._settings.outbox_pacing_margin
        pair = self._settings.outbox_whatsapp_pair_interval
        for row in rows:
            message = ClaimedMessage.from_row(row)
            claim = _Claim(message, deadline)
            self._claims[message.id] = claim
            channel = self._channels.get(message.channel_id)
            if channel is None:  # lost while the claim was in flight
                self._finish(claim, "release")
            elif not self._pacing:
                claim.task = asyncio.create_task(self._deliver(claim, channel))
            else:
                claim.limits = paced_limits(
                    message, channel.rate, margin=margin, whatsapp_pair_interval=pair
                )
                channel.queue.append(claim)
                channel.arrived.set()
                if channel.dispatcher is None:
                    channel.dispatcher = asyncio.create_task(
                        self._dispatch(channel), name=f"outbox-pace-{message.channel_id}"
                    )
        self.stats.claimed += len(rows)
        self.stats.claim_queries += 1
        return len(rows)

    # ---- pacing and sending ------------------------------------------------------------------

    async def _dispatch(self, channel: _Channel) -> None:
        """One pacer loop per owned channel: grant its queued claims in claim order (a claim
        whose conversation limit is not ready lets the next one go first), start a send task
        per grant. No task exists per waiting claim, so a grant is followed by its send
        without a burst of other work in between."""
        pacer = self._pacer
        try:
            while channel.queue:
                now = self._clock()
                if (
                    self._stopping
                    or now > channel.valid_until - _SAFETY
                    or self._channels.get(uuid.UUID(channel.config.id)) is not channel
                ):
                    self._release_queue(channel)
                    return
                pick: _Claim | None = None
                soonest = math.inf
                expired: list[_Claim] = []
                for claim in channel.queue:
                    if now > claim.deadline:
                        expired.append(claim)
                        continue
                    wait = pacer.peek_delay(claim.limits[1:], now) if len(claim.limits) > 1 else 0.0
                    if wait <= 0:
                        pick = claim
                        break
                    soonest = min(soonest, wait)
                for claim in expired:
                    channel.queue.remove(claim)
                    self._finish(claim, "release")
                if pick is None:
                    if channel.queue:
                        channel.arrived.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(channel.arrived.wait(), soonest)
                    continue
                delay = pacer.peek_delay(pick.limits, now)
                if delay > 0:  # wake for the earliest claim deadline too (a long throttle)
                    first_deadline = min(claim.deadline for claim in channel.queue)
                    await asyncio.sleep(max(0.0, min(delay, first_deadline - now + 0.001)))
                    continue
                if channel.queue[0] is pick:
                    channel.queue.popleft()
                else:
                    channel.queue.remove(pick)
                granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                pick.task = asyncio.create_task(self._deliver(pick, channel, granted))
                await granted  # one grant at a time, taken by the send task itself
        finally:
            channel.dispatcher = None

    async def _take_slot(self, claim: _Claim) -> bool:
        """Record the pacer grant in the step that starts the request: the time the pacer
        counts is then the time the request leaves (the event loop cannot stall between)."""
        while (delay := self._pacer.acquire_delay(claim.limits)) > 0:
            if self._clock() + delay > claim.deadline:
                return False
            await asyncio.sleep(delay)
        return True

    async def _deliver(
        self, claim: _Claim, channel: _Channel, granted: asyncio.Future[None] | None = None
    ) -> None:
        message = claim.message
        try:
            if granted is not None:
                try:
                    if not await self._take_slot(claim):
                        self._finish(claim, "release")
                        return
                finally:
                    if not granted.done():
                        granted.set_result(None)
            now = self._clock()
            if (
                self._stopping
                or now > claim.deadline
                or now > channel.valid_until - _SAFETY
                or self._channels.get(message.channel_id) is not channel
            ):
                self._finish(claim, "release")
                return
            if datetime.now(UTC) >= message.not_after:
                self._finish(claim, "expired")
                return
            claim.sending = True
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            try:
                result = await self._send(channel, message)
            except asyncio.CancelledError:
                elapsed = (time.perf_counter() - started) * 1000.0
                self._finish(claim, "result", interrupted_result(elapsed), started_at)
                raise
            self._note_throttle(message, result)
            self._finish(claim, "result", result, started_at)
        except asyncio.CancelledError:
            if not claim.finished:
                self._finish(claim, "release")
            raise

    async def _send(self, channel: _Channel, message: ClaimedMessage) -> SendResult:
        sender = SENDERS.get(message.platform)
        if sender is None:
            return _local_failure("unknown_platform", f"no sender for {message.platform!r}")
        try:
            command = message.command()
        except ValidationError as exc:
            return _local_failure(
                "invalid_command", f"the stored command is invalid ({exc.error_count()} errors)"
            )
        assert self._http is not None
        try:
            return await sender.send(self._http, channel.config, command, timeout=self._timeout)
        except UnsupportedContent as exc:
            return _local_failure("unsupported_content", str(exc))
        except Exception as exc:  # a sender bug must not kill the worker: count an attempt
            log.exception("outbox.sender_crashed", platform=message.platform)
            return _local_failure("worker_error", type(exc).__name__, retryable=True)

    def _note_throttle(self, message: ClaimedMessage, result: SendResult) -> None:
        if result.throttled:
            pause = result.retry_after or _DEFAULT_THROTTLE_PAUSE
            self._throttles[message.channel_id] = max(
                pause, self._throttles.get(message.channel_id, 0.0)
            )
            if self._pacing:
                self._pacer.penalize(
                    channel_key(str(message.channel_id)), retry_after=result.retry_after
                )
            log.info(
                "outbox.channel_throttled",
                channel_id=str(message.channel_id),
                retry_after=result.retry_after,
            )
        if result.recipient_throttled and self._pacing:
            self._pacer.penalize(
                recipient_key(str(message.channel_id), message.recipient),
                retry_after=result.retry_after,
            )

    def _finish(
        self,
        claim: _Claim,
        kind: OutcomeKind,
        result: SendResult | None = None,
        started_at: datetime | None = None,
    ) -> None:
        if claim.finished:
            return
        claim.finished = True
        self._outcomes.put_nowait(_Outcome(kind, claim, result, started_at))

    # ---- writing outcomes --------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        flush = self._settings.outbox_flush_interval
        while True:
            first = await self._outcomes.get()
            if first is None:
                return
            if flush and self._outcomes.qsize() < self._claim_batch:
                await asyncio.sleep(flush)
            batch = [first]
            done = False
            while len(batch) < self._claim_batch * 2:
                try:
                    item = self._outcomes.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            await self._write_with_retry(batch)
            for outcome in batch:
                self._claims.pop(outcome.claim.message.id, None)
            self._wake.set()
            if done:
                return

    async def _write_with_retry(self, batch: list[_Outcome]) -> None:
        """Write until it succeeds: database errors are waited out. A crash (a bug, e.g. one
        outcome our code cannot turn into a row) splits the batch so the others are written;
        a lone outcome that crashes three times is left to its lease, whose expiry recovers
        the row like a dead worker's claim, rather than holding up every later outcome."""
        backoff = 0.05
        give_up = None
        crashes = 0
        while True:
            try:
                await self._write(batch)
                return
            except _DB_ERRORS as exc:
                log.warning("outbox.write_failed", error=type(exc).__name__, rows=len(batch))
            except Exception:
                log.exception("outbox.write_crashed", rows=len(batch))
                if len(batch) > 1:
                    for outcome in batch:
                        await self._write_with_retry([outcome])
                    return
                crashes += 1
                if crashes >= 3:
                    log.error("outbox.outcome_abandoned", message_id=str(batch[0].claim.message.id))
                    return
            if self._stopping:
                now = self._clock()
                give_up = give_up or now + self._settings.outbox_shutdown_deadline
                if now >= give_up:  # the rows keep their leases: recovered after expiry
                    log.error("outbox.outcomes_lost", rows=len(batch))
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _write(self, batch: list[_Outcome]) -> None:
        now = datetime.now(UTC)
        updates: list[leases.RowUpdate] = []
        attempts: list[dict[str, Any]] = []
        transitions: dict[uuid.UUID, _Transition] = {}
        for outcome in batch:
            message = outcome.claim.message
            if outcome.kind == "release":
                updates.append(
                    leases.RowUpdate(
                        message.id, message.claimed_from, message.attempts, next_attempt_at=now
                    )
                )
                continue
            if outcome.kind == "expired":
                attempt = message.attempts
                decision = expired_decision()
            else:
                assert outcome.result is not None
                result = outcome.result
                attempt = message.attempts + 1
                decision = decide(
                    result, attempt=attempt - message.retry_base, now=now,
                    not_after=message.not_after, policy=self._policy,
                )  # fmt: skip
                attempts.append(
                    {
                        "message_id": message.id,
                        "attempt": attempt,
                        "worker": self.owner,
                        "started_at": outcome.started_at or now,
                        "duration_ms": result.duration_ms,
                        "outcome": result.outcome,
                        "http_status": result.http_status,
                        "error_code": result.error_code,
                        "error_title": result.error_title,
                        "retry_after": result.retry_after,
                        "response_excerpt": result.response_excerpt,
                    }
                )
            error_json = None
            if decision.error is not None:
                error = decision.error.model_dump(mode="json")
                error["attempt"] = attempt
                if outcome.result is not None:
                    error["http_status"] = outcome.result.http_status
                error_json = orjson.dumps(error).decode()
            updates.append(
                leases.RowUpdate(
                    message.id,
                    decision.state,
                    attempt,
                    next_attempt_at=decision.next_attempt_at,
                    platform_message_id=decision.platform_message_id,
                    last_error=error_json,
                    sent_at=now if decision.state == "sent" else None,
                    finished_at=now if decision.state in TERMINAL_STATES else None,
                )
            )
            transitions[message.id] = _Transition(message, decision, attempt)
        throttles, self._throttles = self._throttles, {}
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                changed = await leases.apply_outcomes(session, self.owner, updates)
                if attempts:
                    await session.execute(insert(OutboxAttempt), attempts)
                events = []
                for message_id, t in transitions.items():
                    if message_id not in changed:
                        continue
                    # a copy: the claim keeps its claimed values until the commit succeeds,
                    # so a retried write numbers the attempt the same (not once per try)
                    after = replace(t.message, attempts=t.attempt)
                    if t.decision.platform_message_id is not None:
                        after.platform_message_id = t.decision.platform_message_id
                    events.append(self._event_row(after, t.decision, now))
                if events:
                    await session.execute(insert(OutboxEvent), events)
                if throttles:
                    await leases.throttle_channels(session, throttles)
        except BaseException:
            for cid, pause in throttles.items():
                self._throttles[cid] = max(pause, self._throttles.get(cid, 0.0))
            raise
        self.stats.write_batches += 1
        self._count(batch, transitions, changed)

    def _event_row(
        self, message: ClaimedMessage, decision: Decision, now: datetime
    ) -> dict[str, Any]:
        return {
            "topic": self._events_topic,
            "key": message.conversation_key,
            "value": build_event(
                message.event_view(), decision.event, error=decision.error, now=now
            ),
        }

    def _count(
        self,
        batch: list[_Outcome],
        transitions: dict[uuid.UUID, _Transition],
        changed: set[uuid.UUID],
    ) -> None:
        stats = self.stats
        for outcome in batch:
            message_id = outcome.claim.message.id
            if message_id not in changed:
                stats.stale += 1
                log.warning("outbox.outcome_stale", message_id=str(message_id))
                continue
            if outcome.kind == "release":
                stats.released += 1
                continue
            state = transitions[message_id].decision.state
            if state == "sent":
                stats.sent += 1
            elif state == "retrying":
                stats.retried += 1
            elif state == "failed":
                stats.failed += 1
            else:
                stats.dead += 1

    # ---- maintenance -------------------------------------------------------------------------

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.outbox_maintenance_interval
        while not stop.is_set():
            try:
                await self._until_stopped(stop, self.maintain())
            except _Abandoned:
                return
            except _DB_ERRORS as exc:
                log.warning("outbox.maintenance_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.maintenance_crashed")
            try:
                await self._until_stopped(stop, self.settle_receipts())
            except _Abandoned:
                return
            except _DB_ERRORS as exc:  # e.g. a deadlock with the receipts consumer: next round
                log.warning("outbox.settle_receipts_failed", error=type(exc).__name__)
            except Exception:
                log.exception("outbox.settle_receipts_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def settle_receipts(self) -> tuple[int, int]:
        """Apply receipts that arrived before their message's platform id was recorded (see
        ``outbox.receipts``); drop expired ones. Returns (applied, expired)."""
        async with self._resources.sessionmaker() as session, session.begin():
            return await receipts.settle_pending(session, self._settings, limit=_MAINTENANCE_BATCH)

    async def maintain(self) -> tuple[int, int]:
        """Recover expired claims and sweep expired waiting rows; returns (recovered, swept)."""
        now = datetime.now(UTC)
        lease_error = orjson.dumps(LEASE_EXPIRED.model_dump(mode="json")).decode()
        expired_error = orjson.dumps(EXPIRED.model_dump(mode="json")).decode()
        async with self._resources.sessionmaker() as session, session.begin():
            lost = await leases.recover_expired(session, lease_error, _MAINTENANCE_BATCH)
            swept = await leases.sweep_expired(session, expired_error, _MAINTENANCE_BATCH)
            events = []
            attempts = []
            for row in lost:
                message = ClaimedMessage.from_row(row)
                dead = row["state"] == "dead"
                decision = Decision(
                    row["state"],
                    "message.dead" if dead else "message.retrying",
                    error=LEASE_EXPIRED,
                )
                events.append(self._event_row(message, decision, now))
                attempts.append(
                    {
                        "message_id": message.id,
                        "attempt": message.attempts,
                        "worker": self.owner,
                        "started_at": now,
                        "duration_ms": 0.0,
                        "outcome": "lost",
                        "error_code": LEASE_EXPIRED.code,
                        "error_title": LEASE_EXPIRED.title,
                    }
                )
            for row in swept:
                message = ClaimedMessage.from_row(row)
                events.append(self._event_row(message, expired_decision(), now))
            if attempts:
                await session.execute(insert(OutboxAttempt), attempts)
            if events:
                await session.execute(insert(OutboxEvent), events)
        if lost:
            log.warning("outbox.claims_recovered", count=len(lost))
            self.stats.recovered += len(lost)
            self._wake.set()
        self.stats.swept += len(swept)
        return len(lost), len(swept)


def _local_failure(code: str, title: str, *, retryable: bool = False) -> SendResult:
    return SendResult(
        outcome="retryable" if retryable else "permanent",
        platform_message_id=None,
        http_status=None,
        error_code=code,
        error_title=title,
        retry_after=None,
        throttled=False,
        response_excerpt=None,
        duration_ms=0.0,
    )
