"""The conversation layer: timelines, unanswered-conversation events, auto-acknowledgements and
opt-outs, fed by the canonical topics (docs/conversations.md). It never imports the gateway or
the outbox: what it sends is a send command on ``outbound.commands.v1``."""
