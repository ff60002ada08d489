"""The KPI report against a hand-computed table, on SQLite and PostgreSQL, and `hub report`.

The shop: Europe/Berlin (UTC+1 in November), open Monday to Friday 09:00-18:00, advisers
anna and ben, channels WhatsApp and Telegram. The period: Monday 2026-11-02 to Wednesday
2026-11-04 (all local times below):

C1 WhatsApp, new Mon 10:00: anna answers 10:05 (300 s); the customer writes 10:10; anna
   sends a checkout link 10:20 (order O1, 50.00, by anna; the link is clicked); the customer
   writes Tue 09:30 (23 h 10 min after the last message: the same exchange); O1 is paid Tue
   09:40, so it counts on Tuesday. Photo consent asked Mon by anna, granted.
C2 Telegram, new Mon 17:50: ben answers 19:00, after closing: 600 s of opening time; he
   sends a link 19:05 (order O2, 30.00), never clicked, never paid. Newsletter opt-in asked
   Mon by ben, confirmed.
C3 WhatsApp, new Tue 11:00: only the bot's holding reply (no adviser): recorded missed
   (a missed_conversations row). Photo consent asked Tue by anna, pending.
C4 Telegram, from October (customer and anna on Oct 1; order O3, 25.00, by anna on Oct 30):
   the customer writes Tue 20:00 (a new exchange: weeks of quiet), anna answers 20:10
   (closed: 0 s), the customer's "thanks" Wed 08:00 starts no exchange (within 24 h); O3 is
   paid Wed 10:00.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from hub.__main__ import main
from hub.config import Config, parse_config
from hub.db import exchanges
from hub.db.database import Database, Tx
from hub.db.engine import migrate, open_database
from hub.db.models import (
    ChannelIdentity,
    ConsentRequest,
    Conversation,
    Customer,
    Exchange,
    InboundSpan,
    Message,
    MissedConversation,
    NewsletterOptin,
    Order,
    ShortLink,
)
from hub.kpi.model import Metrics, Period, Report
from hub.kpi.report import build

ANNA, BEN = "@anna:shop.example", "@ben:shop.example"
CET = timedelta(hours=1)
SHOP: dict[str, Any] = {
    "homeserver": {"url": "http://127.0.0.1:1", "domain": "shop.example"},
    "appservice": {"as_token": "a" * 32, "hs_token": "b" * 32},
    "shop": {"timezone": "Europe/Berlin", "currency": "EUR", "advisers": [ANNA, BEN]},
    "hours": {"weekly": {day: "09:00-18:00" for day in ("mon", "tue", "wed", "thu", "fri")}},
}
PERIOD = Period(date(2026, 11, 2), date(2026, 11, 4), "Europe/Berlin")

# The hand-computed table, one row per slice, the columns in hub.kpi.model.Metrics' order:
# new, conversations, FRT median, FRT p90, missed, links sent, clicked, orders created, paid,
# revenue, AOV, conversion, conversion with link, consent rate, opt-in rate.
# Waits: C1 300 (anna, WhatsApp, Mon), C2 600 (ben, Telegram, Mon), C4 0 (anna, Telegram,
# Tue). Percentiles interpolate: p90 of [0, 300, 600] = 300 + 0.8 * 300 = 540.
N = None
EXPECTED: dict[str, tuple[Any, ...]] = {
    "total": (3, 4, 300, 540, 1, 2, 1, 2, 2, 7500, 3750, 0.5, 1.0, 0.5, 1.0),
    "2026-11-02": (2, 2, 450, 570, 0, 2, 1, 2, 0, 0, N, 0.0, 0.0, 1.0, 1.0),
    "2026-11-03": (1, 3, 0, 0, 1, 0, 0, 0, 1, 5000, 5000, 1 / 3, N, 0.0, N),
    "2026-11-04": (0, 1, N, N, 0, 0, 0, 0, 1, 2500, 2500, 1.0, N, N, N),
    "2026-W45": (3, 4, 300, 540, 1, 2, 1, 2, 2, 7500, 3750, 0.5, 1.0, 0.5, 1.0),
    # Advisers: conversations they answered first; O3 was paid without a link of the period,
    # so anna's conversion with a link is 2 paid / 1 conversation with her link.
    ANNA: (0, 2, 150, 270, 0, 1, 1, 1, 2, 7500, 3750, 1.0, 2.0, 0.5, N),
    BEN: (0, 1, 600, 600, 0, 1, 0, 1, 0, 0, N, 0.0, 0.0, N, 1.0),
    "telegram": (1, 2, 300, 540, 0, 1, 0, 1, 1, 2500, 2500, 0.5, 1.0, N, 1.0),
    "whatsapp": (2, 2, 300, 300, 1, 1, 1, 1, 1, 5000, 5000, 0.5, 1.0, 0.5, N),
}
# (weekday, hour) -> (incoming, missed); every other cell is (0, 0).
HEATMAP = {(0, 10): (1, 0), (0, 17): (1, 0), (1, 11): (1, 1), (1, 20): (1, 0)}


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Berlin wall-clock time in November (UTC+1) or October (UTC+2 before the 25th)."""
    offset = CET if (month, day) >= (10, 25) else 2 * CET
    return datetime(2026, month, day, hour, minute, tzinfo=UTC) - offset


