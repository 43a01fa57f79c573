"""Errors about channels that every service's API raises the same way.

``ChannelNotFound`` is the 404 of a route whose *path* names a channel that does not exist
(the conversations API, the frequency-cap API). It is not the outbox's
``UnknownChannelReference`` (a send command's *body* names it: 422 ``unknown_channel``), nor the
gateway's webhook ``ChannelNotFound`` (a terse 404 ``not_found`` that tells a webhook caller
nothing), nor the media proxy's ``media_not_found``: those answer differently on purpose.
"""

from __future__ import annotations

from infra.errors import NotFound

__all__ = ["ChannelNotFound"]


class ChannelNotFound(NotFound):
    code = "channel_not_found"
