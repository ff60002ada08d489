"""When an adviser wants a message sent: the WHEN at the start of a command's text.

Advisers type "!later mo 9:00 Ihre Farbe ist da" or "!later in 2h call back"; this module
reads the moment off the front ("mo 9:00", "in 2h") and hands back the rest of the text.
German and English, case-insensitive; see ``parse_when`` for the forms. Pure: ``now`` is
passed in.

Local times are read in the shop's zone like the business hours (``hours.wall_clock``): a
time that does not exist on the spring DST day (02:30) is one hour later on the clock, a
repeated autumn time means its first occurrence. "in 2h" and "in 90 min" are real elapsed
time; "in 3 days" and "in 1 week" keep the wall-clock time (10:00 stays 10:00 across a DST
change), which is what someone writing it means.

Decisions the forms leave open: a bare number ("9") is a time only after a day word ("mo 9",
"morgen 9"), never alone, where it would be too easily the start of the message; "am" is
a.m. when written on ("9am") or when it ends the text, but "9 am Lager" is German ("at the")
and leaves "am Lager" in the text; "1.12." needs its trailing dot to be a date, while "1.12"
is a time (01:12); a date or day word needs a time after it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from hub.i18n import N_, _, current_locale
from hub.scheduler.hours import wall_clock

__all__ = ["WhenError", "parse_when"]

_TRY = N_("(try: in 2h, mo 9:00, 2026-12-01 10:00)")


class WhenError(ValueError):
    """The WHEN could not be read, or is not in the future; the message is for the adviser."""


# Day words -> weekday (Monday 0). German two-letter forms are what advisers type in a hurry.
_WEEKDAYS: Mapping[str, int] = MappingProxyType(
    {
        **dict.fromkeys(("mo", "mon", "montag", "monday"), 0),
        **dict.fromkeys(("di", "tue", "tues", "dienstag", "tuesday"), 1),
        **dict.fromkeys(("mi", "wed", "mittwoch", "wednesday"), 2),
        **dict.fromkeys(("do", "thu", "thur", "thurs", "donnerstag", "thursday"), 3),
        **dict.fromkeys(("fr", "fri", "freitag", "friday"), 4),
        **dict.fromkeys(("sa", "sat", "samstag", "sonnabend", "saturday"), 5),
        **dict.fromkeys(("so", "sun", "sonntag", "sunday"), 6),
    }
)
# Day words -> days from today.
_RELATIVE_DAYS: Mapping[str, int] = MappingProxyType(
    {
        "heute": 0,
        "today": 0,
        "morgen": 1,
        "tomorrow": 1,
        "übermorgen": 2,
        "uebermorgen": 2,
    }
)

# A word ends where no letter follows ("2hours" is 2 + hours, "morgn" is not "morgen").
_END = r"(?![^\W\d_])"
# After the WHEN: the end, or whitespace; a "," or ":" right after it is dropped ("9:00: Hi").
_AFTER = re.compile(r"[,;:]?(?:\s+|$)")
_WORD = re.compile(r"\S+")
_DAY_WORD = re.compile(r"([^\W\d_]+)[.,]?(?:\s+(?:um|at)(?=\s))?(?=\s|$)", re.I)
_TIME = re.compile(
    rf"""(?P<h>\d{{1,2}})(?:[:.](?P<m>\d{{2}}))?
    (?: \s*uhr{_END}
      | (?P<ap>[ap]\.m\.|[ap]m){_END}  # written on: 9am, 9:30pm, 9a.m.
      | \s+(?P<sp>[ap]\.m\.|pm){_END}  # after a space; "am" only at the end, because
      | \s+(?P<am>am)\s*$              # German "9 am Lager" is "at the" store
    )?""",
    re.I | re.X,
)
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:T|\s+(?:um\s+|at\s+)?|$)", re.I)
_GERMAN = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})?(?:\s+(?:um\s+|at\s+)?|$)", re.I)
_UNITS = (
    (r"min(?:uten?|utes?|s)?|m", "minutes"),
    (r"h(?:ours?|rs?)?|std\.?|stunden?", "hours"),
    (r"d(?:ays?)?|tag(?:en?)?", "days"),
    (r"w(?:eeks?|ks?)?|wochen?", "weeks"),
)
# "a" and "an" need a space after them, or "and" would be "an d" (a day).
_NUMBER = r"(\d{1,6}(?=\s*[^\W\d_])|(?:einer|einem|einen|eine|ein|an|a)(?=\s))"
_AMOUNT = _NUMBER + r"\s*(" + "|".join(u for u, _ in _UNITS) + ")"
# "in 1h 30min", "in 1 Stunde und 30 Minuten", "in 1 hour, 30 minutes".
_SEPARATOR = r"\s*,?\s*(?:(?:und|and)\s+)?"
_RELATIVE = re.compile(rf"in\s+({_AMOUNT}{_END}(?:{_SEPARATOR}{_AMOUNT}{_END})*)", re.I)
_PART = re.compile(_AMOUNT + _END, re.I)
_UNIT_NAMES = tuple((re.compile(u + r"\Z", re.I), name) for u, name in _UNITS)


def parse_when(text: str, now: datetime, tz: ZoneInfo) -> tuple[datetime, str]:
    """Read the WHEN at the start of ``text``: (the moment in ``tz``, the rest stripped).

    Forms, German or English, any case:
    relative "in 2h", "in 90 min", "in 2 Stunden", "in 1 hour", "in 3 Tagen", "in 1d",
    "in 1h 30min"; a weekday and a time, the next such day (today only if the time is
    still ahead) "mo 9:00", "Montag 9 Uhr", "mon 9am", "di"/"tue" … "so"/"sun"; "heute",
    "today", "morgen", "tomorrow", "übermorgen" and a time; a date and a time
    "2026-12-01 10:00", "2026-12-01T10:00", "01.12.2026 10:00", "1.12. 10:00" (this year,
    else next year); a bare time "17:30", today if still ahead, else tomorrow. Times:
    "9", "9:00", "09:00", "9.00", "9:00 Uhr", "9am", "9:30pm".

    Raises WhenError if the WHEN is not understood or not in the future.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise WhenError(_("no time given {examples}").format(examples=_(_TRY)))
    today = now.astimezone(tz).date()
    for reader in (_relative, _absolute, _day_word, _bare_time):
        found = reader(text, now, today, tz)
        if found is not None:
            moment, end = found
            _check_future(text[:end].strip().rstrip(",;:"), moment, now)
            return moment, text[end:].strip()
    word = _WORD.match(text)
    raise WhenError(
        _("«{text}» is not a time {examples}").format(
            text=word[0] if word else text, examples=_(_TRY)
        )
    )


