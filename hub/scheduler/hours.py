"""Business hours: when the shop is open, when it opens next, and open time between moments.

The shop works split shifts Monday to Saturday; customers write on Sundays, on holidays and at
night. The hub asks this module, for every inbound message, whether someone is there, when
someone will be, and when a reply is due (a limit counted in *open* minutes). Pure: the clock
is always passed in, nothing is read from the system.

A day's hours come, in this order, from ``special`` (a date that overrides its weekday, e.g.
Christmas Eve 9-13; an empty tuple closes it), else closed on a closing date or a public
holiday, else from ``weekly``.

Opening hours are wall-clock times in the schedule's time zone; every computation turns them
into UTC instants first, because arithmetic between aware datetimes of the same zone is
wall-clock arithmetic in Python and would be wrong on the two DST days. So on the spring
day (Europe/Berlin 2026-03-29, 02:00 -> 03:00) an interval 01:00-05:00 lasts 3 real hours and
on the autumn day (2026-10-25) 5. A local time that does not exist (02:30 in spring) is read
with the offset before the change, which is one hour later on the clock (03:30 CEST); one
that exists twice (02:30 in autumn) means its first occurrence. Both are Python's ``fold=0``.

Adjacent openings form one *stretch*: touching intervals (09:00-13:00 + 13:00-18:00) and
openings through midnight (Fri 18:00-24:00 + Sat 00:00-02:00) are open without a gap, so
they neither close nor open the shop in between. Searches look at most ``HORIZON_DAYS``
days ahead or behind and visit days, never minutes: a call costs microseconds.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo

__all__ = [
    "DAY_MINUTES",
    "HORIZON_DAYS",
    "Interval",
    "Schedule",
    "check_day",
    "parse_day",
    "parse_interval",
    "wall_clock",
]

DAY_MINUTES = 1440  # an interval may end at 24:00: open until midnight
HORIZON_DAYS = 400  # how far searches look ahead or behind; beyond that the answer is None
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ONE_DAY = timedelta(days=1)
_EXAMPLE = "expected e.g. 09:00-13:00"

# "9", "09", "9:00", "09.30"; the dashes are hyphen, en dash and em dash, because phones and
# word processors turn "-" into "–" as it is typed.
_TIME = r"(\d{1,2})(?:[:.](\d{2}))?"
_INTERVAL = re.compile(rf"\s*{_TIME}\s*[-–—]\s*{_TIME}\s*")
_CLOSED_WORDS = frozenset({"", "-", "–", "closed", "geschlossen", "zu"})


@dataclass(frozen=True, order=True)
class Interval:
    """An opening on one day, in minutes after local midnight: ``0 <= start < end <= 1440``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= DAY_MINUTES:
            raise ValueError(
                f"an opening needs 0 <= start < end <= {DAY_MINUTES} minutes, "
                f"got {self.start}-{self.end}"
            )

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(minute: int) -> str:
    hour, rest = divmod(minute, 60)
    return f"{hour:02d}:{rest:02d}"


def _minute_of_day(text: str, hours: str, minutes: str | None) -> int:
    hour, minute = int(hours), int(minutes or 0)
    if hour > 24 or minute > 59 or (hour == 24 and minute):
        token = f"{hours}:{minutes}" if minutes is not None else hours
        raise ValueError(f"{text}: {token} is not a time of day (00:00 to 24:00)")
    return hour * 60 + minute


def parse_interval(text: str) -> Interval:
    """Read "09:00-13:00", "9-13", "9:00–13:00", "13:30 - 18:00" or "00:00-24:00"."""
    shown = text.strip()
    if not shown:
        raise ValueError(f"an opening interval is empty ({_EXAMPLE})")
    found = _INTERVAL.fullmatch(text)
    if found is None:
        raise ValueError(f"«{shown}» is not an opening interval ({_EXAMPLE})")
    start = _minute_of_day(shown, found[1], found[2])
    end = _minute_of_day(shown, found[3], found[4])
    if end <= start:
        raise ValueError(f"{shown}: the end must be after the start")
    return Interval(start, end)


