"""The dashboard's logins in the database (hub.http.dashboard_auth.Sessions over hub.db.dashboard),
on SQLite and PostgreSQL: a login lasts `session_minutes` after its last use, its last use is
written at most once a minute, a logout ends it, the oldest go beyond the caps, the token is
kept as its SHA-256 only; and two dashboards on one database (two hub processes behind one
proxy) accept each other's logins and logouts."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.db import dashboard as stored
from hub.db.database import Database
from hub.db.engine import open_database
from hub.http.dashboard_auth import TOUCH_EVERY, Session, Sessions, session_key
from tests.integration.test_dashboard import (
    ANNA_HASH,
    FakeClock,
    dashboard_config,
    log_in,
    make_dashboard,
    serve,
)

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, object]]:
    async with sessions() as s:
        result = await s.execute(text("SELECT * FROM dashboard_sessions"))
        return [dict(r._mapping) for r in result]


async def alive(store: Sessions, session: Session, now: datetime) -> bool:
    found = await store.get(session.id, now)
    if found is not None:
        assert (found.username, found.csrf) == (session.username, session.csrf)
    return found is not None


# -- the store -------------------------------------------------------------------------------


async def test_a_session_expires_after_inactivity_and_slides(db: Database) -> None:
    store = Sessions(db, minutes=10)
    s = await store.create("anna", at())
    assert len(s.id) == 43 and len(s.csrf) == 43 and s.csrf != s.id
    assert await alive(store, s, at(9))  # used: the clock restarts
    assert await alive(store, s, at(18))  # 9 minutes after the last use
    assert not await alive(store, s, at(28, 1))  # 10 minutes and 1 s idle
    assert await store.count() == 0  # gone for good, from the table too
    assert not await alive(store, s, at(28, 2))


async def test_last_use_is_written_at_most_once_a_minute(db: Database) -> None:
    store = Sessions(db, minutes=10)
    s = await store.create("anna", at())
    key = session_key(s.id)

    async def last_seen() -> datetime:
        found = await db.read(stored.session, key)
        assert found is not None
        return found[2]

    assert await alive(store, s, at(seconds=59))
    assert await last_seen() == at()  # a read, no write
    assert await alive(store, s, at(seconds=60))
    assert await last_seen() == at(seconds=60)
    assert TOUCH_EVERY == timedelta(minutes=1)
    # Measured from the last use written: gone 10 minutes after it, though used 59 s later.
    assert await alive(store, s, at(1, 59))
    assert not await alive(store, s, at(11, 1))


async def test_new_tokens_and_logout(db: Database) -> None:
    store = Sessions(db, minutes=10)
    a, b = await store.create("anna", at()), await store.create("anna", at())
    assert a.id != b.id and a.csrf != b.csrf
    await store.drop(a.id)
    assert not await alive(store, a, at(1))
    assert await alive(store, b, at(1))
    assert await store.get(None, at(1)) is None
    assert await store.get("", at(1)) is None
    assert await store.get("made-up", at(1)) is None
    assert await store.get("x" * 43, at(1)) is None
    assert await store.get(a.csrf, at(1)) is None  # the form's token is not a login
    await store.drop("made-up")  # nothing to drop: no error


async def test_the_token_is_kept_as_its_hash_only(
    db: Database, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = Sessions(db, minutes=10)
    made = [await store.create(name, at()) for name in ("anna", "ben")]
    stored_rows = await rows(sessions)
    assert {r["id"] for r in stored_rows} == {
        hashlib.sha256(s.id.encode()).hexdigest() for s in made
    }
    dump = repr(stored_rows)
    for s in made:
        assert s.id not in dump
    by_user = {r["username"]: r for r in stored_rows}
    assert by_user["anna"]["csrf"] == made[0].csrf  # sent in every form: no secret at rest


async def test_a_login_deletes_the_expired_ones(db: Database) -> None:
    store = Sessions(db, minutes=10)
    old = await store.create("anna", at())
    kept = await store.create("ben", at(5))
    await store.create("cleo", at(10, 30))  # anna's is 10.5 minutes idle: deleted
    assert await store.count() == 2
    assert not await alive(store, old, at(10, 31))
    assert await alive(store, kept, at(10, 31))
    assert await store.purge(at(30)) == 2
    assert await store.count() == 0


async def test_logins_are_capped_per_user_and_in_all(db: Database) -> None:
    store = Sessions(db, minutes=60, max_sessions=4, max_per_user=3)
    anna = [await store.create("anna", at(i)) for i in range(5)]
    assert await store.count() == 3
    assert [await alive(store, s, at(5)) for s in anna] == [False, False, True, True, True]
    # anna's first three went when her fourth and fifth came; then the oldest of all.
    ben = [await store.create("ben", at(6 + i)) for i in range(2)]
    assert await store.count() == 4
    assert [await alive(store, s, at(8)) for s in anna] == [False, False, False, True, True]
    assert all([await alive(store, s, at(8)) for s in ben])


async def test_the_least_recently_used_goes_first(db: Database) -> None:
    store = Sessions(db, minutes=60, max_per_user=2)
    first = await store.create("anna", at(0))
    second = await store.create("anna", at(1))
    assert await alive(store, first, at(2))  # used again: now the more recent one
    third = await store.create("anna", at(3))
    assert [await alive(store, s, at(4)) for s in (first, second, third)] == [True, False, True]


# -- two processes ---------------------------------------------------------------------------


@pytest.fixture
async def other_db(backend: str, db: Database, db_url: str) -> AsyncIterator[Database]:
    """The database as a second hub process sees it: its own engine on PostgreSQL. On
    SQLite one process owns the file, so the second dashboard shares the first's."""
    if backend == "sqlite":
        yield db
        return
    second = open_database(db_url)
    try:
        yield second
    finally:
        await second.close()


