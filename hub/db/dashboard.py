"""The admin dashboard's logins (table dashboard_sessions), as units of work: every hub
process on the database knows a login made on any of them (hub.http.dashboard_auth decides
what a session is and when it ends; these only keep the rows).

A session's `key` is the SHA-256 of its token (hub.http.dashboard_auth.session_key): the
token in the admin's cookie never reaches the database.

`last_seen_at` is not written on every request: that would be one write per page view and
per CSV for what is a read (on SQLite a turn of the one writer). The caller touches it only
when it is a minute old or more (dashboard_auth.TOUCH_EVERY), so a session may end up to a
minute before `session_minutes` after its very last request; nobody notices a minute of a
12-hour login.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.sql import Executable

from hub.db.models import DashboardSession, table
from hub.db.statements import run, statement

if TYPE_CHECKING:
    from hub.db.database import Tx

DS = table(DashboardSession)


@statement
def _session(dialect: str) -> Executable:
    return select(DS.c.username, DS.c.csrf, DS.c.last_seen_at).where(DS.c.id == bindparam("key"))


@statement(insert=True)
def _insert(dialect: str) -> Executable:
    return DS.insert()


@statement
def _touch(dialect: str) -> Executable:
    # Never back in time (another process may have touched it a moment later).
    return (
        DS.update()
        .where(DS.c.id == bindparam("key"), DS.c.last_seen_at < bindparam("now"))
        .values(last_seen_at=bindparam("now"))
    )


@statement
def _drop(dialect: str) -> Executable:
    return DS.delete().where(DS.c.id == bindparam("key"))


@statement
def _drop_expired(dialect: str) -> Executable:
    return DS.delete().where(DS.c.id == bindparam("key"), DS.c.last_seen_at < bindparam("cutoff"))


@statement
def _purge(dialect: str) -> Executable:
    return DS.delete().where(DS.c.last_seen_at < bindparam("cutoff"))


def _beyond(keep: Any, *where: Any) -> Executable:
    """Delete the sessions matching `where`, but the `keep` most recently used; the one just
    made (`key`) is never among those deleted."""
    oldest = (
        select(DS.c.id)
        .where(DS.c.id != bindparam("key"), *where)
        .order_by(DS.c.last_seen_at.desc(), DS.c.created_at.desc())
        .offset(keep)
    )
    return DS.delete().where(DS.c.id.in_(oldest))


@statement
def _cap_user(dialect: str) -> Executable:
    return _beyond(bindparam("keep"), DS.c.username == bindparam("username"))


@statement
def _cap_all(dialect: str) -> Executable:
    return _beyond(bindparam("keep"))


@statement
def _count(dialect: str) -> Executable:
    return select(func.count()).select_from(DS)


# -- units of work ----------------------------------------------------------------------------


def create_session(
    tx: Tx,
    key: str,
    username: str,
    csrf: str,
    now: datetime,
    *,
    cutoff: datetime,
    max_per_user: int,
    max_total: int,
) -> None:
    """A new login; the expired ones (last seen before `cutoff`) go, and the least recently
    used beyond `max_per_user` of this user and `max_total` of all. Several processes logging
    in at once may each keep one over a cap for a moment: the next login takes it back."""
    purge_sessions(tx, cutoff)
    run(
        tx,
        _insert,
        {"id": key, "username": username, "csrf": csrf, "created_at": now, "last_seen_at": now},
    )
    run(tx, _cap_user, {"key": key, "username": username, "keep": max_per_user - 1})
    run(tx, _cap_all, {"key": key, "keep": max_total - 1})


def session(tx: Tx, key: str) -> tuple[str, str, datetime] | None:
    """(username, csrf token, last seen) of the session with this key; None if there is none."""
    row = run(tx, _session, {"key": key}).first()
    return (row[0], row[1], row[2]) if row is not None else None


def touch_session(tx: Tx, key: str, now: datetime) -> None:
    run(tx, _touch, {"key": key, "now": now})


def drop_session(tx: Tx, key: str, *, cutoff: datetime | None = None) -> None:
    """End a session (a logout); with `cutoff`, only if it was last seen before then (an
    expired one: another process may have seen it since)."""
    if cutoff is None:
        run(tx, _drop, {"key": key})
    else:
        run(tx, _drop_expired, {"key": key, "cutoff": cutoff})


def purge_sessions(tx: Tx, cutoff: datetime) -> int:
    """Delete the sessions last seen before `cutoff`; how many."""
    return run(tx, _purge, {"cutoff": cutoff}).rowcount


def count_sessions(tx: Tx) -> int:
    return int(run(tx, _count).scalar())
