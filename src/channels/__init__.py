"""Channels: one business account on one platform, with its write-only, encrypted credentials."""
