"""The widget API's rate limits (hub.bridges.webchat.limits): sliding windows with a clock
passed in, all-or-nothing checks, bounded memory, the limits of the widget's requests and
the throttled log. Pure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.bridges.webchat.limits import (
    LogThrottle,
    Refused,
    SlidingWindow,
    WidgetLimits,
    address_key,
    take_all,
)
from hub.config.channels import WebchatLimits

ROOT = Path(__file__).resolve().parents[2]


def test_a_window_allows_its_limit_and_refuses_the_next() -> None:
    w = SlidingWindow(3, 60.0)
    assert [w.hit("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = w.hit("a", 100.5)
    # The slot of 100.0 (100–105) leaves the window at 165.
    assert wait == pytest.approx(64.5)
    assert w.hit("b", 100.5) == 0.0  # keys are counted apart
    assert w.hit("a", 164.9) > 0
    assert w.hit("a", 165.0) == 0.0


def test_the_window_slides() -> None:
    w = SlidingWindow(4, 60.0)
    for t in (0.0, 10.0, 20.0, 30.0):
        assert w.hit("k", t) == 0.0
    assert w.hit("k", 40.0) == pytest.approx(25.0)  # until the slot 0–5 has left
    assert w.hit("k", 65.0) == 0.0  # the event at 0 is out: one more
    assert w.hit("k", 66.0) == pytest.approx(9.0)  # the next frees at 75 (slot 10–15)
    assert w.hit("k", 75.0) == 0.0


def test_a_refused_event_is_not_counted() -> None:
    w = SlidingWindow(1, 60.0)
    assert w.hit("k", 0.0) == 0.0
    for t in range(1, 60):
        assert w.hit("k", float(t)) > 0
    assert w.hit("k", 65.0) == 0.0


def test_take_all_counts_all_or_nothing() -> None:
    visitor, address = SlidingWindow(2), SlidingWindow(10)
    checks = [(visitor, "ana"), (address, "192.0.2.1")]
    assert take_all(checks, 0.0) == 0.0
    assert take_all(checks, 1.0) == 0.0
    assert take_all(checks, 2.0) > 0  # ana is over: the address counts nothing
    assert address.retry_after("192.0.2.1", 2.0) == 0.0
    for _ in range(8):
        assert take_all([(address, "192.0.2.1")], 3.0) == 0.0
    assert take_all([(address, "192.0.2.1")], 3.0) > 0  # 10 counted, not 11


def test_memory_is_bounded_whatever_the_flood() -> None:
    w = SlidingWindow(5, 60.0, max_keys=1000)
    for n in range(100_000):
        w.hit(f"198.51.{n // 256 % 256}.{n % 256}-{n}", 1000.0 + n / 1000)
        assert len(w) <= 1000
    assert w.evicted >= 99_000


def test_expired_keys_are_dropped_as_new_ones_come() -> None:
    w = SlidingWindow(5, 60.0, max_keys=10_000)
    for n in range(5000):
        w.hit(f"old-{n}", 0.0)
    assert len(w) == 5000
    # Two minutes later every old key counts nothing: each new event sweeps a few of them.
    for n in range(2000):
        w.hit(f"new-{n}", 120.0 + n / 100)
    assert len(w) == 2000  # the old keys are gone, without evicting a live one
    assert w.evicted == 0


def test_a_key_stays_small_whatever_its_limit() -> None:
    w = SlidingWindow(100_000, 60.0)
    for n in range(50_000):
        w.hit("busy", n / 100)  # 100 a second for 500 s
    counts = w._keys["busy"]
    assert len(counts) <= 2 * 13  # a number and a count per slot of the window, and one


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 12),
    gaps=st.lists(st.floats(0.0, 20.0, allow_nan=False), min_size=1, max_size=80),
)
def test_never_more_than_the_limit_in_any_window(limit: int, gaps: list[float]) -> None:
    """In no `window` seconds more than `limit` events are allowed; and an event is refused
    only when `limit` were allowed in the window and one slot before it (never stricter)."""
    window, slot = 60.0, 5.0
    w = SlidingWindow(limit, window, slots=12)
    allowed: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        wait = w.hit("k", now)
        recent = [t for t in allowed if t > now - window]
        if wait == 0.0:
            allowed.append(now)
            assert len(recent) + 1 <= limit
        else:
            assert len([t for t in allowed if t > now - window - slot]) >= limit
            # The wait is honest: nothing more is needed once it has passed.
            probe = SlidingWindow(limit, window, slots=12)
            probe._keys = {"k": list(w._keys["k"])}
            assert probe.retry_after("k", now + wait + 1e-6) == 0.0


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("unknown") == "unknown"
    assert address_key("x" * 500) == "x" * 64


def test_log_throttle() -> None:
    log = LogThrottle(60.0)
    assert log.due("sessions", 0.0) == 0
    assert [log.due("sessions", t) for t in (1.0, 2.0, 59.0)] == [None, None, None]
    assert log.due("messages", 2.0) == 0  # another limit has its own line
    assert log.due("sessions", 60.0) == 3
    assert log.due("sessions", 61.0) is None
    assert log.due("sessions", 200.0) == 1


def test_widget_limits_from_the_config() -> None:
    limits = WidgetLimits.from_config(
        WebchatLimits(sessions_per_address=2, messages_per_visitor=3, new_conversations=1)
    )
    assert limits.new_session("192.0.2.1", 0.0) is None
    assert limits.new_session("192.0.2.1", 0.0) is None
    refused = limits.new_session("192.0.2.1", 0.5)
    assert refused == Refused("sessions_per_address", 65)
    assert limits.new_session("192.0.2.2", 0.5) is None
    # Coming back is counted per visitor, at the same number.
    assert limits.known_session("ana", 0.0) is None
    assert limits.known_session("ana", 0.0) is None
    assert limits.known_session("ana", 0.0) == Refused("sessions_per_visitor", 65)

    for _ in range(3):
        assert limits.message("192.0.2.1", "ana", 1.0) is None
    assert limits.message("192.0.2.1", "ana", 1.0) == Refused("messages_per_visitor", 64)
    assert limits.message("192.0.2.1", "bo", 1.0) is None
    assert limits.new_conversation(1.0) is None
    assert limits.new_conversation(2.0) == Refused("new_conversations", 63)
    assert limits.refused == {
        "sessions_per_address": 1,
        "sessions_per_visitor": 1,
        "messages_per_visitor": 1,
        "messages_per_address": 0,
        "uploads_per_visitor": 0,
        "new_conversations": 1,
        "reads_per_visitor": 0,
    }


def test_the_limit_keeping_a_request_longest_is_named() -> None:
    limits = WidgetLimits(messages_per_visitor=1, messages_per_address=1)
    assert limits.message("192.0.2.1", "ana", 0.0) is None
    assert limits.upload("192.0.2.1", "ana", 0.0) == Refused("messages_per_address", 65)
    assert limits.message("192.0.2.9", "ana", 10.0) == Refused("messages_per_visitor", 55)


def test_retry_after_is_a_whole_second_at_least() -> None:
    limits = WidgetLimits(new_conversations=1)
    assert limits.new_conversation(0.0) is None
    refused = limits.new_conversation(64.99)
    assert refused is not None and refused.retry_after == 1


def test_the_module_is_pure() -> None:
    probe = (
        "import json, sys; import hub.bridges.webchat.limits; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = json.loads(out.stdout)
    io = ("aiohttp", "sqlalchemy", "asyncpg", "aiosqlite", "hub.db", "hub.net", "hub.config")
    assert [m for m in loaded if m.startswith(io)] == []
