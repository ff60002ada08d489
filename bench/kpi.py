"""KPI report benchmark: how long `hub report` / the dashboard take on a big shop's database.

    python bench/kpi.py [--conversations 100000] [--messages-per 10] [--runs 3]
                        [--engines sqlite,postgresql]

Seeds --conversations conversations over 400 days (ending 2026-12-01, Europe/Berlin) with
about --messages-per messages each (1-3 exchanges of customer and adviser messages, a bot
reply now and then), plus what follows from them: missed conversations (5% of exchanges go
unanswered), checkout links and orders (15% of exchanges; 70% of links clicked, half the
orders paid), photo consent and newsletter opt-in requests. The rows are generated once and
bulk-loaded into each engine: an SQLite file in a temp dir (executemany in one transaction)
and a throwaway PostgreSQL server started as tests/integration/conftest.py does (COPY),
skipped with a message when PostgreSQL is not installed. The schema comes from the hub's
migrations (the KPI indexes of 0009 included), then ANALYZE.

Prints per engine: the time to build a 30-day and a 365-day report (median of --runs, after
one warm-up), split into the queries (hub.db.kpi's timings) and the Python slicing, the
database size and the rows a report covers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/kpi.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

from hub.config import Config, parse_config  # noqa: E402
from hub.db.database import Database  # noqa: E402
from hub.db.engine import migrate, open_database  # noqa: E402
from hub.kpi.compute import build_report  # noqa: E402
from hub.kpi.model import Period  # noqa: E402
from hub.kpi.report import read_facts, schedule_of  # noqa: E402

MIGRATION_0010 = REPO / "hub/db/migrations/versions/0010_kpi_exchanges.py"
TZ = "Europe/Berlin"
END = datetime(2026, 12, 1, tzinfo=UTC)
SPAN_DAYS = 400
ADVISERS = [f"@adviser{i}:shop.example" for i in range(8)]
CHANNELS = ["whatsapp", "whatsapp", "whatsapp", "webchat", "telegram", "messenger", "instagram"]
WORDS = "hello can I order the blue one in size M thanks when is it delivered".split()


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
        "ghost_localpart",
        "created_at",
    ),
    "conversations": ("id", "identity_id", "created_at", "status"),
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
        t["channel_identities"].append(
            (cid, cid, channel, f"ext{cid}", f"customer_{cid:08x}", first)
        )
        t["conversations"].append((cid, cid, first, "open"))
        at = first
        for exchange in range(rnd.choice((1, 2, 3))):
            if exchange:
                at += timedelta(days=rnd.expovariate(1 / 20) + 1.1)
            if at >= END:
                break
            adviser = rnd.choice(ADVISERS)
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
    # Ids in time order, as the hub writes them.
    messages.sort(key=lambda m: m[7])
    t["messages"] = [(i, *m) for i, m in enumerate(messages, 1)]
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
    finally:
        await conn.close()


# --- measuring -------------------------------------------------------------------------------


def shop_config() -> Config:
    return parse_config(
        {
            "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
            "appservice": {"as_token": "a" * 32, "hs_token": "b" * 32},
            "shop": {"timezone": TZ, "currency": "EUR", "advisers": ADVISERS},
            "hours": {
                "weekly": {
                    **{d: "09:00-13:00, 14:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")},
                    "sat": "10:00-14:00",
                }
            },
        }
    )


async def measure(db: Database, days: int, runs: int) -> dict[str, Any]:
    config = shop_config()
    last = (END - timedelta(days=1)).date()
    period = Period(last - timedelta(days=days - 1), last, TZ)
    schedule = schedule_of(config, None)
    totals, queries, slicing = [], defaultdict(list), []
    report = None
    for run in range(runs + 1):
        began = time.perf_counter()
        facts = await read_facts(db, period, "EUR")
        read = time.perf_counter()
        report = build_report(period, "EUR", facts, schedule, ADVISERS)
        done = time.perf_counter()
        if run == 0:
            continue  # warm-up: caches, prepared plans
        totals.append(done - began)
        slicing.append(done - read)
        for name, seconds in facts.timings.items():
            queries[name].append(seconds)
    assert report is not None
    return {
        "days": days,
        "total": statistics.median(totals),
        "slicing": statistics.median(slicing),
        "queries": {name: statistics.median(v) for name, v in queries.items()},
        "conversations": report.totals.conversations,
        "exchanges": sum(incoming for hours in report.heatmap for incoming, _m in hours),
    }


def show(engine: str, size: float, results: list[dict[str, Any]]) -> None:
    print(f"\n{engine}: database {size:.0f} MiB")
    for r in results:
        top = sorted(r["queries"].items(), key=lambda item: -item[1])
        parts = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in top[:4])
        print(
            f"  {r['days']:>3}-day report: {r['total'] * 1000:7.0f} ms (median)"
            f" = queries {sum(r['queries'].values()) * 1000:.0f} ms [{parts} ms]"
            f" + slicing {r['slicing'] * 1000:.0f} ms;"
            f" {r['conversations']} conversations, {r['exchanges']} exchanges"
        )


async def run_engine(url: str, rows: Rows, args: argparse.Namespace) -> list[dict[str, Any]]:
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
    print(f"  loaded in {time.perf_counter() - began:.1f} s")
    db = open_database(url)
    try:
        # The rows were loaded as messages alone: write the KPIs' exchanges and inbound spans
        # as migration 0010 does for a hub that had messages before it (timed: the upgrade).
        began = time.perf_counter()
        await db.write(_backfill)
        print(f"  migration 0010's backfill in {time.perf_counter() - began:.1f} s")
        await db.write(_analyze)
        return [await measure(db, days, args.runs) for days in (30, 365)]
    finally:
        await db.close()


def _backfill(tx: Any) -> None:
    spec = importlib.util.spec_from_file_location("m0010", MIGRATION_0010)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.backfill(tx.conn)


def _analyze(tx: Any) -> None:
    from sqlalchemy import text

    tx.conn.execute(text("ANALYZE"))


def _files_mib(folder: Path, pattern: str) -> float:
    return sum(os.path.getsize(p) for p in folder.glob(pattern)) / 2**20


async def db_size_pg(url: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return float(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20
    finally:
        await conn.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages-per", type=float, default=7.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()

    began = time.perf_counter()
    rows = generate(args.conversations, args.messages_per)
    counts = {name: len(r) for name, r in rows.tables.items()}
    print(f"generated in {time.perf_counter() - began:.1f} s: {counts}")
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory(prefix="hub-bench-kpi-") as tmp:
        if "sqlite" in engines:
            path = Path(tmp) / "hub.db"
            print("sqlite:")
            results = await run_engine(f"sqlite+aiosqlite:///{path}", rows, args)
            size = _files_mib(Path(tmp), "hub.db*")
            show("SQLite", size, results)
        if "postgresql" in engines:
            from tests.pg import PostgresServer, find_bin_dir

            bin_dir = find_bin_dir()
            if bin_dir is None:
                print(
                    "\nPostgreSQL: skipped (initdb/postgres not found; apt-get install postgresql)"
                )
                return 0
            server = PostgresServer(bin_dir)
            server.start()
            try:
                url = server.url(await server.create_database("bench"))
                print("postgresql:")
                results = await run_engine(url, rows, args)
                show("PostgreSQL", await db_size_pg(url), results)
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