def config() -> Config:
    return parse_config(SHOP)


def _book(session: Session, message: Message) -> None:
    if message.direction == "in":
        exchanges.customer_message(session.connection(), message)
    else:
        exchanges.adviser_message(session.connection(), message)


async def seed(sessions: async_sessionmaker[AsyncSession], *, book: bool = True) -> None:
    """The shop's rows; `book` False: without the KPIs' bookkeeping (as before 0010)."""
    async with sessions() as s, s.begin():
        convs: dict[str, Conversation] = {}
        for name, channel, created in (
            ("C1", "whatsapp", local(11, 2, 10)),
            ("C2", "telegram", local(11, 2, 17, 50)),
            ("C3", "whatsapp", local(11, 3, 11)),
            ("C4", "telegram", local(10, 1, 10)),
        ):
            customer = Customer(display_name=name, created_at=created)
            s.add(customer)
            await s.flush()
            identity = ChannelIdentity(
                customer_id=customer.id,
                channel=channel,
                external_id=name,
                ghost_localpart=f"customer_{name}",
                created_at=created,
            )
            s.add(identity)
            await s.flush()
            conv = Conversation(identity_id=identity.id, created_at=created)
            s.add(conv)
            await s.flush()
            convs[name] = conv
        ids: dict[str, int] = {}
        # Messages in time order (the ids follow it, as in the hub).
        for key, name, direction, sender, at in sorted(
            [
                ("c4-old-in", "C4", "in", None, local(10, 1, 10)),
                ("c4-old-out", "C4", "out", ANNA, local(10, 1, 10, 1)),
                ("c1-in", "C1", "in", None, local(11, 2, 10)),
                ("c1-reply", "C1", "out", ANNA, local(11, 2, 10, 5)),
                ("c1-in2", "C1", "in", None, local(11, 2, 10, 10)),
                ("c1-link", "C1", "out", ANNA, local(11, 2, 10, 20)),
                ("c2-in", "C2", "in", None, local(11, 2, 17, 50)),
                ("c2-reply", "C2", "out", BEN, local(11, 2, 19)),
                ("c2-link", "C2", "out", BEN, local(11, 2, 19, 5)),
                ("c1-next-day", "C1", "in", None, local(11, 3, 9, 30)),
                ("c3-in", "C3", "in", None, local(11, 3, 11)),
                ("c3-holding", "C3", "out", None, local(11, 3, 11, 0) + timedelta(seconds=5)),
                ("c4-in", "C4", "in", None, local(11, 3, 20)),
                ("c4-reply", "C4", "out", ANNA, local(11, 3, 20, 10)),
                ("c4-thanks", "C4", "in", None, local(11, 4, 8)),
            ],
            key=lambda row: row[4],
        ):
            conv = convs[name]
            channel = "whatsapp" if name in ("C1", "C3") else "telegram"
            message = Message(
                conversation_id=conv.id,
                channel=channel,
                direction=direction,
                kind="text",
                text=key,
                sender_mxid=sender,
                status="sent",
                created_at=at,
            )
            s.add(message)
            await s.flush()
            ids[key] = message.id
            if book:  # what hub.db.inbound and hub.db.outbound write with each message
                await s.run_sync(_book, message)
        s.add(
            MissedConversation(
                conversation_id=convs["C3"].id,
                message_id=ids["c3-in"],
                since=local(11, 3, 11),
                recorded_at=local(11, 3, 11, 15),
            )
        )
        orders = {}
        for name, conv_name, adviser, total, created, paid in (
            ("O1", "C1", ANNA, 5000, local(11, 2, 10, 20), local(11, 3, 9, 40)),
            ("O2", "C2", BEN, 3000, local(11, 2, 19, 5), None),
            ("O3", "C4", ANNA, 2500, local(10, 30, 12), local(11, 4, 10)),
        ):
            order = Order(
                conversation_id=convs[conv_name].id,
                adviser_mxid=adviser,
                status="paid" if paid else "pending",
                provider="builtin",
                reference=name,
                cart={},
                total_minor=total,
                currency="EUR",
                created_at=created,
                paid_at=paid,
                updated_at=paid or created,
            )
            s.add(order)
            await s.flush()
            orders[name] = order
        for code, conv_name, order_name, clicks, at in (
            ("L1", "C1", "O1", 2, local(11, 2, 10, 20)),
            ("L2", "C2", "O2", 0, local(11, 2, 19, 5)),
            ("L3", "C4", "O3", 1, local(10, 30, 12)),  # before the period
        ):
            s.add(
                ShortLink(
                    code=code,
                    url="https://pay.example/" + code,
                    conversation_id=convs[conv_name].id,
                    order_id=orders[order_name].id,
                    clicks=clicks,
                    first_click_at=at + timedelta(minutes=1) if clicks else None,
                    created_at=at,
                )
            )
        for conv_name, state, at in (
            ("C1", "granted", local(11, 2, 10, 30)),
            ("C3", "pending", local(11, 3, 11, 30)),
        ):
            s.add(
                ConsentRequest(
                    conversation_id=convs[conv_name].id,
                    channel="whatsapp",
                    text="May we?",
                    text_version="1",
                    requested_by=ANNA,
                    requested_at=at,
                    expires_at=at + timedelta(days=7),
                    state=state,
                )
            )
        s.add(
            NewsletterOptin(
                identity_id=convs["C2"].identity_id,
                state="opted_in",
                text_version="1",
                requested_by=BEN,
                requested_at=local(11, 2, 19, 10),
                confirmed_at=local(11, 2, 19, 20),
                updated_at=local(11, 2, 19, 20),
            )
        )


