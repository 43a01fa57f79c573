"""D12: a failing statement's message carries no parameter values (credential ciphertext,
API-key hashes) into logs or exception chains."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from infra import db
from infra.settings import Settings

pytestmark = pytest.mark.integration

CANARY = "canary-secret-7f3a9c-ciphertext"


async def test_failing_statement_message_hides_parameters(settings: Settings) -> None:
    """The statement fails for a reason unrelated to the value (division by zero), so only
    SQLAlchemy's ``[parameters: …]`` suffix could show it."""
    engine = db.create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": CANARY})
    finally:
        await engine.dispose()
    assert CANARY not in str(caught.value)
    assert CANARY not in repr(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
