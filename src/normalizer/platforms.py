"""The one list of supported platforms. Every per-platform registry (verifiers, normalizers,
senders, channel schemas, default rates, the channel check constraint) is derived from or
checked against it (``tests/unit/test_platform_registries.py``). Adding a platform starts
with one line here: see ``docs/platforms-howto.md``."""

from __future__ import annotations

from typing import Final, Literal, get_args

Platform = Literal["whatsapp", "messenger", "instagram", "telegram", "twilio"]

PLATFORMS: Final[tuple[Platform, ...]] = get_args(Platform)
