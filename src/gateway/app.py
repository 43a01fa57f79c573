"""The gateway as a component of the HTTP app: webhook routes and their long-lived parts."""

from __future__ import annotations

from switchboard.app import Component
from switchboard.settings import Settings


def component(settings: Settings) -> Component:
    return Component(name="gateway")
