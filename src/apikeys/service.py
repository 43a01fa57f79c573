"""Key issuing and checking. Keys carry 256 bits of randomness, so an unsalted SHA-256 is a
sound verifier (no dictionary to attack) and lets us look keys up by hash with one index."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apikeys.models import ApiKey
from apikeys.schemas import Scope
from infra.errors import NotFound

KEY_PREFIX = "sb_"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID | None
    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(session: AsyncSession, name: str, scopes: list[Scope]) -> tuple[ApiKey, str]:
    key = generate_api_key()
    row = ApiKey(
        name=name,
        prefix=key[:10],
        key_hash=hash_key(key),
        scopes=sorted({s.value for s in scopes}),
    )
    session.add(row)
    await session.flush()
    return row, key


async def authenticate(
    session: AsyncSession, presented: str, admin_key: str | None
) -> Principal | None:
    if admin_key is not None and hmac.compare_digest(presented.encode(), admin_key.encode()):
        return Principal(key_id=None, name="bootstrap-admin", scopes=frozenset(Scope))
    row = await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(presented), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(Scope(s) for s in row.scopes))


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("API key not found")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    await session.flush()
    return row
