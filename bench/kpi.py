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
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/kpi.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO))

from bench.seed import (  # noqa: E402
    ADVISERS,
    END,
    TZ,
    Rows,
    db_size_pg,
    files_mib,
    generate,
    load,
)
from hub.config import Config, parse_config  # noqa: E402
from hub.db.database import Database  # noqa: E402
from hub.db.engine import open_database  # noqa: E402
from hub.kpi.compute import build_report  # noqa: E402
from hub.kpi.model import Period  # noqa: E402
from hub.kpi.report import read_facts, schedule_of  # noqa: E402

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
    await load(url, rows)
    db = open_database(url)
    try:
        return [await measure(db, days, args.runs) for days in (30, 365)]
    finally:
        await db.close()


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
            size = files_mib(Path(tmp), "hub.db*")
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
