"""The KPI queries: one read unit (`facts`) that returns what hub.kpi.compute slices.

Grouping happens here as far as SQL can do it on both engines: counts per local day,
channel and adviser; distinct conversations per day, week and period. Only the exchanges
(hub.kpi.compute says what one is) come back row by row, since their durations count opening
hours and their percentiles are not additive.

Local days without time zones in SQL: each timestamp becomes epoch seconds (SQLite
`unixepoch`, PostgreSQL `EXTRACT(EPOCH ...)`), shifted by the zone's offset at that moment (a
CASE over the period's few DST transitions, hub.kpi.compute.offset_steps), divided by 86400.
The same integer arithmetic on both engines, and every range test is on the raw indexed
column, so the indexes of migration 0009 (`ix_messages_kpi` and the date indexes) serve it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, bindparam, text

from hub.db.database import Tx
from hub.db.exchanges import SPAN_SECONDS, epoch
from hub.db.models import UTCDateTime
from hub.kpi.compute import Exchange, Facts, LinkFact


@dataclass(frozen=True)
class Window:
    """A period as the queries need it: UTC bounds, the offsets and the shop's currency."""

    start: datetime  # local midnight of the first day, aware
    end: datetime  # local midnight after the last day
    offsets: list[tuple[int, int]]  # (from epoch, offset seconds), the first from -inf
    currency: str


