"""Fake WhatsApp, Messenger/Instagram, Telegram and Twilio send APIs for tests and benchmarks.

Real HTTP on 127.0.0.1 that records what it receives and can inject 429s, 5xx, hangs, slow
answers and platform error bodies. Imports nothing of Switchboard's: it stands in for the
outside world.
"""

from fake_platforms.server import FakePlatformServer, Fault, Platform, RecordedRequest

__all__ = ["FakePlatformServer", "Fault", "Platform", "RecordedRequest"]
