"""Switchboard shared infrastructure and composition root."""
