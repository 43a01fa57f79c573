"""Every per-platform registry covers exactly ``normalizer.platforms.Platform``.

Adding a platform is one line in that type plus one entry per layer; this test names the
layer that was forgotten (docs/platforms-howto.md)."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
from sqlalchemy import CheckConstraint

from channels.addressing import ADDRESSING
from channels.models import Channel
from channels.schemas import CREDENTIAL_MODELS, ChannelCreate
from fake_platforms.server import Platform as FakePlatform
from gateway.verifiers import REGISTRY
from normalizer import NORMALIZED_PLATFORMS
from normalizer.platforms import PLATFORMS, Platform
from outbox.media import RESOLVERS
from outbox.media_upload import UPLOADERS
from outbox.platforms import CHANNEL_RATES, SENDERS, Sender

EXPECTED = set(PLATFORMS)


def _create_schema_platforms() -> set[str]:
    union = get_args(ChannelCreate)[0]
    found: set[str] = set()
    for model in get_args(union):
        (literal,) = get_args(model.model_fields["platform"].annotation)
        found.add(literal)
    return found


def _table_constraints() -> set[Any]:
    table: Any = Channel.__table__
    return set(table.constraints)


def _check_constraint_platforms() -> set[str]:
    (constraint,) = [
        c
        for c in _table_constraints()
        if isinstance(c, CheckConstraint) and c.name == "ck_channels_platform_known"
    ]
    return set(re.findall(r"'([a-z_]+)'", str(constraint.sqltext)))


def test_platform_type_and_tuple_agree() -> None:
    assert get_args(Platform) == PLATFORMS
    assert len(set(PLATFORMS)) == len(PLATFORMS)


@pytest.mark.parametrize(
    ("registry", "platforms"),
    [
        ("gateway verifiers", lambda: set(REGISTRY)),
        ("normalizers", lambda: set(NORMALIZED_PLATFORMS)),
        ("outbox senders", lambda: set(SENDERS)),
        ("channel create schemas", _create_schema_platforms),
        ("channel credential models", lambda: set(CREDENTIAL_MODELS)),
        ("default send rates", lambda: set(CHANNEL_RATES)),
        ("peer addressing rules", lambda: set(ADDRESSING)),
        ("media download resolvers", lambda: set(RESOLVERS)),
        ("media uploaders (None: no upload API)", lambda: set(UPLOADERS)),
        ("channels check constraint", _check_constraint_platforms),
    ],
)
def test_registry_covers_exactly_the_platform_type(registry: str, platforms: object) -> None:
    assert callable(platforms)
    assert platforms() == EXPECTED, registry


def test_fake_platforms_cover_every_platform() -> None:
    """fake_platforms stays standalone (no import of normalizer); the Messenger fake also
    serves Instagram, which speaks the same Graph API."""
    assert set(get_args(FakePlatform)) | {"instagram"} == EXPECTED


def test_sender_platform_attribute_matches_its_key() -> None:
    for platform, sender in SENDERS.items():
        assert sender.platform == platform


def test_every_sender_implements_the_whole_protocol() -> None:
    """``Sender`` carries each platform's pace too: a new sender without it fails here."""
    for platform, sender in SENDERS.items():
        assert isinstance(sender, Sender), platform
        assert CHANNEL_RATES[platform] is sender.channel_rate