def _check_future(shown: str, moment: datetime, now: datetime) -> None:
    # Compared in UTC: two datetimes of the same zone compare by wall clock in Python.
    if moment.astimezone(UTC) <= now.astimezone(UTC):
        when = format_datetime(moment, "EEE yyyy-MM-dd HH:mm", locale=current_locale())
        raise WhenError(_("«{text}» ({when}) is in the past").format(text=shown, when=when))


def _after(text: str, pos: int) -> int | None:
    """Where the rest of the text starts if the WHEN ends at ``pos``, else None."""
    found = _AFTER.match(text, pos)
    return found.end() if found else None


def _time(text: str, pos: int, *, bare_hour: bool) -> tuple[int, int] | None:
    """(minutes after midnight, end) of a time at ``pos``; WhenError if it is one but invalid.

    ``bare_hour``: "9" alone counts (after a day word). None if there is no time at ``pos``.
    """
    found = _TIME.match(text, pos)
    if found is None:
        return None
    end = _after(text, found.end())
    if end is None:
        return None
    hour, minute = int(found["h"]), int(found["m"] or 0)
    meridiem = (found["ap"] or found["sp"] or found["am"] or "").replace(".", "").lower()
    if not (found["m"] or meridiem or found[0][len(found["h"]) :].strip() or bare_hour):
        return None
    token = found[0].strip()
    if minute > 59 or hour > (12 if meridiem else 23) or (meridiem and hour == 0):
        raise WhenError(_("«{text}» is not a time of day").format(text=token))
    if meridiem:
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    return hour * 60 + minute, end


