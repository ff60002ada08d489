"""Database fixtures: every test using `db` (or `engine`/`sessions`, a plain ORM view of the
same database for checking what the hub wrote) runs on SQLite and on PostgreSQL.

One throwaway PostgreSQL server per test session (`pg_server` of tests/conftest.py, shared
with the end-to-end hubs); each test gets a fresh database created from it. A test module
that only needs SQLite overrides `backend`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.db.database import Database
from hub.db.engine import migrate, open_database
from tests.pg import PostgresServer

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = await server.create_database()
    try:
        yield server.url(name)
    finally:
        await server.drop_database(name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = open_database(db_url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.close()


@pytest.fixture
def engine(db: Database) -> AsyncEngine:
    return db.engine


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Plain ORM sessions for tests to look at (and set up) rows; the hub itself goes
    through `db` only."""
    return async_sessionmaker(engine, expire_on_commit=False)