def session_cookie(client: TestClient[web.Request, web.Application]) -> str:
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/dashboard"))
    return jar["hub-dashboard"].value


async def test_a_login_on_one_process_is_known_to_another(db: Database, other_db: Database) -> None:
    clock = FakeClock()
    first = await serve(make_dashboard(dashboard_config(), clock, [], db))
    second = await serve(make_dashboard(dashboard_config(), clock, [], other_db))
    try:
        login = await log_in(first)
        assert login.status == 303
        # The proxy sends the browser's cookie to whichever process it picks.
        cookie = {"Cookie": f"hub-dashboard={session_cookie(first)}"}
        on_second = await second.get("/dashboard", headers=cookie, allow_redirects=False)
        assert on_second.status == 200
        html = await on_second.text()
        assert "Signed in as anna" in html
        export = await second.get("/dashboard/export/totals.csv", headers=cookie)
        assert export.status == 200 and export.content_type == "text/csv"

        # Signing out on the second ends the login on the first too.
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        assert csrf is not None
        logout = await second.post(
            "/dashboard/logout",
            data={"csrf": csrf.group(1)},
            headers=cookie,
            allow_redirects=False,
        )
        assert logout.status == 303
        assert logout.headers["Location"] == "/dashboard/login?signed_out"
        again = await first.get("/dashboard", allow_redirects=False)
        assert again.status == 302 and again.headers["Location"] == "/dashboard/login"
    finally:
        await first.close()
        await second.close()


async def test_a_login_lives_on_while_used_on_either_process(
    db: Database, other_db: Database
) -> None:
    """Requests alternating between the processes keep the login alive (each one's use
    counts for both); idle beyond session_minutes it ends on both."""
    clock = FakeClock()
    first = await serve(make_dashboard(dashboard_config(), clock, [], db))
    second = await serve(make_dashboard(dashboard_config(), clock, [], other_db))
    try:
        login = await log_in(first)
        assert login.status == 303
        cookie = {"Cookie": f"hub-dashboard={session_cookie(first)}"}
        for client in (second, first, second):
            clock.now += 20 * 60  # session_minutes is 30
            response = await client.get("/dashboard", headers=cookie, allow_redirects=False)
            assert response.status == 200
        clock.now += 30 * 60 + 1
        for client in (first, second):
            response = await client.get("/dashboard", headers=cookie, allow_redirects=False)
            assert response.status == 302
    finally:
        await first.close()
        await second.close()


async def test_an_admin_taken_out_of_the_config_is_signed_out(
    db: Database, other_db: Database
) -> None:
    """Logins outlive restarts: one of an admin no longer in dashboard.admins ends."""
    clock = FakeClock()
    before = await serve(make_dashboard(dashboard_config(), clock, [], db))
    try:
        login = await log_in(before)
        assert login.status == 303
        cookie = {"Cookie": f"hub-dashboard={session_cookie(before)}"}
    finally:
        await before.close()
    others = dashboard_config(admins=[{"username": "ben", "password_hash": ANNA_HASH}])
    after = await serve(make_dashboard(others, clock, [], other_db))
    try:
        page_after = await after.get("/dashboard", headers=cookie, allow_redirects=False)
        assert page_after.status == 302
        assert await stored_count(db) == 0
    finally:
        await after.close()


async def stored_count(db: Database) -> int:
    return await db.read(stored.count_sessions)
