"""Async engine creation, session factories and schema migrations (Alembic) run at start."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hub.db.database import READ_OPTION, Database, sqlite_begin, sqlite_pragmas
from hub.errors import StartupError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(url: str, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = make_url(url).database  # decoded: "my%3Ashop" in a URL is the folder my:shop
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", sqlite_begin)
        return engine
    return create_async_engine(url, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True)


def database(engine: AsyncEngine) -> Database:
    """The engine's hot-path runner and SQLite writer lock (one per engine)."""
    sync = engine.sync_engine
    db: Database | None = getattr(sync, "hub_database", None)
    if db is None:
        db = Database(engine)
        sync.hub_database = db  # type: ignore[attr-defined]
    return db


class HubSessions(async_sessionmaker[AsyncSession]):
    """`sessions()` opens a read session (deferred BEGIN on SQLite: it never waits for a
    writer); `sessions.begin()` a write transaction that holds the process's SQLite writer
    lock (FIFO) until it ends, shared with `Database.write`. `db` runs the hot path."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.db = database(engine)
        self._write_bind = engine
        read_bind = engine.execution_options(**{READ_OPTION: True}) if self.db.is_sqlite else engine
        super().__init__(read_bind, expire_on_commit=False)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:  # type: ignore[override]
        async with self.db.writing(), self(bind=self._write_bind) as s, s.begin():
            yield s


def session_factory(engine: AsyncEngine) -> HubSessions:
    return HubSessions(engine)


def database_of(sessions: async_sessionmaker[Any]) -> Database:
    """The hot-path runner behind a session factory (HubSessions, or any bound to an engine)."""
    if isinstance(sessions, HubSessions):
        return sessions.db
    bind = sessions.kw["bind"]
    return database(bind)


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
        revisions.add(found[False])  # type: ignore[arg-type]
        if found.get(True):
            parents.add(found[True])  # type: ignore[arg-type]
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
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None:
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


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Alembic's upgrade to head in this process -> (revision before, head)."""
    async with database(engine).writing(), engine.begin() as conn:
        return await conn.run_sync(_upgrade)


async def migrate(engine: AsyncEngine, *, in_child: bool = False) -> None:
    """Bring the schema to this hub's head revision; refuse a newer or foreign schema.
    `in_child`: run Alembic in a child process (the long-running hub: see
    hub.db.migrate_process), except for an in-memory database no other process can see."""
    if await schema_at_head(engine):
        return
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    if in_child and not in_memory:
        from hub.db.migrate_process import migrate_in_child

        before, head = await migrate_in_child(engine)
    else:
        before, head = await upgrade(engine)
    if before != head:
        log.info("database migrated from %s to %s", before or "empty", head)
