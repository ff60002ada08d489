"""The shop a growth benchmark seeds: 100 000 conversations and about a million messages
over 400 days (ending 2026-12-01), generated once and bulk-loaded into SQLite or PostgreSQL.

Used by bench/kpi.py (the KPI report on a big shop) and bench/growth.py (the cost of a
message, a reply and a command on it). `generate` makes the rows (plausible, not uniform:
office-hours peaks, lognormal waits; 1-3 exchanges of customer and adviser messages, a bot
reply now and then, missed conversations, orders, short links, consent and newsletter
requests), every conversation with its portal room (`!c<id>:shop.example`) and its ghost
named, every message with its Matrix event id and a customer's with its provider id, and a
week of done jobs; `load` migrates an empty database, bulk-loads the rows (executemany in one
transaction on SQLite, COPY on PostgreSQL), writes the KPIs' exchanges as migration 0010's
backfill does and runs ANALYZE.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub.db.engine import migrate, open_database

REPO = Path(__file__).resolve().parents[1]
MIGRATION_0010 = REPO / "hub/db/migrations/versions/0010_kpi_exchanges.py"
TZ = "Europe/Berlin"
END = datetime(2026, 12, 1, tzinfo=UTC)
SPAN_DAYS = 400
DOMAIN = "shop.example"
ADVISERS = [f"@adviser{i}:{DOMAIN}" for i in range(8)]
CHANNELS = ["whatsapp", "whatsapp", "whatsapp", "webchat", "telegram", "messenger", "instagram"]
WORDS = "hello can I order the blue one in size M thanks when is it delivered".split()


def external_id(cid: int) -> str:
    """A seeded customer's id on their channel (a phone number's digits)."""
    return f"4917{cid:09d}"


def room_id(cid: int) -> str:
    return f"!c{cid}:{DOMAIN}"


@dataclass
class Rows:
    """Every table's rows as tuples in the column order of COLUMNS."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))


COLUMNS = {
    "customers": ("id", "display_name", "created_at"),
    "channel_identities": (
        "id",
        "customer_id",
        "channel",
        "external_id",
        "display_name",
        "ghost_localpart",
        "ghost_profile_name",
        "created_at",
    ),
    "conversations": (
        "id",
        "identity_id",
        "room_id",
        "room_name",
        "created_at",
        "status",
        "assignee",
        "assigned_at",
        "closed_at",
        "last_inbound_at",
        "last_adviser_reply_at",
    ),
    "messages": (
        "id",
        "conversation_id",
        "channel",
        "direction",
        "kind",
        "text",
        "sender_mxid",
        "status",
        "created_at",
        "remote_id",
        "matrix_event_id",
    ),
    "missed_conversations": ("id", "conversation_id", "message_id", "since", "recorded_at"),
    "orders": (
        "id",
        "conversation_id",
        "adviser_mxid",
        "status",
        "provider",
        "reference",
        "cart",
        "total_minor",
        "currency",
        "created_at",
        "paid_at",
        "updated_at",
    ),
    "short_links": (
        "code",
        "url",
        "conversation_id",
        "order_id",
        "clicks",
        "first_click_at",
        "created_at",
    ),
    "consent_requests": (
        "id",
        "conversation_id",
        "channel",
        "text",
        "text_version",
        "requested_by",
        "requested_at",
        "expires_at",
        "state",
        "answer_late",
    ),
    "hub_state": ("key", "value", "updated_at"),
    "outbox": (
        "id",
        "kind",
        "ordering_key",
        "idempotency_key",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "done_at",
    ),
    "newsletter_optins": (
        "id",
        "identity_id",
        "state",
        "text_version",
        "requested_by",
        "requested_at",
        "confirmed_at",
        "updated_at",
    ),
}


