"""The committed documents under openapi/ are exactly what the code generates."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from infra.settings import Settings
from switchboard.cli import _components
from switchboard.openapi import render_all

ROOT = Path(__file__).resolve().parents[2] / "openapi"


def test_committed_documents_match_the_code() -> None:
    settings = Settings(_env_file=None, encryption_keys=SecretStr("unused"))
    generated = render_all(settings, _components(settings))
    assert "openapi.json" in generated
    stale = [
        name
        for name, content in generated.items()
        if not (ROOT / name).exists() or (ROOT / name).read_text() != content
    ]
    assert not stale, f"regenerate with `switchboard openapi`: {stale}"


def test_asyncapi_names_every_contract_topic_and_an_existing_schema() -> None:
    import json

    document = json.loads((ROOT / "asyncapi.json").read_text())
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {
        "switchboard.inbound.v1",
        "switchboard.outbound.commands.v1",
        "switchboard.outbound.events.v1",
        "switchboard.deadletter.v1",
        "switchboard.conversations.v1",
    }
    for channel in document["channels"].values():
        for message in channel["messages"].values():
            assert (ROOT / message["payload"]["$ref"]).is_file()
