"""API schemas of the channel resource (docs/contracts.md §2). Credentials are write-only:
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
    StrictBool,
    UrlConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from infra.schema_types import Label, Secret, Text
from normalizer.platforms import Platform

_TELEGRAM_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{20,}$")
_TELEGRAM_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_TWILIO_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_DIGITS = re.compile(r"^\d{1,30}$")
_TWILIO_SENDER = re.compile(
    r"^(whatsapp:)?\+[1-9]\d{6,14}$|^MG[0-9a-fA-F]{32}$|^[A-Za-z0-9 ]{1,11}$"
)


API_BASE_URL_MAX = 500
"""Length of the ``channels.api_base_url`` column, as the URL is stored (no trailing slash)."""


def _fits_column(url: HttpUrl) -> HttpUrl:
    # The stored form, which normalisation (punycode, percent-encoding) may have lengthened.
    if len(str(url).rstrip("/")) > API_BASE_URL_MAX:
        raise PydanticCustomError(
            "url_too_long", "must be at most {max} characters", {"max": API_BASE_URL_MAX}
        )
    return url


ApiBaseUrl = Annotated[
    HttpUrl, UrlConstraints(max_length=API_BASE_URL_MAX), AfterValidator(_fits_column)
]


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
    name: Label
    account_id: Label
    api_base_url: ApiBaseUrl | None = Field(
        default=None,
        description="Override of the platform API base URL (tests, proxies); refused unless "
        "the deployment allows it (SWITCHBOARD_ALLOW_API_BASE_URL_OVERRIDE or "
        "SWITCHBOARD_API_BASE_URL_ALLOWED_HOSTS)",
    )
    send_rate_per_second: float | None = Field(
        default=None,
        ge=0.01,
        le=10_000,
        strict=True,
        description="Sends per second, 0.01 to 10,000; null = the platform's default limit",
    )
    enabled: StrictBool = True


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
    business_account_id: Label | None = Field(
        default=None,
        description="The WhatsApp Business Account (WABA) id: its message templates are synced "
        "and template sends are checked against them",
    )

    @field_validator("business_account_id")
    @classmethod
    def _numeric_waba(cls, value: str | None) -> str | None:
        return check_business_account_id(value)


def check_business_account_id(value: str | None) -> str | None:
    """A WABA id is a numeric Meta id."""
    if value is not None and not _DIGITS.fullmatch(value):
        raise ValueError("must be the numeric WhatsApp Business Account id")
    return value


class MessengerChannelCreate(_MetaChannelCreate):
    platform: Literal["messenger"]


class InstagramChannelCreate(_MetaChannelCreate):
    platform: Literal["instagram"]


class TelegramChannelCreate(_ChannelCreateBase):
    platform: Literal["telegram"]
    credentials: TelegramCredentials
    auto_answer_callbacks: bool = Field(
        default=True,
        description="Answer button presses (answerCallbackQuery) automatically so the button "
        "stops spinning; off when the application answers them with callback_answer commands",
    )

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
    name: Label | None = None
    api_base_url: ApiBaseUrl | None = None
    send_rate_per_second: float | None = Field(default=None, ge=0.01, le=10_000, strict=True)
    enabled: StrictBool | None = None
    credentials: dict[str, Secret | None] | None = Field(
        default=None,
        description="Credentials to replace; null removes an optional one (a previous_* secret)",
    )
    business_account_id: Label | None = Field(
        default=None, description="WhatsApp only: the WABA id; null removes it"
    )
    auto_answer_callbacks: bool | None = Field(
        default=None, description="Telegram only: answer button presses automatically"
    )

    @field_validator("business_account_id")
    @classmethod
    def _numeric_waba(cls, value: str | None) -> str | None:
        return check_business_account_id(value)

    @field_validator("auto_answer_callbacks", mode="before")
    @classmethod
    def _switch_not_null(cls, value: object) -> object:
        if value is None:
            raise PydanticCustomError("not_nullable", "cannot be null; omit it to keep the value")
        return value

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
    business_account_id: str | None = Field(default=None, description="WhatsApp: the WABA id")
    auto_answer_callbacks: bool = Field(
        default=True, description="Telegram: button presses are answered automatically"
    )
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
