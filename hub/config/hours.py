"""The `hours`, `replies`, `missed` and `scheduled` sections of the config: when the shop is
open, what the bot answers while it is not, when a conversation counts as missed, and what
happens to a scheduled message that came due while the hub was down.

Texts left empty come from the catalogues in the shop's language (hub.i18n).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from hub.config.section import Section
from hub.scheduler.hours import Interval, Schedule, parse_day

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAY_KEYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PublicHolidays(Section):
    """Checked against the `holidays` package when the hub starts and by `hub check-config`
    (hub.scheduler.holiday_dates, in a child process: see there why)."""

    # ISO 3166 country code as the `holidays` package knows it, e.g. DE; "" for none.
    country: str = Field("", pattern=r"^([A-Z]{2,3})?$")
    # A subdivision of it, e.g. NW (North Rhine-Westphalia); "" for the country's own only.
    region: str = Field("", pattern=r"^[A-Za-z0-9-]{0,12}$")

    @model_validator(mode="after")
    def _country_first(self) -> PublicHolidays:
        if self.region and not self.country:
            raise ValueError("region is set but country is not")
        return self


class HoursConfig(Section):
    """Opening hours in shop.timezone. No `weekly` at all: always open (no holding replies,
    no missed conversations)."""

    # Per weekday: "9-13, 14-18", "09:00-18:00", or "closed". A day left out is closed.
    weekly: dict[Weekday, str] = Field(default_factory=dict)
    holidays: PublicHolidays = Field(default_factory=PublicHolidays)
    # Extra closing days, e.g. company holidays.
    closed: list[date] = Field(default_factory=list)
    # Dates whose hours replace their weekday's, e.g. {"2026-12-24": "9-13"}.
    special: dict[date, str] = Field(default_factory=dict)

    @field_validator("weekly", "special")
    @classmethod
    def _days(cls, value: dict[object, str]) -> dict[object, str]:
        for key, text in value.items():
            try:
                parse_day(text)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return value

    @property
    def configured(self) -> bool:
        return bool(self.weekly)

    def schedule(self, timezone: str, holidays: Mapping[date, str] | None = None) -> Schedule:
        """The schedule; `holidays`: the public holidays' dates and names (from
        hub.scheduler.holiday_dates)."""
        tz = ZoneInfo(timezone)
        if not self.configured:
            return Schedule.always_open(tz)
        weekly: tuple[tuple[Interval, ...], ...] = tuple(
            parse_day(self.weekly.get(key, "closed")) for key in WEEKDAY_KEYS
        )
        return Schedule(
            timezone=tz,
            weekly=weekly,
            special={day: parse_day(text) for day, text in self.special.items()},
            closed=frozenset(self.closed),
            holidays=holidays,
        )


class GreetingConfig(Section):
    """An answer to a customer's first message of a new conversation."""

    enabled: bool = False
    text: str | None = None
    # Another text for some channels, e.g. {whatsapp: "…"}.
    by_channel: dict[str, str] = Field(default_factory=dict)


class HoldingConfig(Section):
    """The answer when a customer writes while the shop is closed: once per closed period
    and conversation. Placeholders: {next_opening} ("Montag, 9:00 Uhr"), {shop}."""

    enabled: bool = True
    text: str | None = None
    # On a day the shop does not open at all (Sundays, holidays); {holiday} is its name.
    closed_day_text: str | None = None
    # No holding reply when an adviser answered this conversation that recently.
    quiet_after_reply_minutes: int = Field(10, ge=0, le=24 * 60)
    # Added when a channel's reply window (WhatsApp: 24 h) closes before the shop reopens.
    window_note: str | None = None
    # The title of the one-tap button offered with that note (a tap reopens the window).
    window_button: str | None = None


class BackConfig(Section):
    """At the next opening, to customers who got a holding reply and no adviser answer yet."""

    enabled: bool = False
    text: str | None = None


class RepliesConfig(Section):
    greeting: GreetingConfig = Field(default_factory=GreetingConfig)
    holding: HoldingConfig = Field(default_factory=HoldingConfig)
    back: BackConfig = Field(default_factory=BackConfig)


class MissedConfig(Section):
    # A conversation with no adviser reply within this many minutes of opening time counts
    # as missed: the lobby (shop.lobby_room) is alerted. 0: not watched.
    after_minutes: int = Field(15, ge=0, le=7 * 24 * 60)


class ScheduledConfig(Section):
    # A scheduled message that came due while the hub was down is sent at start, unless it
    # is later than this: then it is dropped and the room told.
    max_late_minutes: int = Field(60, ge=0, le=7 * 24 * 60)
    # How often each hub process looks for due timers it holds no alarm for (added by
    # another process on the same database, or whose firing failed).
    sweep_seconds: float = Field(30, gt=0, le=3600)


def check_timezone(name: str) -> str:
    """A time zone the system's tz database knows, e.g. Europe/Berlin."""
    try:
        ZoneInfo(name)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown time zone {name!r} (e.g. Europe/Berlin)") from exc
    return name