def _epoch(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return f"unixepoch({column})"
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"


def _local(window: Window, seconds: str) -> str:
    """Local seconds since the epoch of an epoch-seconds expression."""
    if len(window.offsets) == 1:
        return f"({seconds} + {window.offsets[0][1]})"
    cases = " ".join(
        f"WHEN {seconds} < {start} THEN {seconds} + {before}"
        for (_s, before), (start, _after) in zip(window.offsets, window.offsets[1:], strict=False)
    )
    return f"(CASE {cases} ELSE {seconds} + {window.offsets[-1][1]} END)"


def _day(window: Window, dialect: str, column: str) -> str:
    return f"({_local(window, _epoch(dialect, column))} / 86400)"


def _hour_of_week(window: Window, dialect: str, column: str) -> str:
    local = _local(window, _epoch(dialect, column))
    # 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
    return f"((({local} / 86400) + 3) % 7 * 24 + ({local} % 86400) / 3600)"


def _range(column: str) -> str:
    return f"{column} >= :lo AND {column} < :hi"


def _stmt(sql: str) -> TextClause:
    return text(sql).bindparams(
        bindparam("lo", type_=UTCDateTime()), bindparam("hi", type_=UTCDateTime())
    )


def _conversations(w: Window, d: str) -> str:
    # inbound_spans (hub.db.exchanges): a conversation's customer messages of one half UTC
    # day lie on the local days of its first and its last one, so those two days (when in
    # the period) are exactly its days with a customer message. The bucket bounds make it a
    # range scan of the primary key; the instants' ranges keep only the period's days.
    first, last = _day(w, d, "s.first_at"), _day(w, d, "s.last_at")
    buckets = "s.bucket >= :blo AND s.bucket <= :bhi"
    return f"""
        WITH cd AS MATERIALIZED (
            SELECT s.conversation_id AS cid, s.channel AS ch, {first} AS d
            FROM inbound_spans s WHERE {buckets} AND {_range("s.first_at")}
            UNION
            SELECT s.conversation_id, s.channel, {last}
            FROM inbound_spans s WHERE {buckets} AND {_range("s.last_at")}
        )
        SELECT 0, d, ch, COUNT(*) FROM cd GROUP BY d, ch
        UNION ALL
        SELECT 1, (d + 3) / 7, ch, COUNT(DISTINCT cid) FROM cd GROUP BY (d + 3) / 7, ch
        UNION ALL
        SELECT 2, 0, ch, COUNT(DISTINCT cid) FROM cd GROUP BY ch"""


def _new(w: Window, d: str) -> str:
    return f"""
        SELECT {_day(w, d, "c.created_at")} AS d, ci.channel, COUNT(*)
        FROM conversations c JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {_range("c.created_at")}
        GROUP BY 1, 2"""


def _exchanges(w: Window, d: str) -> str:
    # One row per exchange of the period, written with the messages (hub.db.exchanges).
    return f"""
        SELECT {_epoch(d, "e.started_at")}, {_day(w, d, "e.started_at")},
            {_hour_of_week(w, d, "e.started_at")}, e.channel, e.conversation_id,
            {_epoch(d, "e.first_reply_at")}, e.first_reply_by
        FROM exchanges e
        WHERE {_range("e.started_at")}"""


def _missed(w: Window, d: str) -> str:
    return f"""
        SELECT {_day(w, d, "mc.since")}, {_hour_of_week(w, d, "mc.since")}, ci.channel, COUNT(*)
        FROM missed_conversations mc
        JOIN conversations c ON c.id = mc.conversation_id
        JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {_range("mc.since")}
        GROUP BY 1, 2, 3"""


def _links(w: Window, d: str) -> str:
    return f"""
        SELECT {_day(w, d, "s.created_at")}, ci.channel, o.adviser_mxid, s.conversation_id,
            CASE WHEN s.clicks > 0 THEN 1 ELSE 0 END
        FROM short_links s
        JOIN orders o ON o.id = s.order_id
        LEFT JOIN conversations c ON c.id = s.conversation_id
        LEFT JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {_range("s.created_at")}"""


def _orders(w: Window, d: str, column: str, paid: bool) -> str:
    extra = ", SUM(o.total_minor)" if paid else ""
    currency = " AND o.currency = :currency" if paid else ""
    return f"""
        SELECT {_day(w, d, column)}, ci.channel, o.adviser_mxid, COUNT(*){extra}
        FROM orders o
        JOIN conversations c ON c.id = o.conversation_id
        JOIN channel_identities ci ON ci.id = c.identity_id
        WHERE {_range(column)}{currency}
        GROUP BY 1, 2, 3"""


def _consent(w: Window, d: str) -> str:
    return f"""
        SELECT {_day(w, d, "cr.requested_at")}, cr.channel, cr.requested_by, COUNT(*),
            SUM(CASE WHEN cr.state IN ('granted', 'revoked') THEN 1 ELSE 0 END)
        FROM consent_requests cr
        WHERE {_range("cr.requested_at")}
        GROUP BY 1, 2, 3"""


def _optins(w: Window, d: str) -> str:
    return f"""
        SELECT {_day(w, d, "n.requested_at")}, ci.channel, n.requested_by, COUNT(*),
            SUM(CASE WHEN n.confirmed_at IS NOT NULL THEN 1 ELSE 0 END)
        FROM newsletter_optins n JOIN channel_identities ci ON ci.id = n.identity_id
        WHERE {_range("n.requested_at")}
        GROUP BY 1, 2, 3"""


def facts(tx: Tx, window: Window) -> Facts:
    """Everything the report of a period needs, read in one transaction (one snapshot)."""
    d = tx.conn.dialect.name
    params: dict[str, Any] = {"lo": window.start, "hi": window.end}
    found = Facts()

    def rows(name: str, sql: str, extra: dict[str, Any] | None = None) -> list[Any]:
        began = time.perf_counter()
        stmt = _stmt(sql)
        result = list(tx.conn.execute(stmt, {**params, **(extra or {})}))
        found.timings[name] = time.perf_counter() - began
        return result

    buckets = {
        "blo": epoch(window.start) // SPAN_SECONDS,
        "bhi": (epoch(window.end) - 1) // SPAN_SECONDS,
    }
    found.conversations = [
        (int(k), int(n), str(ch), int(c))
        for k, n, ch, c in rows("conversations", _conversations(window, d), buckets)
    ]
    found.new = [(int(n), str(ch), int(c)) for n, ch, c in rows("new", _new(window, d))]
    # Straight from the rows: every column is an int or a str (or NULL) on both engines.
    found.exchanges = [Exchange._make(r) for r in rows("exchanges", _exchanges(window, d))]
    found.missed = [
        (int(n), int(how), str(ch), int(c)) for n, how, ch, c in rows("missed", _missed(window, d))
    ]
    found.links = [
        LinkFact(int(n), ch, adviser, cid, bool(clicked))
        for n, ch, adviser, cid, clicked in rows("links", _links(window, d))
    ]
    found.orders_created = [
        (int(n), ch, adviser, int(c))
        for n, ch, adviser, c in rows("orders_created", _orders(window, d, "o.created_at", False))
    ]
    found.orders_paid = [
        (int(n), ch, adviser, int(c), int(total))
        for n, ch, adviser, c, total in rows(
            "orders_paid", _orders(window, d, "o.paid_at", True), {"currency": window.currency}
        )
    ]
    found.consent = [
        (int(n), ch, adviser, int(asked), int(given))
        for n, ch, adviser, asked, given in rows("consent", _consent(window, d))
    ]
    found.optins = [
        (int(n), ch, adviser, int(asked), int(given))
        for n, ch, adviser, asked, given in rows("optins", _optins(window, d))
    ]
    return found