def check_day(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """A day's intervals sorted; overlapping ones are refused (touching ones are fine)."""
    ordered = tuple(sorted(intervals))
    for before, after in pairwise(ordered):
        if after.start < before.end:
            raise ValueError(f"{before} and {after} overlap")
    return ordered


def parse_day(text: str) -> tuple[Interval, ...]:
    """One day's hours as an admin writes them: "9-13, 14-18"; "closed" or "" for none."""
    if text.strip().casefold() in _CLOSED_WORDS:
        return ()
    return check_day(parse_interval(part) for part in re.split(r"[,;]", text))


def _utc(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant at which clocks in ``tz`` show ``minute`` after midnight of ``day``."""
    if minute == DAY_MINUTES:
        day, minute = day + _ONE_DAY, 0
    hour, rest = divmod(minute, 60)
    # fold=0: a time in the spring gap takes the offset before the change, a repeated autumn
    # time its first occurrence (see the module docstring).
    return datetime(day.year, day.month, day.day, hour, rest, tzinfo=tz).astimezone(UTC)


def wall_clock(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """``day`` at ``minute`` after local midnight in ``tz``, as an aware datetime in ``tz``.

    Normalised through UTC, so a time that does not exist comes back as the one the clocks
    really show then (02:30 on the spring day -> 03:30).
    """
    return _utc(day, minute, tz).astimezone(tz)


def _as_utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        # A naive datetime would be read in the machine's zone: a hidden clock we refuse.
        raise ValueError(f"{moment.isoformat()} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC)


# A stretch of opening: (start, end, known) in UTC. ``known`` is False when the search
# horizon cut the stretch, so that end (or start, searching backwards) is not a real one.
_Stretch = tuple[datetime, datetime, bool]


@dataclass(frozen=True)
class Schedule:
    """A shop's hours: weekly intervals (Monday first), special dates, closing days, holidays.

    ``special`` overrides a date's weekday (an empty tuple closes it); ``closed`` adds closing
    days; ``holidays`` is a public-holiday calendar such as
    ``holidays.country_holidays("DE", subdiv="NW")``. Every result is an aware datetime in
    ``timezone``; inputs may be aware datetimes in any zone (naive ones are refused).
    """

    timezone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]
    special: Mapping[date, tuple[Interval, ...]] = field(default_factory=dict)
    closed: frozenset[date] = frozenset()
    holidays: Mapping[date, str] | None = None
    # Derived in __post_init__ so the searches can skip what cannot open.
    _weekly_open: bool = field(init=False, repr=False, compare=False)
    _special_open: tuple[date, ...] = field(init=False, repr=False, compare=False)
    _always: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        weekly = tuple(self.weekly)
        if len(weekly) != 7:
            raise ValueError(f"weekly hours need 7 days, Monday first; got {len(weekly)}")
        checked = []
        for name, day in zip(WEEKDAYS, weekly, strict=True):
            try:
                checked.append(check_day(day))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        special: dict[date, tuple[Interval, ...]] = {}
        for when, intervals in self.special.items():
            _require_date(when)
            try:
                special[when] = check_day(intervals)
            except ValueError as exc:
                raise ValueError(f"{when.isoformat()}: {exc}") from None
        closed = frozenset(self.closed)
        for when in closed:
            _require_date(when)
        setattr_ = object.__setattr__  # frozen: normalise once, here
        setattr_(self, "weekly", tuple(checked))
        setattr_(self, "special", MappingProxyType(special))
        setattr_(self, "closed", closed)
        setattr_(self, "_weekly_open", any(checked))
        setattr_(self, "_special_open", tuple(sorted(d for d, iv in special.items() if iv)))
        full = (Interval(0, DAY_MINUTES),)
        always = all(day == full for day in checked) and not special and not closed
        setattr_(self, "_always", always and not self.holidays)

    @classmethod
    def always_open(cls, tz: ZoneInfo) -> Schedule:
        """A shop without hours: open around the clock, every day."""
        return cls(tz, ((Interval(0, DAY_MINUTES),),) * 7)

    # --- days ------------------------------------------------------------------------------

    def intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The day's opening intervals after special dates, closing days and holidays."""
        _require_date(day)
        return self._intervals_on(day)

    def _intervals_on(self, day: date) -> tuple[Interval, ...]:
        special = self.special.get(day)
        if special is not None:
            return special
        if day in self.closed or (self.holidays is not None and day in self.holidays):
            return ()
        return self.weekly[day.weekday()]

    def holiday_name(self, day: date) -> str | None:
        """Why a day is closed although its weekday is not: the holiday's name, or "closed"
        for a closing date; None on a normal day and on a special date."""
        _require_date(day)
        if day in self.special:
            return None
        if self.holidays is not None:
            name = self.holidays.get(day)
            if name is not None:
                return str(name)
        return "closed" if day in self.closed else None

    def is_closed_day(self, day: date) -> bool:
        """True if the shop does not open at all on ``day`` (a Sunday, a holiday)."""
        return not self.intervals_on(day)

    def _periods_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's openings as UTC (start, end) pairs, sorted, touching ones merged."""
        intervals = self._intervals_on(day)
        if not intervals:
            return []
        tz = self.timezone
        periods = []
        for interval in intervals:
            start, end = _utc(day, interval.start, tz), _utc(day, interval.end, tz)
            if start < end:  # 02:30-03:00 on the spring day ends before it starts: nothing
                periods.append((start, end))
        if len(periods) > 1:
            # fold=0 maps gap times onto the hour after the gap, so on that day the UTC order
            # can differ from the wall-clock order and two openings can overlap.
            periods.sort()
            merged = [periods[0]]
            for start, end in periods[1:]:
                if start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            return merged
        return periods

    def _days(self, first: date, count: int, step: int) -> Iterator[date]:
        """``count`` days from ``first`` on, forwards (step 1) or backwards (step -1), leaving
        out, when no weekday ever opens, every day that is not an open special date."""
        if self._weekly_open:
            ordinal = first.toordinal()
            for offset in range(count):
                yield date.fromordinal(ordinal + step * offset)
            return
        last = first + timedelta(days=step * (count - 1))
        days = self._special_open
        if step > 0:
            yield from days[bisect_left(days, first) : bisect_right(days, last)]
        else:
            yield from reversed(days[bisect_left(days, last) : bisect_right(days, first)])

    def _forward(self, first: date) -> Iterator[_Stretch]:
        """Stretches of opening from ``first`` on, in order, through the horizon."""
        count = HORIZON_DAYS + 2
        pending: tuple[datetime, datetime] | None = None
        for day in self._days(first, count, 1):
            for start, end in self._periods_on(day):
                if pending is None:
                    pending = (start, end)
                elif start <= pending[1]:
                    pending = (pending[0], max(pending[1], end))
                else:
                    yield (*pending, True)
                    pending = (start, end)
        if pending is not None:
            limit = _utc(first + timedelta(days=count), 0, self.timezone)
            yield (*pending, pending[1] < limit)

    def _backward(self, last: date) -> Iterator[_Stretch]:
        """Stretches of opening up to the end of ``last``, latest first, through the horizon;
        ``known`` says whether the stretch's start is a real opening."""
        count = HORIZON_DAYS + 2
        pending: tuple[datetime, datetime] | None = None
        for day in self._days(last, count, -1):
            for start, end in reversed(self._periods_on(day)):
                if pending is None:
                    pending = (start, end)
                elif end >= pending[0]:
                    pending = (min(pending[0], start), pending[1])
                else:
                    yield (*pending, True)
                    pending = (start, end)
        if pending is not None:
            limit = _utc(last - timedelta(days=count - 1), 0, self.timezone)
            yield (*pending, pending[0] > limit)

    # --- moments ---------------------------------------------------------------------------

    def _local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.timezone).date()

    def is_open(self, at: datetime) -> bool:
        """True if the shop is open at ``at`` (an opening includes its start, not its end)."""
        if self._always:
            _as_utc(at)
            return True
        moment = _as_utc(at)
        day = self._local_day(moment)
        # The neighbours too: only their openings can reach into this day (DST edge cases).
        for other in (day, day - _ONE_DAY, day + _ONE_DAY):
            for start, end in self._periods_on(other):
                if start <= moment < end:
                    return True
        return False

    def next_opening(self, at: datetime) -> datetime | None:
        """The first moment at or after ``at`` at which the shop opens, after being closed;
        when open now, the opening after this stretch. None if none within the horizon."""
        moment = _as_utc(at)
        if self._always:
            return None
        for start, _end, _known in self._forward(self._local_day(moment) - _ONE_DAY):
            # A stretch seen from the first day searched may have begun earlier; such a start
            # lies before ``moment`` and is skipped like any other.
            if start >= moment:
                return start.astimezone(self.timezone)
        return None

    def next_closing(self, at: datetime) -> datetime | None:
        """The first moment after ``at`` at which the shop closes: the end of this stretch
        when open, of the next one when closed. None if it does not close within the horizon."""
        moment = _as_utc(at)
        if self._always:
            return None
        for _start, end, known in self._forward(self._local_day(moment) - _ONE_DAY):
            if end > moment:
                return end.astimezone(self.timezone) if known else None
        return None

    def closed_since(self, at: datetime) -> datetime | None:
        """When closed at ``at``, the moment the shop last closed (the start of the horizon
        if it never was open); None when open."""
        moment = _as_utc(at)
        if self._always:
            return None
        day = self._local_day(moment)
        for start, end, known in self._backward(day + _ONE_DAY):
            if end <= moment:
                return end.astimezone(self.timezone)
            if start <= moment or not known:
                return None  # ``moment`` lies inside this stretch
        first = day - timedelta(days=HORIZON_DAYS)
        return wall_clock(first, 0, self.timezone)

    def add_open_minutes(self, start: datetime, minutes: float) -> datetime | None:
        """The moment at which ``minutes`` of opening time have passed after ``start``.

        Only open time counts, in real elapsed minutes: Saturday 17:50 plus 15 with closing at
        18:00 is Monday 9:05. The count starts at the first open moment, so 0 minutes from a
        closed moment is the next opening. None if the horizon ends first.
        """
        if minutes < 0:
            raise ValueError(f"minutes must not be negative, got {minutes}")
        moment = _as_utc(start)
        remaining = timedelta(minutes=minutes)
        if self._always:
            return (moment + remaining).astimezone(self.timezone)
        for begin, end, known in self._forward(self._local_day(moment) - _ONE_DAY):
            if end <= moment:
                continue
            begin = max(begin, moment)
            if begin + remaining <= end:
                return (begin + remaining).astimezone(self.timezone)
            if not known:
                return None
            remaining -= end - begin
        return None


def _require_date(day: object) -> None:
    # A datetime is a date too, but would never match a date key or holiday: refuse it.
    if type(day) is not date:
        raise TypeError(f"expected a date, got {day!r}")
