"""Decisions of the conversation layer, pure: time is passed in.

* ``within_hours``: is an instant inside a channel's business hours (per weekday, in its time
  zone, holidays closed all day)?
* ``auto_reply_text``: which acknowledgement (if any) the first message of an episode gets.
* ``keyword_action``: is a message an opt-out or opt-in keyword?
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

DEFAULT_OPT_OUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
DEFAULT_OPT_IN = ("START", "UNSTOP")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Interval:
    start: time
    end: time
    """Exclusive; ``00:00`` as the end means midnight (the end of the day)."""

    def contains(self, at: time) -> bool:
        if self.end == time(0) and self.start != time(0):
            return at >= self.start
        if self.start == self.end == time(0):
            return True
        return self.start <= at < self.end


@dataclass(frozen=True)
class AutoReply:
    text_in_hours: str | None
    text_outside_hours: str | None
    timezone: str = "UTC"
    hours: dict[str, tuple[Interval, ...]] = field(default_factory=dict)
    """Weekday name → open intervals; a weekday not named is closed all day."""
    holidays: frozenset[date] = frozenset()
    cooldown_hours: float = 24.0


def within_hours(rule: AutoReply, at: datetime) -> bool:
    local = at.astimezone(ZoneInfo(rule.timezone))
    if local.date() in rule.holidays:
        return False
    intervals = rule.hours.get(WEEKDAYS[local.weekday()], ())
    moment = local.time().replace(tzinfo=None)
    return any(i.contains(moment) for i in intervals)


def auto_reply_text(
    rule: AutoReply,
    *,
    at: datetime,
    last_auto_reply_at: datetime | None,
    opted_out: bool,
    replied_in_episode: bool,
) -> str | None:
    """The acknowledgement to send at ``at``, or ``None``: never to an opted-out contact,
    never once the episode has a reply, at most once per cooldown per conversation."""
    if opted_out or replied_in_episode:
        return None
    if last_auto_reply_at is not None and at - last_auto_reply_at < timedelta(
        hours=rule.cooldown_hours
    ):
        return None
    return rule.text_in_hours if within_hours(rule, at) else rule.text_outside_hours


def normalise_keyword(text: str) -> str:
    """Case-, space- and trailing-punctuation-insensitive form (``" Stop! "`` → ``STOP``)."""
    return text.strip().rstrip(".!?¡¿ ").strip().casefold().upper()


def keyword_action(
    text: str | None,
    opt_out: tuple[str, ...] | list[str] = DEFAULT_OPT_OUT,
    opt_in: tuple[str, ...] | list[str] = DEFAULT_OPT_IN,
) -> Literal["opt_out", "opt_in"] | None:
    """The whole message must be the keyword (as carriers do for SMS): "please stop calling
    me at work" is not an opt-out."""
    if not text or len(text) > 64:
        return None
    word = normalise_keyword(text)
    if word in {normalise_keyword(k) for k in opt_out}:
        return "opt_out"
    if word in {normalise_keyword(k) for k in opt_in}:
        return "opt_in"
    return None


PLATFORM_OPT_OUT_CODES = {
    ("twilio", "21610"): "twilio_21610_unsubscribed",
    ("whatsapp", "131050"): "whatsapp_131050_marketing_opt_out",
}
"""Platform error codes meaning the recipient opted out (on a receipt or a failed send)."""


def platform_opt_out(platform: str, code: str | None) -> str | None:
    if code is None:
        return None
    return PLATFORM_OPT_OUT_CODES.get((platform, code))


def auto_reply_from_json(doc: dict[str, Any]) -> AutoReply:
    """The stored configuration (``schemas.AutoReplyConfig`` as JSON) as a rule."""
    hours = {
        day: tuple(
            Interval(time.fromisoformat(i["start"]), time.fromisoformat(i["end"]))
            for i in intervals
        )
        for day, intervals in (doc.get("business_hours") or {}).items()
    }
    return AutoReply(
        text_in_hours=doc.get("text_in_hours"),
        text_outside_hours=doc.get("text_outside_hours"),
        timezone=doc.get("timezone") or "UTC",
        hours=hours,
        holidays=frozenset(date.fromisoformat(d) for d in doc.get("holidays") or ()),
        cooldown_hours=float(doc.get("cooldown_hours", 24.0)),
    )