def _time_after(text: str, pos: int, what: str) -> tuple[int, int]:
    """The time that must follow a day or date word (``what``, for the message)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    found = _time(text, pos, bare_hour=True)
    if found is None:
        after = _WORD.match(text, pos)
        if after is None:
            raise WhenError(_("«{day}» needs a time, e.g. «{day} 9:00»").format(day=what))
        raise WhenError(
            _("«{text}» is not a time (after «{day}», try e.g. 9:00)").format(
                text=after[0], day=what
            )
        )
    return found


def _relative(text: str, now: datetime, today: date, tz: ZoneInfo) -> tuple[datetime, int] | None:
    if not re.match(r"in\s", text, re.I):
        return None
    found = _RELATIVE.match(text)
    end = _after(text, found.end()) if found else None
    if found is None or end is None:
        shown = " ".join(text.split()[:2])
        raise WhenError(
            _("«{text}» is not a duration (try: in 2h, in 90 min, in 3 days)").format(text=shown)
        )
    amounts = {"minutes": 0, "hours": 0, "days": 0, "weeks": 0}
    for part in _PART.finditer(found[1]):
        number = int(part[1]) if part[1].isdigit() else 1  # "in einer Stunde", "in an hour"
        unit = next(name for pattern, name in _UNIT_NAMES if pattern.match(part[2]))
        amounts[unit] += number
    try:
        # Days keep the wall-clock time, hours and minutes are real time (module docstring).
        moment = now.astimezone(tz)
        days = amounts["days"] + 7 * amounts["weeks"]
        if days:  # without days ``now`` stays as it is: it may be a repeated autumn time
            day = moment.date() + timedelta(days=days)
            clock = wall_clock(day, moment.hour * 60 + moment.minute, tz)
            moment = clock.replace(second=moment.second, microsecond=moment.microsecond)
        elapsed = timedelta(hours=amounts["hours"], minutes=amounts["minutes"])
        moment = (moment.astimezone(UTC) + elapsed).astimezone(tz)
    except OverflowError:
        raise WhenError(_("«{text}» is too far ahead").format(text=found[0])) from None
    return moment, end


def _absolute(text: str, now: datetime, today: date, tz: ZoneInfo) -> tuple[datetime, int] | None:
    iso = _ISO.match(text)
    found = iso or _GERMAN.match(text)
    if found is None:
        return None
    shown = found[0].strip()
    minute, end = _time_after(text, found.end(), shown)
    if iso:
        years = [int(iso[1])]
        day, month = int(iso[3]), int(iso[2])
    else:
        day, month, year = int(found[1]), int(found[2]), found[3]
        if year is None:  # "1.12.": this year, or next year once it has passed
            years = [today.year, today.year + 1]
        else:
            years = [int(year) + (2000 if len(year) == 2 else 0)]
    moment = None
    for year in years:
        try:
            moment = wall_clock(date(year, month, day), minute, tz)
        except ValueError:
            continue
        if moment.astimezone(UTC) > now.astimezone(UTC):
            break
    if moment is None:
        raise WhenError(_("«{text}» is not a date").format(text=shown))
    return moment, end


def _day_word(text: str, now: datetime, today: date, tz: ZoneInfo) -> tuple[datetime, int] | None:
    found = _DAY_WORD.match(text)
    if found is None:
        return None
    word = found[1].casefold()
    if word in _RELATIVE_DAYS:
        minute, end = _time_after(text, found.end(), found[1])
        return wall_clock(today + timedelta(days=_RELATIVE_DAYS[word]), minute, tz), end
    if word in _WEEKDAYS:
        minute, end = _time_after(text, found.end(), found[1])
        day = today + timedelta(days=(_WEEKDAYS[word] - today.weekday()) % 7)
        moment = wall_clock(day, minute, tz)
        if moment.astimezone(UTC) <= now.astimezone(UTC):
            moment = wall_clock(day + timedelta(days=7), minute, tz)
        return moment, end
    return None


def _bare_time(text: str, now: datetime, today: date, tz: ZoneInfo) -> tuple[datetime, int] | None:
    found = _time(text, 0, bare_hour=False)
    if found is None:
        return None
    minute, end = found
    moment = wall_clock(today, minute, tz)
    if moment.astimezone(UTC) <= now.astimezone(UTC):
        moment = wall_clock(today + timedelta(days=1), minute, tz)
    return moment, end
