"""API schemas of the channel resource (design.md §2). Credentials are write-only:
they are accepted here, encrypted, and never part of any response."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

Platform = Literal["whatsapp", "messenger", "instagram", "telegram", "twilio"]

_TELEGRAM_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{20,}$")
_TELEGRAM_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_TWILIO_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_DIGITS = re.compile(r"^\d{1,30}$")
_TWILIO_SENDER = re.compile(
    r"^(whatsapp:)?\+[1-9]\d{6,14}$|^MG[0-9a-fA-F]{32}$|^[A-Za-z0-9 ]{1,11}$"
)


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and no platform id or name contains one."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters (\\u0000)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string that fits a text column: every free-form string of the channel resource."""
# Length first: after a function validator it would only be a generic "Value should have …".
Text200 = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]


def _no_control(value: SecretStr) -> SecretStr:
    """Credentials travel in HTTP headers and URL paths, where a control character (a stray
    newline from a copy-paste) makes every send fail: refuse it when the channel is saved."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value.get_secret_value()):
        raise PydanticCustomError(
            "control_character", "must not contain control characters (newline, tab, NUL, …)"
        )
    return value


Secret = Annotated[SecretStr, Field(min_length=1, max_length=4096), AfterValidator(_no_control)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class MetaCredentials(_Strict):
    """WhatsApp Cloud API, Messenger and Instagram: one Meta app and its tokens."""

    access_token: Secret
    app_secret: Secret
    verify_token: Secret
    previous_app_secret: Secret | None = Field(
        default=None, description="Still accepted for signatures while rotating the app secret"
    )


class TelegramCredentials(_Strict):
    bot_token: Secret
    secret_token: Secret = Field(
        description="Sent by Telegram in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -)"
    )
    previous_secret_token: Secret | None = None

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TELEGRAM_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must look like '<bot id>:<token>' as issued by @BotFather")
        return value

    @field_validator("secret_token", "previous_secret_token")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TELEGRAM_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, '_' and '-'")
        return value


class TwilioCredentials(_Strict):
    account_sid: Text = Field(description="AC followed by 32 hex digits")
    auth_token: Secret
    previous_auth_token: Secret | None = None

    @field_validator("account_sid")
    @classmethod
    def _sid_shape(cls, value: str) -> str:
        if not _TWILIO_SID.fullmatch(value):
            raise ValueError("must be 'AC' followed by 32 hexadecimal digits")
        return value


class _ChannelCreateBase(_Strict):
    name: Text200
    account_id: Text200
    api_base_url: HttpUrl | None = Field(
        default=None, description="Override of the platform API base URL (tests, proxies)"
    )
    send_rate_per_second: float | None = Field(
        default=None,
        ge=0.01,
        le=10_000,
        description="Sends per second, 0.01 to 10,000; null = the platform's default limit",
    )
    enabled: bool = True


class _MetaChannelCreate(_ChannelCreateBase):
    credentials: MetaCredentials

    @model_validator(mode="after")
    def _numeric_account(self) -> _MetaChannelCreate:
        if not _DIGITS.fullmatch(self.account_id):
            raise ValueError(
                "account_id must be the numeric Meta id (phone_number_id, page or IG id)"
            )
        return self


class WhatsAppChannelCreate(_MetaChannelCreate):
    platform: Literal["whatsapp"]


class MessengerChannelCreate(_MetaChannelCreate):
    platform: Literal["messenger"]


class InstagramChannelCreate(_MetaChannelCreate):
    platform: Literal["instagram"]


class TelegramChannelCreate(_ChannelCreateBase):
    platform: Literal["telegram"]
    credentials: TelegramCredentials

    @model_validator(mode="after")
    def _account_is_bot_id(self) -> TelegramChannelCreate:
        check_bot_token_account(self.credentials.bot_token, self.account_id)
        return self


def check_bot_token_account(bot_token: SecretStr, account_id: str) -> None:
    """A Telegram channel's account_id is its bot id: enforced on create and on a new bot_token."""
    match = _TELEGRAM_TOKEN.fullmatch(bot_token.get_secret_value())
    if match and match.group(1) != account_id:
        raise ValueError("account_id must be the bot id (the digits before ':' in bot_token)")