def generate(conversations: int, messages_per: float, seed: int = 7) -> Rows:
    """The rows of a shop: plausible, not uniform (office-hours peaks, lognormal waits)."""
    rnd = random.Random(seed)
    rows = Rows()
    t = rows.tables
    start = END - timedelta(days=SPAN_DAYS)
    messages: list[tuple[Any, ...]] = []
    order_id = 0
    adviser_of: dict[int, str] = {}
    exchanges_per = 2.0
    per_exchange = max(1.0, messages_per / exchanges_per)
    for cid in range(1, conversations + 1):
        channel = rnd.choice(CHANNELS)
        # Most conversations start in the daytime.
        day = start + timedelta(days=rnd.random() * SPAN_DAYS)
        first = day.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            hours=rnd.triangular(6, 21, 12), seconds=rnd.random() * 3600
        )
        t["customers"].append((cid, f"Customer {cid}", first))
        name = f"Customer {cid}"
        t["channel_identities"].append(
            (cid, cid, channel, external_id(cid), name, f"customer_{cid:08x}", name, first)
        )
        at = first
        for exchange in range(rnd.choice((1, 2, 3))):
            if exchange:
                at += timedelta(days=rnd.expovariate(1 / 20) + 1.1)
            if at >= END:
                break
            adviser = adviser_of[cid] = rnd.choice(ADVISERS)
            count = max(1, int(rnd.expovariate(1 / per_exchange)) + 1)
            unanswered = rnd.random() < 0.05
            asked = at
            for n in range(count):
                if n == 0 or unanswered or rnd.random() < 0.5:
                    direction, sender = "in", None
                else:
                    direction, sender = "out", adviser
                text = " ".join(rnd.choices(WORDS, k=rnd.randint(2, 9)))
                messages.append((cid, channel, direction, "text", text, sender, "sent", at))
                if n == 0 and not unanswered:  # the first answer: lognormal minutes
                    at += timedelta(minutes=rnd.lognormvariate(2.5, 1.2))
                    messages.append((cid, channel, "out", "text", text, adviser, "sent", at))
                at += timedelta(minutes=rnd.expovariate(1 / 4))
            if unanswered:
                t["missed_conversations"].append(
                    (len(t["missed_conversations"]) + 1, cid, None, asked, asked)
                )
                if rnd.random() < 0.5:  # the holding reply of the bot
                    messages.append(
                        (cid, channel, "out", "text", "We are closed", None, "sent", at)
                    )
            elif rnd.random() < 0.15:
                order_id += 1
                paid = at + timedelta(hours=rnd.expovariate(1 / 10)) if rnd.random() < 0.5 else None
                total = rnd.randint(900, 40000)
                t["orders"].append(
                    (
                        order_id,
                        cid,
                        adviser,
                        "paid" if paid else "pending",
                        "builtin",
                        f"R{order_id:08d}",
                        "{}",
                        total,
                        "EUR",
                        at,
                        paid,
                        paid or at,
                    )
                )
                clicked = paid is not None or rnd.random() < 0.4
                t["short_links"].append(
                    (
                        f"c{order_id:09d}",
                        f"https://pay.example/{order_id}",
                        cid,
                        order_id,
                        1 if clicked else 0,
                        at + timedelta(minutes=3) if clicked else None,
                        at,
                    )
                )
                messages.append((cid, channel, "out", "text", "Your link", adviser, "sent", at))
        # Conversations quiet for two days were closed by their adviser; the others are
        # open and assigned to the adviser of their last exchange (none waits in the lobby).
        # last_inbound_at: when the customer first wrote (old enough: WhatsApp's window is
        # closed until they write again); last_adviser_reply_at: their last message.
        quiet = at < END - timedelta(days=2)
        t["conversations"].append(
            (
                cid,
                cid,
                room_id(cid),
                f"{channel} · {name}",
                first,
                "closed" if quiet else "open",
                adviser_of.get(cid, ADVISERS[0]),
                first,
                at + timedelta(days=1) if quiet else None,
                first,
                at,
            )
        )
        if rnd.random() < 0.02:
            state = rnd.choice(("granted", "granted", "refused", "pending"))
            t["consent_requests"].append(
                (
                    len(t["consent_requests"]) + 1,
                    cid,
                    channel,
                    "May we?",
                    "1",
                    rnd.choice(ADVISERS),
                    first,
                    first + timedelta(days=7),
                    state,
                    False,
                )
            )
        if rnd.random() < 0.03:
            confirmed = first + timedelta(minutes=5) if rnd.random() < 0.6 else None
            t["newsletter_optins"].append(
                (
                    len(t["newsletter_optins"]) + 1,
                    cid,
                    "opted_in" if confirmed else "requested",
                    "1",
                    rnd.choice(ADVISERS),
                    first,
                    confirmed,
                    confirmed or first,
                )
            )
    # Ids in time order, as the hub writes them; every message reached Matrix (its event
    # id) and a customer's has the provider's id (both unique indexes the hub maintains).
    messages.sort(key=lambda m: m[7])
    t["messages"] = [
        (i, *m, f"wamid.seed{i}" if m[2] == "in" else None, f"$seed{i}")
        for i, m in enumerate(messages, 1)
    ]
    # The advisers' space exists and every portal is its child already.
    space = {"room_id": f"!space:{DOMAIN}", "invited": sorted(ADVISERS), "synced": True}
    t["hub_state"].append(("space", json.dumps(space), END))
    # The job queue keeps done jobs a week (hub.jobs.worker's DONE_RETENTION_DAYS): one
    # done delivery job per message of the last week.
    week = END - timedelta(days=7)
    for i, m in enumerate(messages, 1):
        if m[7] >= week:
            kind = "matrix.deliver" if m[2] == "in" else "channel.send"
            t["outbox"].append(
                (
                    len(t["outbox"]) + 1,
                    kind,
                    f"conversation:{m[0]}",
                    f"{kind}/{i}",
                    json.dumps({"message_id": i}),
                    "done",
                    1,
                    m[7],
                    m[7],
                    m[7],
                )
            )
    return rows


