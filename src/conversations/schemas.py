"""API schemas of the conversations endpoints (never the ORM rows, never the wire events)."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

ConversationState = Literal["open", "unanswered", "answered"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
Text = Annotated[str, Field(min_length=1, max_length=4096)]
Keyword = Annotated[str, Field(min_length=1, max_length=64)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpeningHours(_Input):
    start: str = Field(description="HH:MM, local time", examples=["09:00"])
    end: str = Field(description="HH:MM, exclusive; 00:00 means midnight", examples=["17:30"])

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError("must be a time of day as HH:MM (00:00-23:59)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> OpeningHours:
        end = time.fromisoformat(self.end)
        if end != time(0) and end <= time.fromisoformat(self.start):
            raise ValueError("end must be after start (00:00 as the end means midnight)")
        return self


class AutoReplyConfig(_Input):
    """The automatic acknowledgement of a channel: the first customer message of an episode
    gets ``text_in_hours`` within business hours, ``text_outside_hours`` outside them (a text
    left out: no acknowledgement then), at most once per conversation per ``cooldown_hours``."""

    text_in_hours: Text | None = None
    text_outside_hours: Text | None = None
    timezone: str = Field(default="UTC", description="IANA time zone", examples=["Europe/Rome"])
    business_hours: dict[Weekday, list[OpeningHours]] = Field(
        default_factory=dict,
        description="Open intervals per weekday; a weekday left out is closed all day",
    )
    holidays: list[date] = Field(default_factory=list, max_length=1000)
    cooldown_hours: float = Field(default=24.0, ge=0, le=8760)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone: use an IANA name such as Europe/Rome") from None
        return value

    @model_validator(mode="after")
    def _some_text(self) -> AutoReplyConfig:
        if self.text_in_hours is None and self.text_outside_hours is None:
            raise ValueError("give text_in_hours, text_outside_hours or both")
        return self


class ConversationSettings(_Input):
    unanswered_after_seconds: float | None = Field(
        default=None,
        gt=0,
        le=30 * 86400,
        description="conversation.unanswered after a customer message waited this long; null: off",
    )
    opt_out_keywords: list[Keyword] | None = Field(
        default=None,
        max_length=100,
        description="null: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT",
    )
    opt_in_keywords: list[Keyword] | None = Field(
        default=None, max_length=100, description="null: START, UNSTOP"
    )


class ConversationRead(BaseModel):
    conversation_id: str
    channel_id: uuid.UUID
    platform: str
    contact_id: str = Field(description="The contact key on the channel (opt-outs use it)")
    recipient: str = Field(description="`to` of a send command reaching this conversation")
    contact: dict[str, JsonValue] | None
    state: ConversationState
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    last_activity_at: datetime
    unanswered_since: datetime | None
    opted_out: bool


class ConversationPage(BaseModel):
    items: list[ConversationRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")


class TimelineMessage(BaseModel):
    direction: Literal["inbound", "outbound"]
    message_id: str = Field(description="inbound: platform message id; outbound: outbox id")
    platform_message_id: str | None
    kind: str | None
    text: str | None
    media: dict[str, JsonValue] | None
    state: str
    automatic: bool
    metadata: dict[str, JsonValue] | None
    error: dict[str, JsonValue] | None
    occurred_at: datetime


class TimelinePage(BaseModel):
    items: list[TimelineMessage]
    next_cursor: str | None


class OptOutWrite(_Input):
    reason: Annotated[str, Field(max_length=200)] | None = None


class OptOutRead(BaseModel):
    contact_id: str
    source: str
    reason: str | None
    opted_out_at: datetime


class OptOutPage(BaseModel):
    items: list[OptOutRead]
    next_cursor: str | None


def as_json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
