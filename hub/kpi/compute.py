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
from operator import itemgetter
from typing import Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from hub.kpi.model import Metrics, Period, Report, Slice
from hub.scheduler.hours import Schedule, wall_clock

EXCHANGE_GAP_SECONDS = 24 * 3600
K = TypeVar("K")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
DAY_SECONDS = 86400
HOUR_SECONDS = 3600
# Local seconds + this, in whole hours, modulo a week: the hour of the week (Monday 00:00 =
# 0), since day 0, 1970-01-01, was a Thursday.
WEEK_SHIFT_SECONDS = 3 * DAY_SECONDS
WEEK_HOURS = 7 * 24
# Bounds of OpenClock's sentinel stretches, beyond any epoch second a report meets.
_NEVER = 1 << 62
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
    two bisections. No schedule: wall-clock seconds (one stretch without end).

    The stretches start with an empty one at -inf, so that every instant has a stretch at or
    before it (no branch in the loop that runs per exchange, which reads `starts`, `ends`
    and `before` directly)."""

    def __init__(self, schedule: Schedule | None, first: date, last: date) -> None:
        self.schedule = schedule
        self.starts: list[int] = [-_NEVER]
        self.ends: list[int] = [-_NEVER]
        self.before: list[int] = [0]  # open seconds before each stretch's start
        if schedule is None:
            self.starts.append(-_NEVER + 1)
            self.ends.append(_NEVER)
            self.before.append(0)
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
            if a <= self.ends[-1]:  # touching or through midnight: one stretch
                total += max(0, b - self.ends[-1])
                self.ends[-1] = max(self.ends[-1], b)
                continue
            self.starts.append(a)
            self.ends.append(b)
            self.before.append(total)
            total += b - a

    def open_until(self, t: int) -> int:
        """Open seconds from the first stretch to t (the wall clock's are offset by a
        constant, which every difference cancels)."""
        i = bisect_right(self.starts, t) - 1
        return self.before[i] + min(t, self.ends[i]) - self.starts[i]

    def seconds(self, start: int, end: int) -> int:
        if end <= start:
            return 0
        return self.open_until(end) - self.open_until(start)


# --- the facts (rows of hub.db.kpi) --------------------------------------------------------


class Exchange(NamedTuple):
    """An exchange as hub.db.kpi reads it. The rows it hands over are plain tuples in this
    column order (a year has ~200 000 of them; making objects of them cost more than the
    slicing); tests may use this class, a tuple too."""

    started: int  # epoch seconds
    local: int  # local seconds since the epoch of the start (its day and hour of the week)
    replied: int | None  # epoch seconds of the first adviser message after the start
    channel: str
    adviser: str | None  # who sent that message
    conversation_id: int


class LinkFact(NamedTuple):
    day: int
    channel: str | None
    adviser: str | None
    conversation_id: int | None
    clicked: int  # 1 clicked, 0 not


@dataclass
class Facts:
    """What hub.db.kpi reads for a period; the counts are grouped (day, channel[, adviser])."""

    # (channel, f, l, f counts for its day, l for its day, f for its week, l for its week,
    # conversations first seen): hub.db.kpi._conversations, summed per (channel, f, l).
    conversations: Sequence[tuple[str, int, int, int, int, int, int, int]] = field(
        default_factory=list
    )
    new: Sequence[tuple[int, str, int]] = field(default_factory=list)  # (day, channel, count)
    exchanges: Sequence[tuple[int, int, int | None, str, str | None, int]] = field(
        default_factory=list
    )
    missed: Sequence[tuple[int, int, str, int]] = field(default_factory=list)  # (d, how, ch, n)
    links: Sequence[tuple[int, str | None, str | None, int | None, int]] = field(
        default_factory=list
    )
    # (day, channel, adviser, count)
    orders_created: Sequence[tuple[int, str | None, str | None, int]] = field(default_factory=list)
    # (day, channel, adviser, count, revenue)
    orders_paid: Sequence[tuple[int, str | None, str | None, int, int]] = field(
        default_factory=list
    )
    # (day, channel, adviser, asked, given)
    consent: Sequence[tuple[int, str | None, str | None, int, int]] = field(default_factory=list)
    optins: Sequence[tuple[int, str | None, str | None, int, int]] = field(default_factory=list)
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
    exchanges: Iterable[tuple[int, int, int | None, str, str | None, int]],
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
    runs per exchange (a year: ~200 000). It does the least per row: the wait (OpenClock.
    seconds inlined), appended to the list of its (day, channel, adviser); the slices get
    those lists afterwards, a few thousand of them instead of a row each."""
    incoming = [0] * WEEK_HOURS
    # (day, channel, adviser) -> (waits, conversations)
    groups: dict[tuple[int, str, str | None], tuple[list[int], list[int]]] = {}
    starts, ends, before = clock.starts, clock.ends, clock.before
    lo, hi = first * DAY_SECONDS, (last + 1) * DAY_SECONDS
    for started, local, replied, channel, adviser, cid in exchanges:
        if local < lo or local >= hi:
            continue
        incoming[(local + WEEK_SHIFT_SECONDS) // HOUR_SECONDS % WEEK_HOURS] += 1
        if replied is None:
            continue
        # clock.seconds(started, replied): open seconds up to each, a stretch at or before
        # every instant (the sentinel), clamped at 0 for a reply stored out of order.
        i = bisect_right(starts, replied) - 1
        j = bisect_right(starts, started) - 1
        end = ends[i]
        wait = before[i] + (replied if replied < end else end) - starts[i]
        end = ends[j]
        wait -= before[j] + (started if started < end else end) - starts[j]
        key = (local // DAY_SECONDS, channel, adviser)
        found = groups.get(key)
        if found is None:
            found = groups[key] = ([], [])
        found[0].append(wait if wait > 0 else 0)
        found[1].append(cid)
    for how, count in enumerate(incoming):
        heatmap[how // 24][how % 24][0] += count
    for (day, channel, adviser), (waits, cids) in groups.items():
        total.waits.extend(waits)
        by_day[day].waits.extend(waits)
        by_week[week_of(day)].waits.extend(waits)
        by_channel[channel].waits.extend(waits)
        if adviser is not None:
            by_adviser[adviser].waits.extend(waits)
            by_adviser[adviser].handled.update(cids)


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

    # Days and weeks the SQL counted are in the period (hub.db.kpi._conversations).
    for (
        conv_channel,
        first_day,
        last_day,
        f_day,
        l_day,
        f_week,
        l_week,
        seen,
    ) in facts.conversations:
        if f_day:
            by_day[first_day].conversations += f_day
        if l_day:
            by_day[last_day].conversations += l_day
        if f_week:
            by_week[week_of(first_day)].conversations += f_week
        if l_week:
            by_week[week_of(last_day)].conversations += l_week
        if seen:
            total.conversations += seen
            by_channel[conv_channel].conversations += seen
    for day, new_channel, count in facts.new:
        if in_period(day):
            for tally in all_of(day, new_channel, None):
                tally.conversations_new += count

    last_reply = max(
        (r for r in map(itemgetter(2), facts.exchanges) if r is not None), default=None
    )
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
    for day, channel, adviser, cid, clicked in facts.links:
        if in_period(day):
            for tally in all_of(day, channel, adviser):
                tally.links_sent += 1
                tally.links_clicked += clicked
                if cid is not None:
                    tally.link_conversations.add(cid)
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