def row(metrics: Metrics) -> tuple[Any, ...]:
    return tuple(getattr(metrics, f.name) for f in fields(Metrics))


def check(report: Report) -> None:
    got = {"total": row(report.totals)}
    for slices in (report.by_day, report.by_week, report.by_adviser, report.by_channel):
        got |= {s.key: row(s.metrics) for s in slices}
    assert set(got) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert got[key] == pytest.approx(expected), key
    assert [s.label for s in report.by_adviser] == ["anna", "ben"]
    assert [s.label for s in report.by_channel] == ["Telegram", "WhatsApp"]
    assert [s.label for s in report.by_week] == ["W45 2026"]
    cells = {
        (day, hour): cell
        for day, hours in enumerate(report.heatmap)
        for hour, cell in enumerate(hours)
        if cell != (0, 0)
    }
    assert cells == HEATMAP


async def test_report_matches_the_hand_computed_table(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    report = await build(db, config(), PERIOD)
    check(report)
    assert report.currency == "EUR" and report.period == PERIOD


async def test_without_hours_durations_are_wall_clock(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    data = {**SHOP, "hours": {}}
    report = await build(db, parse_config(data), PERIOD)
    # C1 300 s, C2 70 min, C4 10 min.
    assert report.totals.first_response_median == 600
    assert [s.metrics.first_response_median for s in report.by_adviser] == [450, 4200]


async def test_a_period_without_rows_has_zeros_and_nones(db: Database) -> None:
    report = await build(db, config(), PERIOD)
    assert report.totals == Metrics()
    assert len(report.by_day) == 3 and report.by_channel == []
    assert [s.key for s in report.by_adviser] == [ANNA, BEN]


# --- the bookkeeping (hub.db.exchanges) and migration 0010's backfill -----------------------

MIGRATION_0010 = Path(__file__).parents[2] / "hub/db/migrations/versions/0010_kpi_exchanges.py"


def _migration_0010() -> Any:
    spec = importlib.util.spec_from_file_location("migration_0010", MIGRATION_0010)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kpi_rows(tx: Tx) -> tuple[list[Any], list[Any]]:
    ex, sp = Exchange.__table__, InboundSpan.__table__
    found = tx.conn.execute(select(ex).order_by(ex.c.message_id))
    spans = tx.conn.execute(select(sp).order_by(sp.c.bucket, sp.c.conversation_id))
    return [tuple(r) for r in found], [tuple(r) for r in spans]


def _clear(tx: Tx) -> None:
    tx.conn.execute(text("DELETE FROM exchanges"))
    tx.conn.execute(text("DELETE FROM inbound_spans"))


async def test_the_backfill_writes_what_the_bookkeeping_writes(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    booked = await db.read(_kpi_rows)
    # C1 (Mon), C2, C3, C4 in October and C4 on Tuesday: the "thanks" and C1's Tuesday
    # message start none.
    assert len(booked[0]) == 5 and [r[5] for r in booked[0]] == [ANNA, ANNA, BEN, None, ANNA]
    await db.write(_clear)
    await db.write(lambda tx: _migration_0010().backfill(tx.conn))
    assert await db.read(_kpi_rows) == booked


async def test_a_database_backfilled_by_0010_gives_the_hand_computed_table(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions, book=False)  # messages stored before 0010
    assert await db.read(_kpi_rows) == ([], [])
    await db.write(lambda tx: _migration_0010().backfill(tx.conn))
    check(await build(db, config(), PERIOD))


async def test_silence_is_counted_from_customer_and_adviser_messages_only(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A bot message neither answers nor breaks the silence; 24 h to the second is no gap
    (more than 24 h is); each answer closes every open exchange before it."""
    t0 = local(11, 2, 10)
    async with sessions() as s, s.begin():
        customer = Customer(display_name="X", created_at=t0)
        s.add(customer)
        await s.flush()
        identity = ChannelIdentity(
            customer_id=customer.id,
            channel="telegram",
            external_id="X",
            ghost_localpart="customer_x",
            created_at=t0,
        )
        s.add(identity)
        await s.flush()
        conv = Conversation(identity_id=identity.id, created_at=t0)
        s.add(conv)
        await s.flush()
        for direction, sender, at in (
            ("in", None, t0),  # starts
            ("out", None, t0 + timedelta(hours=20)),  # the bot: no answer, no activity
            ("in", None, t0 + timedelta(days=1)),  # exactly 24 h: the same exchange
            ("in", None, t0 + timedelta(days=2, seconds=1)),  # 24 h 1 s: starts
            ("out", BEN, t0 + timedelta(days=2, minutes=5)),  # answers both
            ("out", ANNA, t0 + timedelta(days=2, minutes=6)),
        ):
            message = Message(
                conversation_id=conv.id,
                channel="telegram",
                direction=direction,
                kind="text",
                sender_mxid=sender,
                status="sent",
                created_at=at,
            )
            s.add(message)
            await s.flush()
            await s.run_sync(_book, message)
    found, spans = await db.read(_kpi_rows)
    answered = (t0 + timedelta(days=2, minutes=5)).timestamp()
    assert [(r[3].timestamp(), r[4].timestamp(), r[5]) for r in found] == [
        (t0.timestamp(), answered, BEN),
        ((t0 + timedelta(days=2, seconds=1)).timestamp(), answered, BEN),
    ]
    # Half UTC days: 09:00 UTC on day 0 and 1, 09:00:01 on day 2.
    assert [(r[0] % 2, r[3].timestamp(), r[4].timestamp()) for r in spans] == [
        (0, t0.timestamp(), t0.timestamp()),
        (0, (t0 + timedelta(days=1)).timestamp(), (t0 + timedelta(days=1)).timestamp()),
        (0, *(2 * [(t0 + timedelta(days=2, seconds=1)).timestamp()])),
    ]
    await db.write(_clear)
    await db.write(lambda tx: _migration_0010().backfill(tx.conn))
    assert await db.read(_kpi_rows) == (found, spans)


# --- hub report ------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = {**SHOP, "data_dir": str(tmp_path), "database": {"url": "sqlite+aiosqlite:///hub.db"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
async def seeded_file(config_file: Path, tmp_path: Path) -> Path:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        await migrate(database)
        await seed(async_sessionmaker(database.engine, expire_on_commit=False))
    finally:
        await database.close()
    return config_file


def test_cli_prints_json_csv_and_the_table(
    seeded_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["report", "--since", "2026-11-02", "--until", "2026-11-04", "-c", str(seeded_file)]
    assert main([*base, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["period"] == {
        "since": "2026-11-02",
        "until": "2026-11-04",
        "timezone": "Europe/Berlin",
    }
    assert data["totals"]["revenue"] == 7500 and data["totals"]["first_response_p90"] == 540
    assert data["heatmap"][1][11] == [1, 1]

    assert main([*base, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    names = [line for line in out.splitlines() if line.startswith("# ")]
    assert names == [
        "# totals",
        "# by_day",
        "# by_week",
        "# by_adviser",
        "# by_channel",
        "# heatmap",
    ]
    assert "total,total,3,4,300.0,540.0,1,2,1,2,2,7500,3750,0.5,1.0,0.5,1.0" in out

    assert main(base) == 0
    out = capsys.readouterr().out
    assert "Revenue" in out and "75.00 EUR" in out and "9m 00s" in out  # p90 540 s
    assert "anna" in out and "WhatsApp" in out


def test_cli_refuses_bad_dates(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "--since", "2026-11-30", "--until", "2026-11-01", "-c", str(config_file)]
    assert main(args) == 2
    assert "ends (2026-11-01) before it starts (2026-11-30)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["report", "--since", "2026-13-01", "-c", str(config_file)])
    assert exited.value.code == 2
    assert "'2026-13-01' is not a date (e.g. 2026-11-01)" in capsys.readouterr().err
