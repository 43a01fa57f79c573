"""Prometheus metrics of the conversation layer (default registry, on ``/metrics``).

* ``switchboard_conversations_response_seconds{channel_id}``: time from an episode's first
  customer message to our first (non-automatic) reply. Labelled by channel id: channels are
  few and created by admins, so the label set is bounded.
* ``switchboard_conversations_events_total{type}``: conversation events staged.
* ``switchboard_conversations_auto_replies_total{channel_id,hours}``: acknowledgements sent
  (``hours``: ``in`` or ``outside``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RESPONSE_TIME = Histogram(
    "switchboard_conversations_response_seconds",
    "Time from a customer's first unanswered message to our reply",
    ["channel_id"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 172800),
)
EVENTS = Counter("switchboard_conversations_events", "Conversation events staged by type", ["type"])
AUTO_REPLIES = Counter(
    "switchboard_conversations_auto_replies",
    "Automatic acknowledgements sent",
    ["channel_id", "hours"],
)
