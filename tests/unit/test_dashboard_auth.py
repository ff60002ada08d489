"""The dashboard's logins without HTTP: argon2 passwords (unknown users cost the same work),
session tokens kept as hashes (the store itself: tests/integration/test_dashboard_sessions.py),
CSRF token comparison, the limit on failed logins; and
the pure parts of what it shows (the period asked for, figures in the shop's locale, the
heatmap, CSV)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from datetime import UTC, date, datetime

import argon2
import pytest

from hub.http.dashboard_auth import (
    LoginLimiter,
    Passwords,
    Sessions,
    hash_password,
    new_token,
    same_token,
    session_key,
)
from hub.http.dashboard_csv import report_csv
from hub.http.dashboard_view import Figures, PeriodError, choose_period, heatmap_rows
from hub.kpi.model import Metrics, Period, Report, Slice

# Cheap parameters: the tests check the logic, not argon2's cost.
FAST = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def test_hash_password_is_argon2id_and_verifies() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(hashed, "correct horse battery")


async def test_passwords_verify_known_wrong_and_unknown() -> None:
    passwords = Passwords({"anna": FAST.hash("s3cret-pass")})
    assert await passwords.verify("anna", "s3cret-pass")
    assert not await passwords.verify("anna", "s3cret-pasS")
    assert not await passwords.verify("bob", "s3cret-pass")
    assert not await passwords.verify("", "")
    # Longer than anyone types: refused (after the same work).
    assert not await passwords.verify("anna", "s3cret-pass" + "x" * 2000)


def test_unknown_user_costs_the_same_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown username is verified against a hash with the configured parameters: one
    argon2 verification per attempt either way."""
    known = FAST.hash("s3cret-pass")
    passwords = Passwords({"anna": known})
    dummy = passwords._dummy_hash()
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(known)

    passwords.verify_now("nobody", "warm-up")  # the dummy hash is made once, first
    checked: list[str] = []
    original = argon2.PasswordHasher.verify

    def counting(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        checked.append(hash)
        return original(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting)
    passwords.verify_now("anna", "wrong")
    passwords.verify_now("nobody", "wrong")
    assert checked == [known, dummy]


def test_csrf_tokens_compare_exactly() -> None:
    token = new_token()
    assert len(token) == 43 and token != new_token()
    assert same_token(token, token)
    assert not same_token(token[:-1], token)
    assert not same_token("", token)
    assert not same_token("\udcff" + token[1:], token)  # undecodable bytes: no exception


def test_the_database_keeps_a_hash_of_the_session_token() -> None:
    token = new_token()
    key = session_key(token)
    assert key == hashlib.sha256(token.encode()).hexdigest() and len(key) == 64
    assert token not in key and session_key(new_token()) != key
    assert len(session_key("\udcff")) == 64  # undecodable cookie bytes: no exception


async def test_a_cookie_that_is_no_token_costs_no_database_query() -> None:
    class NoDatabase:
        async def read(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("the database was asked")

        write = read

    sessions = Sessions(NoDatabase(), minutes=10)  # type: ignore[arg-type]
    now = datetime(2026, 12, 4, tzinfo=UTC)
    for cookie in (None, "", "made-up", "x" * 44, "x" * 2000):
        assert await sessions.get(cookie, now) is None


def test_rate_limit_per_address() -> None:
    limiter = LoginLimiter(3, window=900)
    for t in range(3):
        assert limiter.retry_after("10.0.0.1", f"user{t}", float(t)) is None
        limiter.failed("10.0.0.1", f"user{t}", float(t))
    # The address is blocked, whatever username it tries next; another address is not.
    wait = limiter.retry_after("10.0.0.1", "anna", 3.0)
    assert wait == pytest.approx(897.0)
    assert limiter.retry_after("10.0.0.2", "anna", 3.0) is None
    # Free again once the oldest failure has left the 15 minutes.
    assert limiter.retry_after("10.0.0.1", "anna", 900.0) is None


def test_rate_limit_per_username_across_addresses() -> None:
    limiter = LoginLimiter(2, window=900)
    limiter.failed("10.0.0.1", "anna", 0.0)
    limiter.failed("10.0.0.2", "Anna ", 10.0)  # the same target, written differently
    # Free again when the first failure (at 0) is 15 minutes old.
    assert limiter.retry_after("10.0.0.3", "anna", 20.0) == pytest.approx(880.0)
    assert limiter.retry_after("10.0.0.3", "bob", 20.0) is None


def test_a_right_attempt_is_taken_back() -> None:
    limiter = LoginLimiter(2, window=900)
    limiter.failed("10.0.0.1", "anna", 1.0)
    limiter.failed("10.0.0.1", "anna", 2.0)  # counted before the password was checked ...
    limiter.succeeded("10.0.0.1", "anna", 2.0)  # ... and it was right
    assert limiter.retry_after("10.0.0.1", "anna", 3.0) is None
    limiter.failed("10.0.0.1", "anna", 4.0)
    assert limiter.retry_after("10.0.0.1", "anna", 5.0) is not None


def test_rate_limit_memory_is_bounded() -> None:
    limiter = LoginLimiter(1, window=900, max_counters=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}", 0.0)
    assert len(limiter._counters) <= 100


# -- what the dashboard shows -------------------------------------------------------------

TODAY = date(2026, 11, 30)


def test_period_presets_and_custom() -> None:
    assert choose_period({}, TODAY, "Europe/Berlin").period == Period(
        date(2026, 11, 1), TODAY, "Europe/Berlin"
    )
    week = choose_period({"days": "7"}, TODAY, "UTC")
    assert (week.period.since, week.period.until, week.days) == (date(2026, 11, 24), TODAY, 7)
    custom = choose_period({"since": "2026-10-01", "until": "2026-10-31"}, TODAY, "UTC")
    assert (custom.period.since, custom.period.until, custom.days) == (
        date(2026, 10, 1),
        date(2026, 10, 31),
        None,
    )


@pytest.mark.parametrize(
    "query",
    [
        {"days": "8"},
        {"days": "x"},
        {"since": "2026-13-01"},
        {"since": "2026-11-02", "until": "2026-11-01"},
        {"since": "2020-01-01", "until": "2026-11-01"},
    ],
)
def test_period_refused(query: dict[str, str]) -> None:
    with pytest.raises(PeriodError):
        choose_period(query, TODAY, "UTC")


def test_figures_in_german(shop_language: Callable[[str], None]) -> None:
    shop_language("de_DE")
    f = Figures("de_DE", "EUR")
    assert f.money(123456) == "1.234,56\u00a0€"
    assert f.number(12345) == "12.345"
    assert f.rate(0.1234) == "12,3\u00a0%"
    assert f.money(None) == f.rate(None) == f.duration(None) == "–"
    assert f.major(123456) == pytest.approx(1234.56)


def test_heatmap_shades_relative_to_the_busiest_hour() -> None:
    grid = [[(0, 0)] * 24 for _ in range(7)]
    grid[0][9] = (10, 2)
    grid[4][17] = (5, 0)
    grid[6][23] = (1, 1)
    report = Report(Period(TODAY, TODAY, "UTC"), "EUR", Metrics(), heatmap=grid)
    rows = heatmap_rows(report, "en_US")
    assert [r["day"] for r in rows] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert rows[0]["cells"][9] | {"title": ""} == {
        "incoming": 10,
        "missed": 2,
        "level": 5,
        "title": "",
    }
    assert rows[4]["cells"][17]["level"] == 2  # 5 of 10: rounded to 2 of 5 shades (banker's)
    assert rows[6]["cells"][23]["level"] == 1  # any traffic is at least the lightest shade
    assert rows[1]["cells"][0]["level"] == 0
    assert "Monday 9:00–10:00: 10 incoming, 2 missed" == rows[0]["cells"][9]["title"]


def test_csv_tables_and_formula_cells() -> None:
    report = Report(
        Period(date(2026, 11, 1), TODAY, "UTC"),
        "EUR",
        Metrics(conversations=3, revenue=4990, conversion=1 / 3),
        by_adviser=[Slice("@eve:x", "=HYPERLINK(1)", Metrics(conversations=1))],
        heatmap=[[(1, 0)] * 24 for _ in range(7)],
    )
    totals = list(csv.DictReader(io.StringIO(report_csv(report, "totals"))))
    assert totals[0]["revenue"] == "4990" and totals[0]["since"] == "2026-11-01"
    assert float(totals[0]["conversion"]) == pytest.approx(1 / 3)
    assert totals[0]["first_response_median"] == ""
    advisers = list(csv.DictReader(io.StringIO(report_csv(report, "by_adviser"))))
    assert advisers[0]["label"] == "'=HYPERLINK(1)"
    heat = list(csv.DictReader(io.StringIO(report_csv(report, "heatmap"))))
    assert len(heat) == 7 * 24 and heat[0] == {
        "weekday": "Mon",
        "hour": "0",
        "incoming": "1",
        "missed": "0",
    }
    with pytest.raises(KeyError):
        report_csv(report, "passwords")


# -- hub dashboard hash-password -----------------------------------------------------------


def test_hash_password_command_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.__main__ import main

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(["dashboard", "hash-password", "--stdin"]) == 0
    out, err = capsys.readouterr()
    hashed = out.strip()
    assert argon2.PasswordHasher().verify(hashed, "correct horse battery")  # no newline in it
    assert "dashboard.admins" in err

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["dashboard", "hash-password", "--stdin"]) == 2
    assert capsys.readouterr().out == ""


def test_hash_password_command_asks_twice_without_echo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from hub.__main__ import main

    answers = iter(["correct horse battery", "correct horse batterY"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert main(["dashboard", "hash-password"]) == 2
    assert capsys.readouterr().out == ""  # two different passwords: nothing printed

    answers = iter(["correct horse battery"] * 2)
    assert main(["dashboard", "hash-password"]) == 0
    assert argon2.PasswordHasher().verify(capsys.readouterr().out.strip(), "correct horse battery")
