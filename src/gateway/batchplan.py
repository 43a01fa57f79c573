"""What happens to each webhook and event of a group-commit batch (pure: no I/O).

``Webhook`` is one verified webhook waiting for its batch; ``BatchPlan`` decides, from the
claim's answer (which ids are new, which conversations have spooled events) and the publish
outcome, what is published, what is spooled and what each member answers (``Accepted`` or
``NotDurable``). See ``gateway.service`` for the protocol around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import normalizer
from channels.service import ChannelWithSecrets
from gateway.errors import NotDurable
from gateway.metrics import events_counter


@dataclass(frozen=True, slots=True)
class Accepted:
    events: int
    new: int
    duplicates: int
    published: int
    spooled: int
    deduplicated: bool = True


@dataclass(slots=True)
class Webhook:
    """One verified webhook waiting for its batch."""

    platform: str
    channel: ChannelWithSecrets
    events: list[normalizer.InboundEvent]
    """Distinct events, in the webhook's order."""
    count: int
    """Events in the webhook, repeats included."""
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    traceparent: str | None = None
    """The webhook's trace context (its ``webhook.commit`` span, or the client's)."""


class BatchPlan:
    """What happens to each event of a claimed batch (pure: no I/O, unit-testable).

    A webhook *owns* the new ids it was the first of its batch to carry; an id not new was
    committed by an earlier transaction (``ON CONFLICT`` waits for the holder to finish).
    Per webhook, as for a lone webhook: events of a conversation with spooled events (or all
    events, while the broker is suspect) go to the spool; the others are published, and a
    failed publish sends that event and the webhook's later events of its conversation to
    the spool.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        owners: dict[str, int],
        new_ids: frozenset[str],
        spooled_conversations: frozenset[str],
        *,
        broker_suspect: bool,
    ) -> None:
        self.webhooks = webhooks
        self.new: list[list[normalizer.InboundEvent]] = [
            [e for e in w.events if e.id in new_ids and owners[e.id] == index]
            for index, w in enumerate(webhooks)
        ]
        self.blocked: list[set[str]] = [
            {e.subject for e in new if broker_suspect or e.subject in spooled_conversations}
            for new in self.new
        ]
        self.published = [0] * len(webhooks)
        self.spooled = [0] * len(webhooks)
        self.spool: list[tuple[str, normalizer.InboundEvent]] = []
        """(platform, event) to write to the spool, in order."""
        self.spooled_ids: set[str] = set()

    def direct(self) -> list[normalizer.InboundEvent]:
        """The events to publish now, webhook after webhook."""
        return [
            e
            for new, blocked in zip(self.new, self.blocked, strict=True)
            for e in new
            if e.subject not in blocked
        ]

    def settle(self, ok: Sequence[bool]) -> None:
        """Record the publish outcome of ``direct()`` (same order)."""
        published = dict(zip((e.id for e in self.direct()), ok, strict=True))
        for index, (webhook, new) in enumerate(zip(self.webhooks, self.new, strict=True)):
            blocked = self.blocked[index]
            for event in new:
                if event.subject in blocked or not published.get(event.id, False):
                    blocked.add(event.subject)
                    self.spool.append((webhook.platform, event))
                    self.spooled_ids.add(event.id)
                    self.spooled[index] += 1
                else:
                    self.published[index] += 1

    def accepted(self) -> list[Accepted | BaseException]:
        """The batch committed: every webhook is durable."""
        results: list[Accepted | BaseException] = []
        for index, webhook in enumerate(self.webhooks):
            new = len(self.new[index])
            duplicates = webhook.count - new
            if self.spooled[index]:
                events_counter(webhook.platform, "spooled").inc(self.spooled[index])
            events_counter(webhook.platform, "published").inc(self.published[index])
            if duplicates:
                events_counter(webhook.platform, "duplicate").inc(duplicates)
            results.append(
                Accepted(webhook.count, new, duplicates, self.published[index], self.spooled[index])
            )
        return results

    def after_failed_commit(self) -> list[Accepted | BaseException]:
        """The spool write or COMMIT failed: no dedup, archive or spool row was kept.

        A webhook is still durable if none of its events was headed for the spool: each one
        was published (by it or a batch-mate, acks=all) or committed before this batch. Then
        200 without dedup (a redelivery publishes the same ids again); otherwise 503.
        """
        results: list[Accepted | BaseException] = []
        for index, webhook in enumerate(self.webhooks):
            if any(e.id in self.spooled_ids for e in webhook.events):
                results.append(NotDurable())
                continue
            published = self.published[index]
            events_counter(webhook.platform, "undeduplicated").inc(published)
            results.append(Accepted(webhook.count, published, 0, published, 0, False))
        return results
