"""Opening the database (the async engine and its Database) and schema migrations (Alembic)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hub.db.database import Database
from hub.db.locks import one_at_a_time
from hub.db.sqlite import sqlite_begin, sqlite_pragmas
from hub.errors import StartupError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(url: str, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = make_url(url).database  # decoded: "my%3Ashop" in a URL is the folder my:shop
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", sqlite_begin)
        return engine
    return create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)


def open_database(url: str, echo: bool = False) -> Database:
    """The Database of a URL (hub.db.database): the one way to it."""
    return Database(create_engine(url, echo=echo))


# -- migrations ------------------------------------------------------------------------------

_REVISION = re.compile(r"^(down_)?revision\s*=\s*(?:['\"]([^'\"]+)['\"]|None)", re.MULTILINE)


def head_revision() -> str | None:
    """The head of hub/db/migrations read from the scripts' text (no Alembic import); None
    when it is not one clear head (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {bool(m.group(1)): m.group(2) for m in _REVISION.finditer(script.read_text())}
        if not found.get(False):
            return None
        revisions.add(found[False])
        if found.get(True):
            parents.add(found[True])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> tuple[str | None, str]:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    assert head is not None
    # Hub processes started together (several on one database) migrate one after the
    # other; the next one finds the schema at head.
    one_at_a_time(connection, "migrate")
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        from sqlalchemy import inspect

        foreign = sorted(set(inspect(connection).get_table_names()) - {"alembic_version"})
        if foreign:
            # Not the hub's (no revision of ours) and not empty: migrating would mix our
            # tables into another program's database.
            shown = ", ".join(foreign[:5]) + (", …" if len(foreign) > 5 else "")
            raise StartupError(
                f"the database holds tables that are not the hub's ({shown}): point "
                "database.url at an empty database or at the hub's own."
            )
    else:
        try:
            script.get_revision(current)
        except Exception:
            raise StartupError(
                f"the database schema is at revision {current}, which this hub does not know: "
                "it was written by a newer hub (or another program). Upgrade the hub, or point "
                "database.url at the right database."
            ) from None
    if current != head:
        command.upgrade(_alembic_config(connection), "head")
    return current, head


async def schema_at_head(engine: AsyncEngine) -> bool:
    """The schema is at this hub's head already: one query, no Alembic import (≈11 MiB)."""
    head = head_revision()
    if head is None:
        return False
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:
        return False  # no alembic_version table yet: a fresh database
    return [r[0] for r in rows] == [head]


async def upgrade(db: Database) -> tuple[str | None, str]:
    """Alembic's upgrade to head in this process -> (revision before, head)."""
    async with db.writing(), db.engine.begin() as conn:
        return await conn.run_sync(_upgrade)


async def migrate(db: Database, *, in_child: bool = False) -> None:
    """Bring the schema to this hub's head revision; refuse a newer or foreign schema.
    `in_child`: run Alembic in a child process (the long-running hub: see
    hub.db.migrate_process), except for an in-memory database no other process can see."""
    engine = db.engine
    if await schema_at_head(engine):
        return
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    if in_child and not in_memory:
        from hub.db.migrate_process import migrate_in_child

        before, head = await migrate_in_child(engine)
    else:
        before, head = await upgrade(db)
    if before != head:
        log.info("database migrated from %s to %s", before or "empty", head)
