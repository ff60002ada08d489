"""The hub's clock: the one source of "now" for everything the hub stores and decides.

It runs at real speed. `HUB_CLOCK` (an ISO date-time, e.g. 2026-12-06T10:00:00+01:00) in the
environment starts it at that moment instead: to see what the hub does on a Sunday or at
Christmas, on a staging hub or in the end-to-end tests. Pure code never reads it: it is
handed `now`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

ENV = "HUB_CLOCK"


def _offset_from(value: str | None) -> timedelta:
    if not value:
        return timedelta(0)
    start = datetime.fromisoformat(value)
    if start.tzinfo is None:
        raise ValueError(f"{ENV}={value!r} needs a UTC offset, e.g. 2026-12-06T10:00:00+01:00")
    return start - datetime.now(UTC)


_offset = _offset_from(os.environ.get(ENV))


def now() -> datetime:
    """The current moment, timezone-aware (UTC)."""
    return datetime.now(UTC) + _offset


def offset() -> timedelta:
    """How far the hub's clock is from the real one (zero unless HUB_CLOCK is set)."""
    return _offset


def set_now(at: datetime) -> None:
    """Move the clock (tests and the simulator); it runs on from there."""
    global _offset
    _offset = at - datetime.now(UTC)


def reset() -> None:
    """Back to the clock the process started with (HUB_CLOCK, or the real one)."""
    global _offset
    _offset = _offset_from(os.environ.get(ENV))
