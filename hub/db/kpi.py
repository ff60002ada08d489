"""The KPI queries: one read unit (`facts`) that returns what hub.kpi.compute slices.

Grouping happens here as far as SQL can do it on both engines: counts per local day,
channel and adviser; distinct conversations per day, week and period (_conversations, with
a window function instead of a UNION and COUNT(DISTINCT)). Only the exchanges (hub.kpi.
compute says what one is) come back row by row, since their durations count opening hours
and their percentiles are not additive; and the links, whose distinct conversations are
counted per slice.

Local days without time zones in SQL: each timestamp becomes epoch seconds (SQLite
`unixepoch`, PostgreSQL `date_part('epoch', ...)`) once per row, plus the zone's offset at
that moment: a CASE over the period's few DST transitions (hub.kpi.compute.offset_steps)
that compares the raw column with the transitions' instants, so that the conversion is not
repeated in every branch. The same integer arithmetic on both engines, and every range test
is on the raw indexed column, so the indexes of migrations 0009 and 0010 serve it.

The statements carry no parameters: the bounds and transitions are instants the code made,
rendered as literals by the dialect (what it would bind), and the currency is a grouping
column. So they run on the DBAPI cursor: SQLAlchemy's Row per result row doubled the cost
of reading a year's exchanges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import literal
from sqlalchemy.engine import Dialect

from hub.db.database import Tx
from hub.db.exchanges import SPAN_SECONDS, epoch
from hub.db.models import UTCDateTime
from hub.kpi.compute import Facts


@dataclass(frozen=True)
class Window:
    """A period as the queries need it: UTC bounds, the offsets and the shop's currency."""

    start: datetime  # local midnight of the first day, aware
    end: datetime  # local midnight after the last day
    offsets: list[tuple[int, int]]  # (from epoch, offset seconds), the first from -inf
    currency: str
    first_day: int  # day numbers (hub.kpi.compute.day_number) of the first and last day
    last_day: int


class _Sql:
    """The SQL fragments of one window on one dialect."""

    def __init__(self, window: Window, dialect: Dialect) -> None:
        self.window = window
        self.dialect = dialect
        self.lo = self.instant(window.start)
        self.hi = self.instant(window.end)

    def instant(self, moment: datetime) -> str:
        """An instant as a literal the raw column compares with: SQLite's stored text (naive
        UTC with microseconds, compared as text), a timestamptz on PostgreSQL."""
        value = literal(moment.astimezone(UTC), UTCDateTime())
        return str(value.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True}))

    def epoch(self, column: str) -> str:
        if self.dialect.name == "sqlite":
            return f"unixepoch({column})"
        # date_part is double precision, EXTRACT numeric: half the time for a year's rows;
        # floor() of a double is exact here (microseconds of epoch seconds below 2**53).
        return f"CAST(FLOOR(date_part('epoch', {column})) AS BIGINT)"

    def local(self, column: str) -> str:
        """Local seconds since the epoch of a timestamp column."""
        offsets = self.window.offsets
        if len(offsets) == 1:
            return f"({self.epoch(column)} + {offsets[0][1]})"
        cases = " ".join(
            f"WHEN {column} < {self.instant(datetime.fromtimestamp(start, UTC))} THEN {before}"
            for (_s, before), (start, _after) in pairwise(offsets)
        )
        return f"({self.epoch(column)} + CASE {cases} ELSE {offsets[-1][1]} END)"

    def day(self, column: str) -> str:
        return f"({self.local(column)} / 86400)"

    def in_range(self, column: str) -> str:
        return f"{column} >= {self.lo} AND {column} < {self.hi}"


def _conversations(q: _Sql) -> str:
    """Distinct conversations with a customer message per day, week and channel, counted
    without a set operation (a UNION and COUNT(DISTINCT) over a year's spans took SQLite
    longer than all the other queries together).

    inbound_spans (hub.db.exchanges): a conversation's customer messages of one half UTC day
    lie on the local days of its first and its last one (`f`, `l`: the same or consecutive
    days), so those two days (when in the period) are exactly its days with a customer
    message. In bucket order, a span's days are at least those of every earlier span of its
    conversation, the latest of which is `pd`, the day of the previous span's last message
    (LAG). So a span counts `f` for its day unless `pd` is that day, for its week unless
    `pd` is in that week, `l` (when another day) for both unless `f` was in them, and the
    conversation (per channel, as the period's distinct count) if it has no previous span.
    Every span of the scan has a message in the period, so a previous one is in it too.

    Rows: (channel, f, l, f counts for its day, l for its day, f for its week, l for its
    week, conversations first seen), summed per (channel, f, l): a few thousand a year.
    """
    w = q.window
    b0, b1 = epoch(w.start) // SPAN_SECONDS, (epoch(w.end) - 1) // SPAN_SECONDS
    first = w.first_day
    # An instant is in the period iff its local day is (the bounds are local midnights).
    in_period = f"BETWEEN {first} AND {w.last_day}"

    def week(day: str) -> str:
        return f"(({day}) + 3) / 7"

    return f"""
        SELECT ch, f, l,
            SUM(CASE WHEN f {in_period} AND (pd IS NULL OR pd < f) THEN 1 ELSE 0 END),
            SUM(CASE WHEN l {in_period} AND l > f THEN 1 ELSE 0 END),
            SUM(CASE WHEN f {in_period} AND (pd IS NULL OR {week("pd")} < {week("f")})
                THEN 1 ELSE 0 END),
            SUM(CASE WHEN l {in_period} AND l > f
                AND (f < {first} OR {week("f")} < {week("l")}) THEN 1 ELSE 0 END),
            SUM(CASE WHEN pd IS NULL THEN 1 ELSE 0 END)
        FROM (
            SELECT ch, f, l, LAG(l) OVER (PARTITION BY cid, ch ORDER BY bucket) AS pd
            FROM (
                SELECT s.channel AS ch, s.conversation_id AS cid, s.bucket,
                    {q.day("s.first_at")} AS f, {q.day("s.last_at")} AS l
                FROM inbound_spans s
                WHERE s.bucket >= {b0} AND s.bucket <= {b1}
                    AND s.last_at >= {q.lo} AND s.first_at < {q.hi}
            ) spans
        ) ordered
        GROUP BY ch, f, l"""


