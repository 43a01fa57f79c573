"""The outcome writer: every claim's outcome, batched, written with its lifecycle event.

Outcomes are queued (``OutcomeWriter.finish``) and written in one transaction per batch
(``outbox_flush_interval``, or a full batch): row states, attempts, lifecycle events (the
transactional outbox) and channel throttles. A claim counts against the in-flight bound
(``claims.InFlight``) until its outcome is committed. Nothing of a claim changes before its
outcome is committed, so a retried write numbers the attempt as the first try did.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from infra.logging import get_logger
from infra.resources import Resources
from outbox import control, leases
from outbox.claims import Claim, InFlight
from outbox.contracts import ChannelError
from outbox.delivery import ClaimedMessage, Decision, decide, expired_decision
from outbox.events import build_event
from outbox.metrics import record_finished
from outbox.models import TERMINAL_STATES, OutboxAttempt, OutboxEvent
from outbox.platforms import SendResult
from outbox.retry import RetryPolicy

__all__ = ["DB_ERRORS", "Outcome", "OutcomeKind", "OutcomeWriter", "WorkerStats", "event_row"]

log = get_logger(__name__)

DB_ERRORS = (SQLAlchemyError, OSError)

OutcomeKind = Literal["result", "release", "expired"]


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
class Outcome:
    kind: OutcomeKind
    claim: Claim
    result: SendResult | None = None
    started_at: datetime | None = None
    delay: float = 0.0
    """A release's wait before the message is due again (an open circuit), in seconds."""


@dataclass(slots=True)
class _Transition:
    message: ClaimedMessage
    decision: Decision
    attempt: int


def event_row(
    topic: str, message: ClaimedMessage, decision: Decision, now: datetime
) -> dict[str, Any]:
    """The staged ``outbox_events`` row of one transition."""
    return {
        "topic": topic,
        "key": message.conversation_key,
        "value": build_event(message.event_view(), decision.event, error=decision.error, now=now),
        "traceparent": message.traceparent,
    }


