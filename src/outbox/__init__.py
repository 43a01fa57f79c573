"""Outbox: durable, rate-limited delivery to the platforms."""
