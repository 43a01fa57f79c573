"""Pacing and sending: one pacer loop per owned channel, one task per send.

``Dispatcher.enqueue`` puts a claim in its channel's queue; the channel's dispatcher grants
the queued claims through the ``Pacer``, reply-lane claims first (``outbox.lanes``: bulk keeps
a tenth of the slots while both lanes wait), each lane in claim order (a claim whose
conversation limit is not ready lets the next one go first) and starts a send task per
grant. Every send ends in exactly one outcome handed to the ``OutcomeWriter``: a result, a
release (not sent: back to its state) or expired (``not_after`` passed before it could be
sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from infra import telemetry
from infra.logging import get_logger
from outbox.breaker import is_outage
from outbox.claims import Claim
from outbox.delivery import ClaimedMessage, interrupted_result
from outbox.lanes import LaneShare, lane_order
from outbox.metrics import record_send, send_outcome
from outbox.outcomes import OutcomeWriter
from outbox.ownership import ChannelOwnership, OwnedChannel
from outbox.platforms import SENDERS, SendResult, UnsupportedContent
from outbox.platforms.http import HttpClient
from outbox.ratelimit import Pacer, channel_key, recipient_key

__all__ = ["Dispatcher"]

log = get_logger(__name__)

_DEFAULT_THROTTLE_PAUSE = 1.0


class Dispatcher:
    """Paces and sends the claims of the owned channels."""

    def __init__(
        self,
        *,
        pacer: Pacer,
        pacing: bool,
        ownership: ChannelOwnership,
        writer: OutcomeWriter,
        http: Callable[[], HttpClient],
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._pacer = pacer
        self._pacing = pacing
        self._ownership = ownership
        self._writer = writer
        self._http = http
        self._timeout = timeout
        self._clock = clock
        self._shares: dict[str, LaneShare] = {}
        """Per channel: how its slots are split between the reply and bulk lanes."""
        self.stopping = False
        """Set by the worker at stop: nothing new starts, waiting claims are released."""

    def _share(self, channel: OwnedChannel) -> LaneShare:
        share = self._shares.get(channel.config.id)
        if share is None:
            share = self._shares[channel.config.id] = LaneShare()
        return share

    def start(self, claim: Claim, channel: OwnedChannel) -> None:
        """Send at once (pacing off)."""
        claim.task = asyncio.create_task(self._deliver(claim, channel))

    def enqueue(self, claim: Claim, channel: OwnedChannel) -> None:
        """Queue a claim for its channel's pacer loop (started if not running)."""
        channel.queue.append(claim)
        channel.arrived.set()
        if channel.dispatcher is None:
            channel.dispatcher = asyncio.create_task(
                self._dispatch(channel), name=f"outbox-pace-{channel.config.id}"
            )

    def release_queue(self, channel: OwnedChannel) -> None:
        """Every claim still waiting for the pacer goes back to its state, unsent."""
        while channel.queue:
            self._writer.finish(channel.queue.popleft(), "release")

    async def stop(self, channels: list[OwnedChannel]) -> None:
        """Stop the pacer loops of ``channels`` and release what they still held."""
        loops = [c.dispatcher for c in channels if c.dispatcher is not None]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for channel in channels:
            self.release_queue(channel)

    async def _dispatch(self, channel: OwnedChannel) -> None:
        """One pacer loop per owned channel: grant its queued claims in claim order (a claim
        whose conversation limit is not ready lets the next one go first), start a send task
        per grant. No task exists per waiting claim, so a grant is followed by its send
        without a burst of other work in between."""
        pacer = self._pacer
        try:
            while channel.queue:
                now = self._clock()
                if self.stopping or not channel.sendable(now) or not self._ownership.holds(channel):
                    self.release_queue(channel)
                    return
                pick: Claim | None = None
                soonest = math.inf
                expired: list[Claim] = []
                share = self._share(channel)
                replies = channel.queue.replies
                contended = 0 < replies < len(channel.queue)
                first = share.first(
                    reply_waiting=replies > 0, bulk_waiting=replies < len(channel.queue)
                )
                for claim in lane_order(channel.queue, first, _lane_of):
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
                    self._writer.finish(claim, "release")
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
                share.granted(pick.message.lane, contended=contended)
                granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                pick.task = asyncio.create_task(self._deliver(pick, channel, granted))
                await granted  # one grant at a time, taken by the send task itself
        finally:
            channel.dispatcher = None

    async def _take_slot(self, claim: Claim) -> bool:
        """Record the pacer grant in the step that starts the request: the time the pacer
        counts is then the time the request leaves (the event loop cannot stall between)."""
        while (delay := self._pacer.acquire_delay(claim.limits)) > 0:
            if self._clock() + delay > claim.deadline:
                return False
            await asyncio.sleep(delay)
        return True

    async def _deliver(
        self, claim: Claim, channel: OwnedChannel, granted: asyncio.Future[None] | None = None
    ) -> None:
        message = claim.message
        finish = self._writer.finish
        try:
            if granted is not None:
                try:
                    if not await self._take_slot(claim):
                        finish(claim, "release")
                        return
                finally:
                    if not granted.done():
                        granted.set_result(None)
            now = self._clock()
            if (
                self.stopping
                or now > claim.deadline
                or not channel.sendable(now)
                or not self._ownership.holds(channel)
            ):
                finish(claim, "release")
                return
            if datetime.now(UTC) >= message.not_after:
                record_send(message.platform, "expired", 0.0)
                finish(claim, "expired")
                return
            breaker = channel.breaker
            probe = breaker.state(now) == "half_open"
            if not breaker.try_acquire(now):
                finish(claim, "release", delay=breaker.retry_in(now))
                return
            claim.sending = True
            started_at = datetime.now(UTC)
            started = time.perf_counter()
            try:
                result = await self._send(channel, message)
            except asyncio.CancelledError:
                elapsed = (time.perf_counter() - started) * 1000.0
                finish(claim, "result", interrupted_result(elapsed), started_at)
                raise
            self._note_throttle(message, result)
            self._note_circuit(channel, result, probe)
            record_send(
                message.platform,
                send_outcome(
                    result.outcome, throttled=result.throttled or result.recipient_throttled
                ),
                time.perf_counter() - started,
            )
            finish(claim, "result", result, started_at)
        except asyncio.CancelledError:
            if not claim.finished:
                finish(claim, "release")
            raise

    async def _send(self, channel: OwnedChannel, message: ClaimedMessage) -> SendResult:
        """One attempt, in a span of the command's trace (its HTTP exchange is a child)."""
        with telemetry.span(
            "outbox.attempt",
            parent=message.traceparent,
            attributes=_attempt_attributes(message) if telemetry.enabled() else None,
        ) as span:
            result = await self._attempt(channel, message)
            if span is not None:
                span.set_attribute("switchboard.outcome", result.outcome)
                if result.error_code:
                    span.set_attribute("error.type", result.error_code)
            return result

    async def _attempt(self, channel: OwnedChannel, message: ClaimedMessage) -> SendResult:
        sender = SENDERS.get(message.platform)
        if sender is None:
            return local_failure("unknown_platform", f"no sender for {message.platform!r}")
        try:
            command = message.command()
        except ValidationError as exc:
            return local_failure(
                "invalid_command", f"the stored command is invalid ({exc.error_count()} errors)"
            )
        try:
            return await sender.send(self._http(), channel.config, command, timeout=self._timeout)
        except UnsupportedContent as exc:
            return local_failure("unsupported_content", str(exc))
        except Exception as exc:  # a sender bug must not kill the worker: count an attempt
            log.exception("outbox.sender_crashed", platform=message.platform)
            return local_failure("worker_error", type(exc).__name__, retryable=True)

    def _note_circuit(self, channel: OwnedChannel, result: SendResult, probe: bool) -> None:
        breaker = channel.breaker
        before = breaker.changes
        now = self._clock()
        breaker.record(now, outage=is_outage(result), probe=probe)
        if breaker.changes != before:
            state = breaker.state(now)
            self._writer.note_circuit(channel.id, state)
            log.warning(
                "outbox.circuit_changed",
                channel_id=str(channel.id),
                platform=channel.config.platform,
                circuit=state,
            )

    def _note_throttle(self, message: ClaimedMessage, result: SendResult) -> None:
        if result.throttled:
            pause = result.retry_after or _DEFAULT_THROTTLE_PAUSE
            self._writer.note_throttle(message.channel_id, pause)
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


def _attempt_attributes(message: ClaimedMessage) -> dict[str, object]:
    return {
        "switchboard.platform": message.platform,
        "switchboard.message_id": str(message.id),
        "switchboard.channel_id": str(message.channel_id),
        "switchboard.attempt": message.attempts + 1,
    }


def _lane_of(claim: Claim) -> str:
    return claim.message.lane


def local_failure(code: str, title: str, *, retryable: bool = False) -> SendResult:
    """An attempt that failed in this process, before or instead of an HTTP exchange."""
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
