from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from infra.schema_types import Label


class Scope(StrEnum):
    ADMIN = "admin"
    SEND = "send"
    READ = "read"


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: Label
    scopes: list[Scope] = Field(min_length=1)


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="First characters of the key, to recognise it")
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret key. Shown once; only its hash is stored.")
