"""Ingress: verified, deduplicated, durable webhook intake."""