class OutcomeWriter:
    """Batches outcomes and writes them; ``run`` until ``close`` (after the drain)."""

    def __init__(
        self,
        resources: Resources,
        *,
        owner: str,
        policy: RetryPolicy,
        in_flight: InFlight,
        stats: WorkerStats,
        on_written: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        s = resources.settings
        self._resources = resources
        self._owner = owner
        self._policy = policy
        self._in_flight = in_flight
        self._stats = stats
        self._on_written = on_written
        self._clock = clock
        self._flush = s.outbox_flush_interval
        self._batch = s.outbox_claim_batch * 2
        self._shutdown_deadline = s.outbox_shutdown_deadline
        self._events_topic = s.topic("outbound.events.v1")
        self._queue: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._throttles: dict[uuid.UUID, float] = {}
        self._circuits: dict[uuid.UUID, str] = {}
        self.stopping = False
        """Set by the worker at stop: a failing write then gives up after the deadline."""

    def finish(
        self,
        claim: Claim,
        kind: OutcomeKind,
        result: SendResult | None = None,
        started_at: datetime | None = None,
        *,
        delay: float = 0.0,
    ) -> None:
        """Queue the claim's outcome (once: later calls for the same claim do nothing)."""
        if claim.finished:
            return
        claim.finished = True
        self._queue.put_nowait(Outcome(kind, claim, result, started_at, delay))

    def note_circuit(self, channel_id: uuid.UUID, state: str) -> None:
        """Persist a circuit-breaker change with the next batch (the last one wins)."""
        self._circuits[channel_id] = state

    def note_throttle(self, channel_id: uuid.UUID, pause: float) -> None:
        """Persist a platform throttle on the channel lease with the next batch."""
        self._throttles[channel_id] = max(pause, self._throttles.get(channel_id, 0.0))

    def close(self) -> None:
        """No more outcomes: ``run`` writes what is queued and returns."""
        self._queue.put_nowait(None)

    async def run(self) -> None:
        claim_batch = self._batch // 2
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._flush and self._queue.qsize() < claim_batch:
                await asyncio.sleep(self._flush)
            batch = [first]
            done = False
            while len(batch) < self._batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            await self._write_with_retry(batch)
            for outcome in batch:
                self._in_flight.discard(outcome.claim.message.id)
            self._on_written()
            if done:
                return

    async def _write_with_retry(self, batch: list[Outcome]) -> None:
        """Write until it succeeds: database errors are waited out. A crash (a bug, e.g. one
        outcome our code cannot turn into a row) splits the batch so the others are written;
        a lone outcome that crashes three times is left to its lease, whose expiry recovers
        the row like a dead worker's claim, rather than holding up every later outcome."""
        backoff = 0.05
        give_up = None
        crashes = 0
        while True:
            try:
                await self.write(batch)
                return
            except DB_ERRORS as exc:
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
            if self.stopping:
                now = self._clock()
                give_up = give_up or now + self._shutdown_deadline
                if now >= give_up:  # the rows keep their leases: recovered after expiry
                    log.error("outbox.outcomes_lost", rows=len(batch))
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def write(self, batch: list[Outcome]) -> None:
        """One batch in one transaction (raises on failure; nothing of a claim changes)."""
        now = datetime.now(UTC)
        updates: list[leases.RowUpdate] = []
        attempts: list[dict[str, Any]] = []
        transitions: dict[uuid.UUID, _Transition] = {}
        suspensions: dict[uuid.UUID, control.Suspension] = {}
        held_back: set[uuid.UUID] = set()
        for outcome in batch:
            message = outcome.claim.message
            if outcome.kind == "release":
                due = now + timedelta(seconds=outcome.delay) if outcome.delay > 0 else now
                updates.append(
                    leases.RowUpdate(
                        message.id, message.claimed_from, message.attempts, next_attempt_at=due
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
                if result.credentials_invalid:
                    attempts.append(self._attempt_row(outcome, attempt, now))
                    updates.append(self._held_back(message, attempt, result, now))
                    suspensions.setdefault(
                        message.channel_id,
                        control.Suspension(
                            message.channel_id,
                            message.platform,
                            ChannelError(
                                code=result.error_code or "credentials_invalid",
                                title=result.error_title,
                                http_status=result.http_status,
                            ),
                        ),
                    )
                    held_back.add(message.id)
                    continue
                decision = decide(
                    result, attempt=attempt - message.retry_base, now=now,
                    not_after=message.not_after, policy=self._policy,
                )  # fmt: skip
                attempts.append(self._attempt_row(outcome, attempt, now))
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
        circuits, self._circuits = self._circuits, {}
        try:
            async with self._resources.sessionmaker() as session, session.begin():
                changed = await leases.apply_outcomes(session, self._owner, updates)
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
                    events.append(event_row(self._events_topic, after, t.decision, now))
                if events:
                    await session.execute(insert(OutboxEvent), events)
                if throttles:
                    await leases.throttle_channels(session, throttles)
                if circuits:
                    await control.record_circuits(session, circuits)
                if suspensions:
                    await control.suspend(session, list(suspensions.values()), self._events_topic)
        except BaseException:
            for cid, pause in throttles.items():
                self.note_throttle(cid, pause)
            self._circuits = circuits | self._circuits
            raise
        self._stats.write_batches += 1
        self._count(batch, transitions, changed, held_back)
        for suspension in suspensions.values():
            log.warning(
                "outbox.channel_suspended",
                channel_id=str(suspension.channel_id),
                platform=suspension.platform,
                error_code=suspension.error.code,
            )

    def _attempt_row(self, outcome: Outcome, attempt: int, now: datetime) -> dict[str, Any]:
        result = outcome.result
        assert result is not None
        return {
            "message_id": outcome.claim.message.id,
            "attempt": attempt,
            "worker": self._owner,
            "started_at": outcome.started_at or now,
            "duration_ms": result.duration_ms,
            "outcome": result.outcome,
            "http_status": result.http_status,
            "error_code": result.error_code,
            "error_title": result.error_title,
            "retry_after": result.retry_after,
            "response_excerpt": result.response_excerpt,
        }

    @staticmethod
    def _held_back(
        message: ClaimedMessage, attempt: int, result: SendResult, now: datetime
    ) -> leases.RowUpdate:
        """The row of a send refused for the channel's credentials: not failed, back to
        waiting (due now: the suspension holds it, not a backoff), the attempt recorded."""
        error = {
            "code": result.error_code or "credentials_invalid",
            "title": result.error_title or "the platform refused the channel's credentials",
            "retryable": True,
            "attempt": attempt,
            "http_status": result.http_status,
            "channel_suspended": True,
        }
        return leases.RowUpdate(
            message.id, "retrying", attempt, next_attempt_at=now,
            last_error=orjson.dumps(error).decode(),
        )  # fmt: skip

    def _count(
        self,
        batch: list[Outcome],
        transitions: dict[uuid.UUID, _Transition],
        changed: set[uuid.UUID],
        held_back: set[uuid.UUID],
    ) -> None:
        stats = self._stats
        for outcome in batch:
            message_id = outcome.claim.message.id
            if message_id not in changed:
                stats.stale += 1
                log.warning("outbox.outcome_stale", message_id=str(message_id))
                continue
            if outcome.kind == "release" or message_id in held_back:
                stats.released += 1
                continue
            state = transitions[message_id].decision.state
            if state == "sent":
                stats.sent += 1
            elif state == "retrying":
                stats.retried += 1
            elif state == "failed":
                stats.failed += 1
                record_finished(outcome.claim.message.platform, "failed")
            else:
                stats.dead += 1
                record_finished(outcome.claim.message.platform, "dead")