def _new(q: _Sql) -> str:
    return f"""
        SELECT {q.day("c.created_at")} AS d, ci.channel, COUNT(*)
        FROM conversations c JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {q.in_range("c.created_at")}
        GROUP BY 1, 2"""


def _exchanges(q: _Sql) -> str:
    # One row per exchange of the period, written with the messages (hub.db.exchanges), in
    # the column order of hub.kpi.compute.Exchange.
    return f"""
        SELECT {q.epoch("e.started_at")}, {q.local("e.started_at")},
            {q.epoch("e.first_reply_at")}, e.channel, e.first_reply_by, e.conversation_id
        FROM exchanges e
        WHERE {q.in_range("e.started_at")}"""


def _missed(q: _Sql) -> str:
    # The hour of the week from local seconds L: ((L / 3600) + 72) % 168, since 1970-01-01
    # (day 0) was a Thursday (weekday 3, Monday = 0).
    return f"""
        SELECT d, (l / 3600 + 72) % 168, ch, COUNT(*)
        FROM (
            SELECT {q.day("mc.since")} AS d, {q.local("mc.since")} AS l, ci.channel AS ch
            FROM missed_conversations mc
            JOIN conversations c ON c.id = mc.conversation_id
            JOIN channel_identities ci ON ci.id = c.identity_id
            WHERE {q.in_range("mc.since")}
        ) m
        GROUP BY 1, 2, 3"""


def _links(q: _Sql) -> str:
    return f"""
        SELECT {q.day("s.created_at")}, ci.channel, o.adviser_mxid, s.conversation_id,
            CASE WHEN s.clicks > 0 THEN 1 ELSE 0 END
        FROM short_links s
        JOIN orders o ON o.id = s.order_id
        LEFT JOIN conversations c ON c.id = s.conversation_id
        LEFT JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {q.in_range("s.created_at")}"""


def _orders_created(q: _Sql) -> str:
    return f"""
        SELECT {q.day("o.created_at")}, ci.channel, o.adviser_mxid, COUNT(*)
        FROM orders o
        JOIN conversations c ON c.id = o.conversation_id
        JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {q.in_range("o.created_at")}
        GROUP BY 1, 2, 3"""


def _orders_paid(q: _Sql) -> str:
    # Grouped by currency rather than filtered: the statement needs no parameter.
    return f"""
        SELECT {q.day("o.paid_at")}, ci.channel, o.adviser_mxid, COUNT(*), SUM(o.total_minor),
            o.currency
        FROM orders o
        JOIN conversations c ON c.id = o.conversation_id
        JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {q.in_range("o.paid_at")}
        GROUP BY 1, 2, 3, 6"""


def _consent(q: _Sql) -> str:
    return f"""
        SELECT {q.day("cr.requested_at")}, cr.channel, cr.requested_by, COUNT(*),
            SUM(CASE WHEN cr.state IN ('granted', 'revoked') THEN 1 ELSE 0 END)
        FROM consent_requests cr
        WHERE {q.in_range("cr.requested_at")}
        GROUP BY 1, 2, 3"""


def _optins(q: _Sql) -> str:
    return f"""
        SELECT {q.day("n.requested_at")}, ci.channel, n.requested_by, COUNT(*),
            SUM(CASE WHEN n.confirmed_at IS NOT NULL THEN 1 ELSE 0 END)
        FROM newsletter_optins n JOIN channel_identities ci ON ci.id = n.identity_id
        WHERE {q.in_range("n.requested_at")}
        GROUP BY 1, 2, 3"""


def facts(tx: Tx, window: Window) -> Facts:
    """Everything the report of a period needs, read in one transaction (one snapshot)."""
    q = _Sql(window, tx.conn.dialect)
    pg = q.dialect.name != "sqlite"
    found = Facts()
    # The unit's own DBAPI connection, so the reads share its transaction. Its rows are plain
    # tuples (asyncpg Records on PostgreSQL: indexable and unpackable alike) whose columns
    # are ints, strs or NULL on both engines: the aggregates are integer sums and counts.
    cursor = tx.conn.connection.cursor()

    def rows(name: str, sql: str) -> list[Any]:
        began = time.perf_counter()
        cursor.execute(sql)
        # Tuples: asyncpg's Records cost PostgreSQL's slicing half as much again.
        fetched = cursor.fetchall()
        result = [tuple(row) for row in fetched] if pg else list(fetched)
        found.timings[name] = time.perf_counter() - began
        return result

    try:
        found.conversations = rows("conversations", _conversations(q))
        found.new = rows("new", _new(q))
        found.exchanges = rows("exchanges", _exchanges(q))
        found.missed = rows("missed", _missed(q))
        found.links = rows("links", _links(q))
        found.orders_created = rows("orders_created", _orders_created(q))
        found.orders_paid = [
            (n, ch, adviser, c, total)
            for n, ch, adviser, c, total, currency in rows("orders_paid", _orders_paid(q))
            if currency == window.currency
        ]
        found.consent = rows("consent", _consent(q))
        found.optins = rows("optins", _optins(q))
    finally:
        cursor.close()
    return found
