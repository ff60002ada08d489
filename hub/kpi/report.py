"""A KPI report of a period, from the database: the facts of hub.db.kpi, sliced by
hub.kpi.compute. The one entry point for `hub report` and the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from zoneinfo import ZoneInfo

from hub.config import Config
from hub.db import kpi as queries
from hub.db.database import Database
from hub.kpi.compute import Facts, build_report, day_number, offset_steps, period_bounds
from hub.kpi.model import Period, Report
from hub.scheduler.hours import Schedule


def make_period(config: Config, since: date, until: date) -> Period:
    """A period in the shop's time zone; ValueError when it ends before it starts."""
    if until < since:
        raise ValueError(f"the period ends ({until}) before it starts ({since})")
    return Period(since=since, until=until, timezone=config.shop.timezone)


def schedule_of(config: Config, holidays: Mapping[date, str] | None) -> Schedule | None:
    """The opening hours the durations count, None (wall-clock time) without hours."""
    if not config.hours.configured:
        return None
    return config.hours.schedule(config.shop.timezone, holidays)


async def read_facts(db: Database, period: Period, currency: str) -> Facts:
    start, end = period_bounds(period)
    window = queries.Window(
        start=start,
        end=end,
        offsets=offset_steps(period.timezone, start, end),
        currency=currency,
        first_day=day_number(period.since),
        last_day=day_number(period.until),
    )
    return await db.read(queries.facts, window)


async def build(
    db: Database,
    config: Config,
    period: Period,
    holidays: Mapping[date, str] | None = None,
) -> Report:
    """The report of `period`; `holidays`: the public holidays (hub.scheduler.holiday_dates)
    when hours.holidays names a country, so that they count as closed."""
    ZoneInfo(period.timezone)  # a bad zone fails here, before any query
    facts = await read_facts(db, period, config.shop.currency)
    return build_report(
        period,
        config.shop.currency,
        facts,
        schedule_of(config, holidays),
        advisers=config.shop.advisers,
    )
