from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from apikeys.schemas import Scope
from apikeys.service import Principal, generate_api_key, hash_key
from channels.schemas import ChannelUpdate
from infra.crypto import SecretBox, SecretBoxError, generate_key
from infra.settings import Settings


def test_settings_read_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SWITCHBOARD_ADMIN_API_KEY", "sb_admin_x")
    monkeypatch.setenv("SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE", "false")
    settings = Settings(_env_file=None)
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.kafka_enable_idempotence is False
    assert "sb_admin_x" not in repr(settings)
    assert settings.topic("inbound.v1") == "switchboard.inbound.v1"


def test_topic_prefix_is_validated() -> None:
    with pytest.raises(ValidationError, match="may contain only"):
        Settings(_env_file=None, kafka_topic_prefix="bad prefix/")


def test_secret_box_round_trip_and_rotation() -> None:
    old, new = generate_key(), generate_key()
    token = SecretBox([old]).encrypt_json({"bot_token": "123:abc"})
    rotated = SecretBox([new, old])
    assert rotated.decrypt_json(token) == {"bot_token": "123:abc"}
    assert b"123:abc" not in token
    with pytest.raises(SecretBoxError, match="cannot be decrypted"):
        SecretBox([new]).decrypt_json(token)


def test_secret_box_rejects_a_bad_key_with_a_hint() -> None:
    with pytest.raises(ValueError, match="switchboard keygen"):
        SecretBox(["not-a-key"])
    with pytest.raises(ValueError, match="SWITCHBOARD_ENCRYPTION_KEYS is not set"):
        SecretBox.from_settings(Settings(_env_file=None))


def test_api_keys_are_random_and_hashed() -> None:
    a, b = generate_api_key(), generate_api_key()
    assert a != b
    assert a.startswith("sb_")
    assert len(hash_key(a)) == 64
    assert hash_key(a) != hash_key(b)


@pytest.mark.parametrize(
    ("scopes", "wanted", "allowed"),
    [
        ({Scope.ADMIN}, Scope.SEND, True),
        ({Scope.READ}, Scope.READ, True),
        ({Scope.READ}, Scope.SEND, False),
        ({Scope.SEND}, Scope.ADMIN, False),
    ],
)
def test_scopes(scopes: set[Scope], wanted: Scope, allowed: bool) -> None:
    assert Principal(key_id=None, name="k", scopes=frozenset(scopes)).allows(wanted) is allowed


def test_channel_update_never_shows_secrets() -> None:
    update = ChannelUpdate(credentials={"access_token": SecretStr("very-secret")})
    assert "very-secret" not in repr(update)
    assert "very-secret" not in str(update.model_dump())