class TwilioChannelCreate(_ChannelCreateBase):
    platform: Literal["twilio"]
    credentials: TwilioCredentials

    @model_validator(mode="after")
    def _sender_shape(self) -> TwilioChannelCreate:
        if not _TWILIO_SENDER.fullmatch(self.account_id):
            raise ValueError(
                "account_id must be the sender: an E.164 number (+15551234567), "
                "'whatsapp:+15551234567', a Messaging Service SID (MG…) or an alphanumeric id"
            )
        return self


ChannelCreate = Annotated[
    WhatsAppChannelCreate
    | MessengerChannelCreate
    | InstagramChannelCreate
    | TelegramChannelCreate
    | TwilioChannelCreate,
    Field(discriminator="platform"),
]

CREDENTIAL_MODELS: dict[str, type[BaseModel]] = {
    "whatsapp": MetaCredentials,
    "messenger": MetaCredentials,
    "instagram": MetaCredentials,
    "telegram": TelegramCredentials,
    "twilio": TwilioCredentials,
}


_NOT_NULL = ("name", "enabled")


def _not_nullable(schema: JsonDict, fields: tuple[str, ...]) -> None:
    """Advertise optional-but-not-nullable fields as such. (`SkipJsonSchema[None]` would do it
    but turns the field into a union whose errors name internal branches.)"""
    properties = cast(dict[str, JsonDict], schema["properties"])
    for name in fields:
        variants = cast(list[JsonDict], properties[name].pop("anyOf"))
        properties[name].update(next(v for v in variants if v != {"type": "null"}))


class ChannelUpdate(_Strict):
    """Partial update. `credentials` keys given replace the stored ones; the others are kept.
    A credential given as null is removed (how a rotation ends: `{"previous_app_secret": null}`);
    a required credential cannot be removed, only replaced."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _not_nullable(schema, _NOT_NULL))

    # Omitted means unchanged (None here); an explicit null is refused (NOT NULL columns).
    name: Text200 | None = None
    api_base_url: HttpUrl | None = None
    send_rate_per_second: float | None = Field(default=None, ge=0.01, le=10_000)
    enabled: bool | None = None
    credentials: dict[str, Secret | None] | None = Field(
        default=None,
        description="Credentials to replace; null removes an optional one (a previous_* secret)",
    )

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for values given: an omitted field keeps its default without validation.
        if value is None:
            raise PydanticCustomError("not_nullable", "cannot be null; omit it to keep the value")
        return value


class SendingError(BaseModel):
    """The platform error that suspended a channel's sending (never a secret)."""

    code: str
    title: str | None = None
    http_status: int | None = None


class SendingState(BaseModel):
    """A channel's sending state as the outbox holds it (``outbox_channel_control``)."""

    sending: Literal["active", "paused", "suspended"] = "active"
    sending_reason: str | None = None
    sending_since: datetime | None = None
    sending_error: SendingError | None = None
    circuit: Literal["closed", "open", "half_open"] = "closed"


class ChannelRead(BaseModel):
    id: uuid.UUID
    platform: Platform
    name: str
    account_id: str
    api_base_url: str | None
    send_rate_per_second: float | None
    enabled: bool
    webhook_url: str
    credentials_set: list[str] = Field(description="Names of the stored credentials (never values)")
    created_at: datetime
    updated_at: datetime
    sending: Literal["active", "paused", "suspended"] = Field(
        default="active",
        description="Whether the outbox sends on this channel (webhooks are accepted either "
        "way): paused by an operator (`/pause`, `/resume`), or suspended after the platform "
        "refused the credentials (lifted by new credentials or `/resume`)",
    )
    sending_reason: str | None = Field(
        default=None,
        description="Why not active: `paused` (or the operator's reason), `credentials_refused`",
    )
    sending_since: datetime | None = None
    sending_error: SendingError | None = Field(
        default=None, description="The platform's refusal that suspended sending"
    )
    circuit: Literal["closed", "open", "half_open"] = Field(
        default="closed",
        description="The delivery worker's circuit breaker: `open` while the platform keeps "
        "failing (5xx, timeouts; messages wait, their retries not counted), `half_open` while "
        "one probe is sent",
    )