# --- loading ---------------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's SQLite DateTime storage: naive UTC text with microseconds.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def load_sqlite(path: Path, rows: Rows) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        for name, columns in COLUMNS.items():
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})"
            conn.executemany(
                sql, ([_sqlite_value(v) for v in row] for row in rows.tables.get(name, []))
            )
    conn.close()


async def load_postgresql(url: str, rows: Rows) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            for name, columns in COLUMNS.items():
                records = rows.tables.get(name, [])  # JSON columns: COPY takes their text
                await conn.copy_records_to_table(name, records=records, columns=list(columns))
            # Sequences: the hub's next ids follow the loaded ones.
            for name, columns in COLUMNS.items():
                if columns[0] == "id" and rows.tables.get(name):
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
    finally:
        await conn.close()


async def load(url: str, rows: Rows, say: Any = print, analyze_sqlite: bool = True) -> None:
    """Migrate an empty database at url, load the rows, backfill the KPI rows, ANALYZE.

    analyze_sqlite=False leaves an SQLite file without statistics, as a hub's file is (the
    hub never runs ANALYZE; PostgreSQL's autovacuum does, so it is always analysed)."""
    db = open_database(url)
    try:
        await migrate(db)
    finally:
        await db.close()
    began = time.perf_counter()
    if url.startswith("sqlite"):
        load_sqlite(Path(url.split("///", 1)[1]), rows)
    else:
        await load_postgresql(url, rows)
    say(f"  loaded in {time.perf_counter() - began:.1f} s")
    db = open_database(url)
    try:
        # The rows were loaded as messages alone: write the KPIs' exchanges and inbound spans
        # as migration 0010 does for a hub that had messages before it (timed: the upgrade).
        began = time.perf_counter()
        await db.write(_backfill)
        say(f"  migration 0010's backfill in {time.perf_counter() - began:.1f} s")
        if analyze_sqlite or not url.startswith("sqlite"):
            await db.write(analyze)
    finally:
        await db.close()


def _backfill(tx: Any) -> None:
    spec = importlib.util.spec_from_file_location("m0010", MIGRATION_0010)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.backfill(tx.conn)


def analyze(tx: Any) -> None:
    from sqlalchemy import text

    tx.conn.execute(text("ANALYZE"))


def files_mib(folder: Path, pattern: str) -> float:
    return sum(os.path.getsize(p) for p in folder.glob(pattern)) / 2**20


async def db_size_pg(url: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return float(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20
    finally:
        await conn.close()
