"""The KPI arithmetic (pure): local days and weeks as numbers, percentiles, opening-hours
durations, rates, and the slicing of the facts hub.db.kpi reads into a hub.kpi.model.Report.

Days are counted as *day numbers* (days since 1970-01-01 in the shop's time zone), because
the SQL groups by them on both engines with integer arithmetic alone: SQLite knows no time
zones, so the queries shift each UTC second by the zone's offset at that moment, read from
`offset_steps` (a handful of DST transitions per year). Weeks are Monday-based,
``(day + 3) // 7`` (1970-01-01 was a Thursday).

Definitions (what the report says, decided here once):

- An *exchange* starts with a customer's message that is the first of its conversation or
  comes after ``EXCHANGE_GAP_SECONDS`` without any message from the customer or an adviser
  (the hub keeps no history of closing, so a quiet day stands for "closed"; a customer's
  "thanks" right after the answer does not start a new one). Its *first response* is the
  first adviser message after it (bot messages do not count), even one written after the
  period; its duration counts opening hours only when hours are configured. An exchange
  belongs to the day it started; an unanswered one is no sample.
- *Incoming conversations* in the heatmap are exchange starts.
- *Conversations* of a day, week, channel or the period: distinct conversations with a
  customer message in it; of an adviser: the conversations in which they gave the first
  response of an exchange of the period (who answered, not today's assignee, which only
  says who has the conversation now). Missed conversations and new conversations are not
  attributed to advisers.
- *Links* are the checkout links (short links with an order) sent in the slice; *clicked*:
  those of them clicked at any time (so clicked <= sent).
- Orders count on the day created; *paid* orders and revenue on the day paid (paid_at), in
  the shop's currency only; the average order value is revenue / paid orders.
- Consent rate: photo consent requests asked in the slice that were granted (also those
  revoked later) / asked; opt-in rate: newsletter opt-ins asked in the slice that were
  confirmed / asked. None where nothing was asked.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from hub.kpi.model import Metrics, Period, Report, Slice
from hub.scheduler.hours import Schedule, wall_clock

EXCHANGE_GAP_SECONDS = 24 * 3600
K = TypeVar("K")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
DAY_SECONDS = 86400
CHANNEL_LABELS = {
    "webchat": "Web chat",
    "whatsapp": "WhatsApp",
    "telegram": "Telegram",
    "messenger": "Messenger",
    "instagram": "Instagram",
}


# --- time ----------------------------------------------------------------------------------


def day_number(day: date) -> int:
    return day.toordinal() - EPOCH_ORDINAL


def day_of(number: int) -> date:
    return date.fromordinal(EPOCH_ORDINAL + number)


def week_of(number: int) -> int:
    """The Monday-based week of a day number (the SQL's ``(d + 3) / 7``)."""
    return (number + 3) // 7


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def period_bounds(period: Period) -> tuple[datetime, datetime]:
    """The period as UTC instants: local midnight of `since`, local midnight after `until`."""
    tz = ZoneInfo(period.timezone)
    start = wall_clock(period.since, 0, tz).astimezone(UTC)
    end = wall_clock(period.until + timedelta(days=1), 0, tz).astimezone(UTC)
    return start, end


def offset_steps(timezone: str, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """The zone's UTC offsets (seconds) over [start, end) as (from epoch, offset) steps, the
    first from -inf: the SQL turns them into one CASE. Transitions are found day by day, then
    to the minute by bisection (zones change on minutes: Lord Howe's is half an hour)."""
    tz = ZoneInfo(timezone)

    def offset(at: int) -> int:
        found = datetime.fromtimestamp(at, UTC).astimezone(tz).utcoffset()
        return int(found.total_seconds()) if found is not None else 0

    lo_t, hi_t = epoch(start) - DAY_SECONDS, epoch(end) + DAY_SECONDS
    steps = [(lo_t, offset(lo_t))]
    t = lo_t
    while t < hi_t:
        nxt = min(t + DAY_SECONDS, hi_t)
        if offset(nxt) != steps[-1][1]:
            a, b = t, nxt  # offset(a) is the old one, offset(b) the new one: bisect to the second
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == steps[-1][1] else (a, mid)
            steps.append((b, offset(b)))
        t = nxt
    return steps


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted values, linearly interpolated between the closest
    ranks (PostgreSQL's percentile_cont, numpy's default); None for no values."""
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    low = int(pos)
    frac = pos - low
    if frac == 0 or low + 1 >= len(ordered):
        return float(ordered[low])
    return ordered[low] + (ordered[low + 1] - ordered[low]) * frac


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class OpenClock:
    """Open seconds between two instants: the schedule's openings from `first` to `last`
    (local days) as merged UTC stretches with the open seconds before each, so a duration is
    two bisections. No schedule: wall-clock seconds."""

    def __init__(self, schedule: Schedule | None, first: date, last: date) -> None:
        self.schedule = schedule
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._before: list[int] = []  # open seconds before each stretch's start
        if schedule is None:
            return
        tz = schedule.timezone
        spans: list[tuple[int, int]] = []
        day = first
        while day <= last:
            for interval in schedule.intervals_on(day):
                a = epoch(wall_clock(day, interval.start, tz))
                b = epoch(wall_clock(day, interval.end, tz))
                if a < b:  # an opening inside the spring gap lasts nothing
                    spans.append((a, b))
            day += timedelta(days=1)
        spans.sort()
        total = 0
        for a, b in spans:
            if self._ends and a <= self._ends[-1]:  # touching or through midnight: one stretch
                total += max(0, b - self._ends[-1])
                self._ends[-1] = max(self._ends[-1], b)
                continue
            self._starts.append(a)
            self._ends.append(b)
            self._before.append(total)
            total += b - a

    def _open_until(self, t: int) -> int:
        i = bisect_right(self._starts, t) - 1
        if i < 0:
            return 0
        return self._before[i] + min(t, self._ends[i]) - self._starts[i]

    def seconds(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        if self.schedule is None:
            return end - start
        # _open_until twice, inlined: it runs for every answered exchange of the period.
        starts, ends, before = self._starts, self._ends, self._before
        i = bisect_right(starts, end) - 1
        upto_end = before[i] + min(end, ends[i]) - starts[i] if i >= 0 else 0
        i = bisect_right(starts, start) - 1
        upto_start = before[i] + min(start, ends[i]) - starts[i] if i >= 0 else 0
        return upto_end - upto_start


# --- the facts (rows of hub.db.kpi) --------------------------------------------------------


class Exchange(NamedTuple):
    """A NamedTuple, not a dataclass: a year has ~200 000 of them, made straight from rows."""

    started: int  # epoch seconds
    day: int  # local day number of the start
    how: int  # hour of the week of the start, 0 = Monday 00:00-01:00 local
    channel: str
    conversation_id: int
    replied: int | None  # epoch seconds of the first adviser message after the start
    adviser: str | None


@dataclass(frozen=True)
class LinkFact:
    day: int
    channel: str | None
    adviser: str | None
    conversation_id: int | None
    clicked: bool


@dataclass
class Facts:
    """What hub.db.kpi reads for a period; the counts are grouped (day, channel[, adviser])."""

    # (kind 0 day | 1 week | 2 period, day or week number (0 for the period), channel, count)
    conversations: list[tuple[int, int, str, int]] = field(default_factory=list)
    new: list[tuple[int, str, int]] = field(default_factory=list)  # (day, channel, count)
    exchanges: list[Exchange] = field(default_factory=list)
    missed: list[tuple[int, int, str, int]] = field(default_factory=list)  # (day, how, ch, n)
    links: list[LinkFact] = field(default_factory=list)
    # (day, channel, adviser, count)
    orders_created: list[tuple[int, str | None, str | None, int]] = field(default_factory=list)
    # (day, channel, adviser, count, revenue)
    orders_paid: list[tuple[int, str | None, str | None, int, int]] = field(default_factory=list)
    # (day, channel, adviser, asked, given)
    consent: list[tuple[int, str | None, str | None, int, int]] = field(default_factory=list)
    optins: list[tuple[int, str | None, str | None, int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # query name -> seconds


# --- slicing -------------------------------------------------------------------------------


@dataclass
class Tally:
    """A slice's figures while they are being added up."""

    conversations_new: int = 0
    conversations: int = 0
    handled: set[int] = field(default_factory=set)  # an adviser's conversations
    waits: list[int] = field(default_factory=list)
    missed: int = 0
    links_sent: int = 0
    links_clicked: int = 0
    link_conversations: set[int] = field(default_factory=set)
    orders_created: int = 0
    orders_paid: int = 0
    revenue: int = 0
    consent_asked: int = 0
    consent_given: int = 0
    optin_asked: int = 0
    optin_confirmed: int = 0

    def metrics(self, *, adviser: bool = False) -> Metrics:
        conversations = len(self.handled) if adviser else self.conversations
        waits = sorted(self.waits)
        return Metrics(
            conversations_new=self.conversations_new,
            conversations=conversations,
            first_response_median=percentile(waits, 0.5),
            first_response_p90=percentile(waits, 0.9),
            missed=self.missed,
            links_sent=self.links_sent,
            links_clicked=self.links_clicked,
            orders_created=self.orders_created,
            orders_paid=self.orders_paid,
            revenue=self.revenue,
            # Rounded half up to a whole minor unit: money stays integer.
            average_order_value=(
                (2 * self.revenue + self.orders_paid) // (2 * self.orders_paid)
                if self.orders_paid
                else None
            ),
            conversion=rate(self.orders_paid, conversations),
            conversion_with_link=rate(self.orders_paid, len(self.link_conversations)),
            consent_rate=rate(self.consent_given, self.consent_asked),
            optin_rate=rate(self.optin_confirmed, self.optin_asked),
        )


def week_key(week: int) -> tuple[str, str]:
    """("2026-W45", "W45 2026"): the ISO week of the week's Monday."""
    iso = day_of(week * 7 - 3).isocalendar()
    return f"{iso.year}-W{iso.week:02d}", f"W{iso.week} {iso.year}"


def adviser_label(mxid: str) -> str:
    """What a person reads for an MXID: its localpart ("@anna:shop.example" -> "anna")."""
    return mxid[1:].split(":", 1)[0] if mxid.startswith("@") else mxid


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel)


class _Slices(Generic[K]):
    """Tallies by key, made on first use."""

    def __init__(self, keys: Iterable[K] = ()) -> None:
        self.by: dict[K, Tally] = {key: Tally() for key in keys}

    def __getitem__(self, key: K) -> Tally:
        tally = self.by.get(key)
        if tally is None:
            tally = self.by[key] = Tally()
        return tally


def _slice_exchanges(
    exchanges: Sequence[Exchange],
    first: int,
    last: int,
    clock: OpenClock,
    heatmap: list[list[list[int]]],
    total: Tally,
    by_day: _Slices[int],
    by_week: _Slices[int],
    by_channel: _Slices[str],
    by_adviser: _Slices[str],
) -> None:
    """The exchanges' heatmap cells, waits and advisers' conversations: the one loop that
    runs per exchange (a year: ~200 000), so it groups waits by key in plain dicts first and
    hands each tally its list once."""
    incoming = [0] * (7 * 24)
    waits: list[int] = []
    days: dict[int, list[int]] = {}
    channels: dict[str, list[int]] = {}
    advisers: dict[str, list[int]] = {}
    handled: dict[str, set[int]] = {}
    seconds = clock.seconds
    for started, day, how, channel, cid, replied, adviser in exchanges:
        if day < first or day > last:
            continue
        incoming[how] += 1
        if replied is None:
            continue
        wait = seconds(started, replied)
        waits.append(wait)
        found = days.get(day)
        if found is None:
            found = days[day] = []
        found.append(wait)
        found = channels.get(channel)
        if found is None:
            found = channels[channel] = []
        found.append(wait)
        if adviser is not None:
            found = advisers.get(adviser)
            if found is None:
                found = advisers[adviser] = []
                handled[adviser] = set()
            found.append(wait)
            handled[adviser].add(cid)
    for how, count in enumerate(incoming):
        heatmap[how // 24][how % 24][0] += count
    total.waits.extend(waits)
    for day, found in days.items():
        by_day[day].waits.extend(found)
        by_week[week_of(day)].waits.extend(found)
    for channel, found in channels.items():
        by_channel[channel].waits.extend(found)
    for adviser, found in advisers.items():
        by_adviser[adviser].waits.extend(found)
        by_adviser[adviser].handled |= handled[adviser]


def build_report(
    period: Period,
    currency: str,
    facts: Facts,
    schedule: Schedule | None,
    advisers: Iterable[str] = (),
) -> Report:
    """The report of the facts; `schedule` None: durations in wall-clock time; `advisers`:
    those listed even without figures (the shop's configured advisers)."""
    first, last = day_number(period.since), day_number(period.until)
    days = range(first, last + 1)
    total = Tally()
    by_day = _Slices[int](days)
    by_week = _Slices[int](range(week_of(first), week_of(last) + 1))
    by_adviser = _Slices[str](advisers)
    by_channel = _Slices[str]()
    heatmap = [[[0, 0] for _hour in range(24)] for _day in range(7)]

    def in_period(day: int) -> bool:
        return first <= day <= last

    def all_of(day: int, channel: str | None, adviser: str | None) -> list[Tally]:
        """The tallies an additive fact of this day, channel and adviser counts in."""
        found = [total, by_day[day], by_week[week_of(day)]]
        if channel is not None:
            found.append(by_channel[channel])
        if adviser is not None:
            found.append(by_adviser[adviser])
        return found

    for kind, number, conv_channel, count in facts.conversations:
        if kind == 0:
            if in_period(number):
                by_day[number].conversations += count
        elif kind == 1:
            by_week[number].conversations += count
        else:
            total.conversations += count
            by_channel[conv_channel].conversations += count
    for day, new_channel, count in facts.new:
        if in_period(day):
            for tally in all_of(day, new_channel, None):
                tally.conversations_new += count

    last_reply = max((e.replied for e in facts.exchanges if e.replied is not None), default=None)
    until = day_of((last_reply // DAY_SECONDS) + 1) if last_reply is not None else period.until
    clock = OpenClock(schedule, period.since - timedelta(days=1), max(until, period.until))
    _slice_exchanges(
        facts.exchanges, first, last, clock, heatmap, total, by_day, by_week, by_channel, by_adviser
    )
    for day, how, missed_channel, count in facts.missed:
        if in_period(day):
            heatmap[how // 24][how % 24][1] += count
            for tally in all_of(day, missed_channel, None):
                tally.missed += count
    for link in facts.links:
        if in_period(link.day):
            for tally in all_of(link.day, link.channel, link.adviser):
                tally.links_sent += 1
                tally.links_clicked += link.clicked
                if link.conversation_id is not None:
                    tally.link_conversations.add(link.conversation_id)
    for day, channel, adviser, count in facts.orders_created:
        if in_period(day):
            for tally in all_of(day, channel, adviser):
                tally.orders_created += count
    for day, channel, adviser, count, revenue in facts.orders_paid:
        if in_period(day):
            for tally in all_of(day, channel, adviser):
                tally.orders_paid += count
                tally.revenue += revenue
    for day, channel, adviser, asked, given in facts.consent:
        if in_period(day):
            for tally in all_of(day, channel, adviser):
                tally.consent_asked += asked
                tally.consent_given += given
    for day, channel, adviser, asked, given in facts.optins:
        if in_period(day):
            for tally in all_of(day, channel, adviser):
                tally.optin_asked += asked
                tally.optin_confirmed += given

    weeks = []
    for week, tally in sorted(by_week.by.items()):
        key, label = week_key(week)
        weeks.append(Slice(key, label, tally.metrics()))
    return Report(
        period=period,
        currency=currency,
        totals=total.metrics(),
        by_day=[
            Slice(day_of(d).isoformat(), day_of(d).isoformat(), by_day[d].metrics()) for d in days
        ],
        by_week=weeks,
        by_adviser=[
            Slice(key, adviser_label(key), tally.metrics(adviser=True))
            for key, tally in sorted(by_adviser.by.items())
        ],
        by_channel=[
            Slice(key, channel_label(key), tally.metrics())
            for key, tally in sorted(by_channel.by.items())
        ],
        heatmap=[[(cell[0], cell[1]) for cell in hours] for hours in heatmap],
    )
